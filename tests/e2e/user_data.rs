//! user_data through the product, in real guests: a script that relies on a module the
//! VM asked for (it runs after the module is Loaded) succeeds; a failing one is Failed
//! with its exit code; a fork bomb does not stop the guest agent from serving the host.

use crate::support::{metric_value, wait_for, Plane};
use serde_json::{json, Value};

fn vm(p: &Plane, token: &str, id: &str) -> Value {
    p.get(token, &format!("/v1/vms/{id}")).expect(200).body
}

fn create(p: &Plane, token: &str, name: &str, modules: Value, script: &str) -> String {
    let body = json!({"name": name, "vcpus": 1, "memory_mib": 128, "modules": modules, "user_data": script});
    let v = p.post(token, "/v1/vms", &body).expect(201).body;
    assert_eq!(v["status"]["user_data"]["state"], "Pending", "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Waits until the VM's script has ended; its status.
fn ended(p: &Plane, token: &str, id: &str) -> Value {
    wait_for("user_data to end", 300, || {
        let v = vm(p, token, id);
        assert_ne!(v["status"]["phase"], "Failed", "{v}");
        let u = v["status"]["user_data"].clone();
        matches!(u["state"].as_str(), Some("Succeeded" | "Failed")).then_some(u)
    })
}

#[test]
fn user_data_runs_once_after_its_modules_and_reports_how_it_ended() {
    let (p, _cleanup) = Plane::with_node("userdata", 2_600_000, &[]);
    let a = p.token("tenant-a");
    let bbr = create(
        &p,
        &a,
        "bbr",
        json!([{"name": "tcp_bbr"}]),
        "sysctl -w net.ipv4.tcp_congestion_control=bbr && echo user-data-set-$(cat /proc/sys/net/ipv4/tcp_congestion_control)",
    );
    let fails = create(&p, &a, "fails", json!([]), "echo about to fail; exit 3");

    // It relied on tcp_bbr, asked for by the VM: it ran after the module was Loaded.
    let u = ended(&p, &a, &bbr);
    assert_eq!(
        (u["state"].clone(), u["exit_code"].clone()),
        (json!("Succeeded"), json!(0)),
        "{u}"
    );
    assert!(u["duration_ms"].as_u64().is_some(), "{u}");
    let tail = p.api(&a).console_tail(&bbr, 65536).unwrap();
    assert!(
        tail.contains("user-data-set-bbr"),
        "its output is on the console: {tail}"
    );

    let u = ended(&p, &a, &fails);
    assert_eq!(
        (u["state"].clone(), u["exit_code"].clone()),
        (json!("Failed"), json!(3)),
        "{u}"
    );

    // A power cycle does not run a script again, and the modules the VM asked for are in
    // the new boot's kernel again: while stopped, the request says it waits for a boot
    // and the guest lists nothing; running again, tcp_bbr is loaded again.
    let u = vm(&p, &a, &bbr)["status"]["user_data"].clone();
    let v = vm(&p, &a, &bbr);
    let requests = || {
        p.get(&a, &format!("/v1/vms/{bbr}/modules"))
            .expect(200)
            .body
    };
    let mut spec = v["spec"].clone();
    spec["power_state"] = json!("stopped");
    p.put(&a, &format!("/v1/vms/{bbr}"), &spec).expect(200);
    let stopped = wait_for(
        "stopped, its request Pending, nothing in its kernel",
        120,
        || {
            let (v, reqs) = (vm(&p, &a, &bbr), requests());
            (v["status"]["phase"] == "Stopped"
                && reqs[0]["state"] == "Pending"
                && v["status"]["guest_modules"] == json!([]))
            .then(|| json!([v, reqs]))
        },
    );
    assert!(
        stopped[1][0]["reason"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{stopped}"
    );
    // The CLI's --wait returns once it runs again.
    let out = p.cli_ok(
        "tenant-a",
        &[
            "vm",
            "power",
            "bbr",
            "running",
            "--wait",
            "--timeout",
            "240",
        ],
    );
    assert!(out.contains("Running"), "{out}");
    spec["power_state"] = json!("running");
    wait_for(
        "running again, with tcp_bbr loaded into the new boot",
        240,
        || {
            let (v, reqs) = (vm(&p, &a, &bbr), requests());
            assert_ne!(reqs[0]["state"], "Failed", "{reqs}");
            (v["status"]["phase"] == "Running"
                && reqs[0]["state"] == "Loaded"
                && v["status"]["guest_modules"]
                    .as_array()?
                    .contains(&json!("tcp_bbr")))
            .then_some(v)
        },
    );
    let in_guest = p.post(
        &a,
        &format!("/v1/vms/{bbr}/exec"),
        &json!({"argv": ["grep", "-c", "^tcp_bbr ", "/proc/modules"], "timeout_s": 30}),
    );
    assert_eq!(in_guest.expect(200).body["stdout"], "1\n");
    std::thread::sleep(std::time::Duration::from_secs(8));
    let after = vm(&p, &a, &bbr);
    assert_eq!(
        after["status"]["user_data"], u,
        "unchanged after a power cycle"
    );
    let tail = p.api(&a).console_tail(&bbr, 65536).unwrap();
    assert!(
        !tail.contains("user_data started"),
        "run again after the power cycle: {tail}"
    );

    // user_data is fixed at creation; oversized scripts are refused.
    spec["user_data"] = json!("echo changed");
    let r = p.put(&a, &format!("/v1/vms/{bbr}"), &spec);
    assert_eq!(r.status, 409, "{:?}", r.body);
    let big = json!({"name": "big", "vcpus": 1, "memory_mib": 128, "user_data": "x".repeat(32 * 1024 + 1)});
    let r = p.post(&a, "/v1/vms", &big);
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (400, json!("user_data"))
    );

    // The node has room for two such VMs (its host's CPUs): make room for the third.
    p.cli_ok(
        "tenant-a",
        &["vm", "delete", "bbr", "--wait", "--timeout", "120"],
    );
    p.get(&a, &format!("/v1/vms/{bbr}")).expect(404);
    let bomb = create(&p, &a, "bomb", json!([]), "f() { f | f & }; f");
    // The fork bomb runs (its tenant cgroup holds it); the agent still serves the host: a
    // module is vetted and loaded into that guest, and the guest's own list shows it.
    wait_for("the bomb's script Running", 240, || {
        let v = vm(&p, &a, &bomb);
        assert_ne!(v["status"]["phase"], "Failed", "{v}");
        (v["status"]["user_data"]["state"] == "Running").then_some(v)
    });
    // Through the CLI, by the VM's name: --wait returns once it is Loaded.
    let out = p.cli_ok(
        "tenant-a",
        &[
            "module",
            "request",
            "bomb",
            "tcp_bbr",
            "--wait",
            "--timeout",
            "240",
        ],
    );
    assert!(out.contains("Loaded"), "{out}");
    wait_for("the guest's own list to show it", 120, || {
        let v = vm(&p, &a, &bomb);
        let listed = v["status"]["guest_modules"]
            .as_array()?
            .iter()
            .any(|m| m == "tcp_bbr");
        listed.then_some(v)
    });
    // describe: the VM, its request and why, the guest's modules, its events.
    let d = p.cli_ok("tenant-a", &["vm", "describe", "bomb"]);
    let words: Vec<Vec<&str>> = d.lines().map(|l| l.split_whitespace().collect()).collect();
    for want in [
        &["Name:", "bomb"][..],
        &["Phase:", "Running"],
        &["Guest", "modules:", "tcp_bbr"],
        &["Module", "requests:"],
        &["tcp_bbr", "Loaded", "-"],
    ] {
        assert!(words.iter().any(|l| l == want), "no {want:?} in:\n{d}");
    }
    for action in ["vm.create", "module.request"] {
        assert!(
            words.iter().any(|l| l.contains(&action)),
            "no {action} in:\n{d}"
        );
    }
    // The metrics saw the placements, the loads and the node.
    let m = p.get_text(&p.token("admin"), "/metrics");
    let at_least_one = |name: &str, labels: &[(&str, &str)]| {
        assert!(
            metric_value(&m, name, labels).is_some_and(|n| n >= 1.0),
            "{name} {labels:?}: {m}"
        )
    };
    at_least_one(
        "modvisor_module_requests_total",
        &[("outcome", "loaded"), ("reason", "none")],
    );
    at_least_one("modvisor_module_load_duration_seconds_count", &[]);
    at_least_one(
        "modvisor_scheduler_placements_total",
        &[("result", "placed")],
    );
    at_least_one("modvisor_vm_pending_seconds_count", &[]);
    assert!(
        metric_value(
            &m,
            "modvisor_node_heartbeat_age_seconds",
            &[("node", "node-1")]
        )
        .is_some_and(|age| age < 30.0),
        "{m}"
    );
    // The node agent's own metrics, through the control plane (admin or metrics tokens).
    let n = p.get_text(&p.token("admin"), "/v1/nodes/node-1/metrics");
    let node_at_least_one = |name: &str, labels: &[(&str, &str)]| {
        assert!(
            metric_value(&n, name, labels).is_some_and(|v| v >= 1.0),
            "{name} {labels:?}: {n}"
        )
    };
    node_at_least_one("modvisor_node_vms", &[("phase", "Running")]);
    node_at_least_one("modvisor_node_module_loads_total", &[("outcome", "loaded")]);
    node_at_least_one("modvisor_node_module_load_duration_seconds_count", &[]);
    node_at_least_one("modvisor_node_heartbeats_total", &[("result", "ok")]);
    assert!(
        n.contains("# TYPE modvisor_node_guest_channel_errors_total counter"),
        "{n}"
    );
    p.get(&p.token("tenant-a"), "/v1/nodes/node-1/metrics")
        .expect(403);
    p.get(&p.token("admin"), "/v1/nodes/no-such-node/metrics")
        .expect(404);
    let y = p.cli_ok("tenant-a", &["vm", "describe", "bomb", "-o", "yaml"]);
    assert!(
        y.contains("module_requests:") && y.contains("state: Loaded"),
        "{y}"
    );
}
