//! A node agent killed (-9) and started again takes its running guests back: the same
//! hypervisor processes, the guest agents still bound to their boot's keys (kept beside
//! the jails), so exec and the console go on working.

use crate::agents::NodeAgent;
use crate::host::{processes_mentioning, HostCleanup};
use crate::support::{wait_for, Plane};
use serde_json::json;

#[test]
fn a_restarted_node_agent_keeps_its_guests_and_their_channels() {
    let p = Plane::start();
    let root = p.dir.path().join("agents");
    let parent = format!("modvisor-e2e-readopt-{}", std::process::id());
    let _cleanup = HostCleanup {
        dir: root.clone(),
        cgroup_parent: parent.clone(),
    };
    let mut agent = NodeAgent::start("node-1", 2_700_000, &parent, &p, &root);
    let a = p.token("tenant-a");
    let id = p.create_vm(&a, "kept");
    p.wait_running(&a, &id);
    let exec = |script: &str| {
        p.post(
            &a,
            &format!("/v1/vms/{id}/exec"),
            &json!({"argv": ["sh", "-c", script]}),
        )
        .expect(200)
        .body
    };
    let before = exec("cat /proc/sys/kernel/random/boot_id");
    assert_eq!(before["exit_code"], 0, "{before}");
    let qemu = |id: &str| -> Vec<i32> {
        processes_mentioning(&format!("modvisor-{id}"))
            .iter()
            .filter(|p| p.cmdline.contains("qemu"))
            .map(|p| p.pid)
            .collect()
    };
    let pids = qemu(&id);
    assert_eq!(pids.len(), 1, "{pids:?}");

    agent.kill9();
    agent.spawn(&p);
    // The same guest (same QEMU, same boot) answers sealed requests of the new agent.
    let after = wait_for("exec through the restarted agent", 120, || {
        let r = p.post(
            &a,
            &format!("/v1/vms/{id}/exec"),
            &json!({"argv": ["cat", "/proc/sys/kernel/random/boot_id"]}),
        );
        (r.status == 200).then_some(r.body)
    });
    assert_eq!(after["stdout"], before["stdout"], "the same boot: {after}");
    assert_eq!(qemu(&id), pids, "the same hypervisor process");
    let tail = p.api(&a).console_tail(&id, 4096).unwrap();
    assert!(tail.contains("modvisor-guest-agent"), "{tail}");
    let vm = p.get(&a, &format!("/v1/vms/{id}")).expect(200).body;
    assert_eq!(vm["status"]["phase"], "Running", "{vm}");
    // Its network too: the tap (held by the same QEMU) is still on its bridge, the
    // restarted agent put its guard back, and the guest keeps its address.
    let tap = modvisor_node_agent::network::names::tap(&id);
    let netns = agent.netns();
    let guards = std::process::Command::new("ip")
        .args([
            "netns", "exec", &netns, "nft", "list", "map", "bridge", "modvisor", "guards",
        ])
        .output()
        .unwrap();
    let guards = String::from_utf8_lossy(&guards.stdout);
    assert!(guards.contains(&tap), "{tap} not guarded: {guards}");
    let link = std::process::Command::new("ip")
        .args(["-n", &netns, "-o", "link", "show", &tap])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("master mvbr"),
        "{link:?}"
    );
    let ip = vm["status"]["network"]["ip"].as_str().unwrap();
    let shown = p
        .post(
            &a,
            &format!("/v1/vms/{id}/exec"),
            &json!({"argv": ["ip", "-o", "-4", "addr", "show"]}),
        )
        .expect(200)
        .body;
    assert!(
        shown["stdout"]
            .as_str()
            .unwrap()
            .contains(&format!("{ip}/")),
        "{shown}"
    );
}
