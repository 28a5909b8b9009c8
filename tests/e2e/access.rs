//! Tenant access through the product: `POST /v1/vms/{id}/exec` and `modvisor vm exec`
//! against a real guest (QEMU, Debian's kernel, busybox), and the allow-list holding
//! against tenant root: what it pushes into its guest and tries to load is refused there,
//! what it asks for through the API is vetted as ever.

use crate::support::{modvisor, real_module, wait_for, Plane};
use base64::Engine;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn exec(p: &Plane, token: &str, id: &str, body: Value) -> Value {
    p.post(token, &format!("/v1/vms/{id}/exec"), &body)
        .expect(200)
        .body
}

fn sh(p: &Plane, token: &str, id: &str, script: &str) -> Value {
    exec(p, token, id, json!({"argv": ["sh", "-c", script]}))
}

/// Writes `bytes` to `path` in the guest (base64 through stdin, which takes text).
fn push(p: &Plane, token: &str, id: &str, path: &str, bytes: &[u8]) {
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let r = exec(
        p,
        token,
        id,
        json!({"argv": ["sh", "-c", format!("base64 -d > {path} && chmod +x {path}")], "stdin": text}),
    );
    assert_eq!(r["exit_code"], 0, "{r}");
}

#[test]
fn a_tenant_runs_commands_in_its_vm_and_its_root_cannot_load_modules() {
    let (p, _cleanup) = Plane::with_node("access", 2_400_000, &[]);
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));
    let id = p.create_vm(&a, "shell");
    let release = wait_for("node-1 registered", 120, || {
        let nodes = p.get(&admin, "/v1/nodes").expect(200).body;
        nodes[0]["kernel_release"].as_str().map(|r| json!(r))
    });
    p.wait_running(&a, &id);

    // The guest's own kernel, as tenant root, with a busybox userland.
    let r = sh(&p, &a, &id, "uname -r; id -u");
    assert_eq!(
        r["stdout"],
        format!("{}\n0\n", release.as_str().unwrap()),
        "{r}"
    );
    assert_eq!(
        (r["exit_code"].clone(), r["signal"].clone()),
        (json!(0), Value::Null)
    );

    // stdin, env, exit codes and stderr.
    let r = exec(
        &p,
        &a,
        &id,
        json!({"argv": ["sh", "-c", "cat; echo \"$GREETING\" >&2; exit 3"], "stdin": "in", "env": {"GREETING": "hi"}}),
    );
    assert_eq!(
        (
            r["exit_code"].clone(),
            r["stdout"].clone(),
            r["stderr"].clone()
        ),
        (json!(3), json!("in"), json!("hi\n")),
        "{r}"
    );

    // The agent's channel is its virtio-serial port, held open by the agent: tenant root
    // can find it and make a node for it, but not open it.
    let r = sh(
        &p,
        &a,
        &id,
        "for d in /sys/class/virtio-ports/*; do \
           [ \"$(cat $d/name)\" = org.modvisor.agent ] && dev=$(cat $d/dev); done; \
         [ -n \"$dev\" ] || { echo no-port; exit 1; }; \
         mknod /tmp/agent-port c ${dev%:*} ${dev#*:} && \
         if echo x > /tmp/agent-port; then echo opened; fi",
    );
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["stdout"], "", "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("busy"),
        "the port is the agent's: {r}"
    );

    // Output over 1 MiB is cut and says so.
    let r = sh(&p, &a, &id, "head -c 1200000 /dev/zero | tr '\\0' x");
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(r["truncated"], true, "{}", r["stderr"]);

    // A command past its timeout is killed (with what it started) and reported.
    let started = Instant::now();
    let r = exec(
        &p,
        &a,
        &id,
        json!({"argv": ["sh", "-c", "sleep 60 & sleep 60"], "timeout_s": 2}),
    );
    assert_eq!(
        (
            r["timed_out"].clone(),
            r["signal"].clone(),
            r["exit_code"].clone()
        ),
        (json!(true), json!(9), Value::Null),
        "{r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // Another tenant: 404 (not 403); the admin is not a tenant of the VM: 403; bad bodies.
    let other = p.post(
        &b,
        &format!("/v1/vms/{id}/exec"),
        &json!({"argv": ["true"]}),
    );
    assert_eq!((other.status, other.problem_slug()), (404, "not-found"));
    p.post(
        &admin,
        &format!("/v1/vms/{id}/exec"),
        &json!({"argv": ["true"]}),
    )
    .expect(403);
    for bad in [
        json!({"argv": []}),
        json!({"argv": ["true"], "timeout_s": 0}),
        json!({"argv": ["true"], "timeout_s": 601}),
        json!({"argv": ["true"], "env": {"1X": "y"}}),
        json!({"argv": ["true"], "stdin": "x".repeat(48 * 1024 + 1)}),
        json!({"argv": ["true"], "surprise": 1}),
    ] {
        let r = p.post(&a, &format!("/v1/vms/{id}/exec"), &bad);
        assert!(matches!(r.status, 400 | 413), "{bad}: {}", r.status);
    }

    // Tenant root's capabilities: no CAP_SYS_MODULE (16), CAP_SYS_PTRACE (19), CAP_BPF (39).
    let r = sh(&p, &a, &id, "grep CapBnd /proc/self/status");
    let bnd = u64::from_str_radix(
        r["stdout"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    for bit in [16, 19, 39] {
        assert_eq!(bnd & (1 << bit), 0, "bit {bit} in {r}");
    }

    // A Debian-signed module not approved for A, pushed in by tenant root: insmod and
    // finit_module are refused (EPERM), and asking for it through the API is 403.
    let dir = tempfile::tempdir().unwrap();
    push(&p, &a, &id, "/tmp/m.ko", &real_module("xt_pkttype"));
    push(
        &p,
        &a,
        &id,
        "/tmp/tenant_probe",
        &crate::probe::tenant_probe(dir.path()),
    );
    let r = sh(&p, &a, &id, "insmod /tmp/m.ko");
    assert_ne!(r["exit_code"], 0);
    assert!(
        r["stderr"].as_str().unwrap().contains("not permitted"),
        "{r}"
    );
    let r = sh(&p, &a, &id, "/tmp/tenant_probe finit /tmp/m.ko");
    assert_eq!(r["stdout"], "finit -1\n", "{r}");
    let r = sh(&p, &a, &id, "grep -c xt_pkttype /proc/modules");
    assert_eq!(r["stdout"], "0\n", "{r}");
    let refused = p.post(
        &a,
        &format!("/v1/vms/{id}/modules"),
        &json!({"name": "xt_pkttype"}),
    );
    assert_eq!(refused.status, 403, "{:?}", refused.body);

    // An approved module through the API is loaded, and tenant root can use it.
    p.post(
        &a,
        &format!("/v1/vms/{id}/modules"),
        &json!({"name": "tcp_bbr"}),
    )
    .expect(202);
    wait_for("tcp_bbr Loaded", 240, || {
        let reqs = p.get(&a, &format!("/v1/vms/{id}/modules")).expect(200).body;
        let r = reqs
            .as_array()?
            .iter()
            .find(|r| r["name"] == "tcp_bbr")?
            .clone();
        assert_ne!(r["state"], "Rejected", "{r}");
        assert_ne!(r["state"], "Failed", "{r}");
        (r["state"] == "Loaded").then_some(r)
    });
    let r = sh(&p, &a, &id, "sysctl -w net.ipv4.tcp_congestion_control=bbr");
    assert_eq!(r["exit_code"], 0, "{r}");

    // The CLI, by VM name: the command's output and exit code.
    let cli = |args: &[&str]| {
        modvisor()
            .args(["vm", "exec", "shell", "--"])
            .args(args)
            .env("MODVISOR_API", &p.base)
            .env("MODVISOR_TOKEN_FILE", p.token_file("tenant-a"))
            .output()
            .unwrap()
    };
    let out = cli(&["uname", "-r"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", release.as_str().unwrap())
    );
    let out = cli(&["sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    // Every exec is in the tenant's audit trail: who, what, how it ended.
    let events = p.get(&a, "/v1/events?limit=500").expect(200).body;
    let execs: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "vm.exec")
        .collect();
    assert!(execs.len() >= 10, "{execs:?}");
    assert!(execs.iter().any(|e| e["detail"]
        .as_str()
        .unwrap_or("")
        .contains("timed out true")));
    assert!(execs
        .iter()
        .all(|e| e["actor"] == "tenant-a" && e["resource"] == format!("vms/{id}")));
}
