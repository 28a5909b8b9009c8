//! How `modvisor up` ends: Ctrl-C (SIGINT) stops the guests it started, within a bound;
//! with `--keep-vms` it leaves them running, and the next `up` on the same data directory
//! adopts them (the same process, the same boot) rather than booting them again.

use crate::host::processes_mentioning;
use crate::support::{wait_for, Plane};
use serde_json::{json, Value};
use std::time::Duration;

/// The QEMU processes of VM `id`.
fn qemu_of(id: &str) -> Vec<i32> {
    processes_mentioning(&format!("modvisor-{id}"))
        .iter()
        .filter(|p| p.cmdline.contains("qemu"))
        .map(|p| p.pid)
        .collect()
}

/// The guest kernel's boot id, once the VM answers exec (after a restart its node
/// registers again first).
fn boot_id(p: &Plane, token: &str, id: &str) -> Value {
    wait_for("the guest's boot id", 120, || {
        let r = p.post(
            token,
            &format!("/v1/vms/{id}/exec"),
            &json!({"argv": ["cat", "/proc/sys/kernel/random/boot_id"], "timeout_s": 30}),
        );
        (r.status == 200 && r.body["exit_code"] == 0).then(|| r.body["stdout"].clone())
    })
}

#[test]
fn ctrl_c_stops_ups_guests_unless_kept_and_a_kept_guest_is_adopted() {
    let (mut p, _cleanup) = Plane::with_node("upstop", 2_800_000, &["--keep-vms"]);
    // `up` says it is up only once its node agent is: by then /readyz answers 200 and the
    // node is Ready.
    p.wait_stdout_line("modvisor is up", 120);
    let ready = p.call(reqwest::Method::GET, None, "/readyz", None, &[]);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body, json!({"ready": true, "waiting_for": []}));
    let node = p
        .get(&p.token("admin"), "/v1/nodes/node-1")
        .expect(200)
        .body;
    assert_eq!(node["state"], "Ready", "{node}");
    let a = p.token("tenant-a");
    let id = p.create_vm(&a, "kept");
    p.wait_running(&a, &id);
    let before = boot_id(&p, &a, &id);
    let pids = qemu_of(&id);
    assert_eq!(pids.len(), 1, "{pids:?}");

    // --keep-vms: the guest outlives `up`, also for more than a few seconds...
    let status = p.interrupt(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(qemu_of(&id), pids, "the kept guest runs on");
    // ...and the next `up` adopts it: the same process, the same boot.
    p.respawn();
    assert_eq!(boot_id(&p, &a, &id), before, "adopted, not booted again");
    assert_eq!(qemu_of(&id), pids);

    // Without --keep-vms, Ctrl-C stops the guests `up` started, within its bound.
    p.drop_arg("--keep-vms");
    p.restart();
    assert_eq!(boot_id(&p, &a, &id), before, "adopted again");
    let status = p.interrupt(Duration::from_secs(90));
    assert!(status.success(), "{status}");
    assert!(qemu_of(&id).is_empty(), "the guest stopped with up");
}
