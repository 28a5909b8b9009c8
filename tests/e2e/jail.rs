//! The jail through the product: a VM process that outgrows its jail's memory limit is
//! ended by the kernel's OOM killer and its VM is Failed with reason OOM, with nothing left
//! behind and the node agent unharmed; a node agent that cannot jail refuses to start.

use crate::host::jail_gone;
use crate::support::Plane;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

#[test]
fn a_vm_that_outgrows_its_jail_is_failed_with_reason_oom_and_leaves_nothing_behind() {
    // The jail allows 16 MiB beyond the guest's memory, and `init_on_free=1` makes the guest
    // kernel clear (so touch) all of its memory at boot: QEMU needs more than the limit.
    // (The cgroup parent is absolute, from each hierarchy's root, as the default is.)
    let (p, cleanup) = Plane::with_node(
        "oom",
        2_200_000,
        &[
            "--catalog",
            "none",
            "--jail-memory-overhead-mib",
            "16",
            "--guest-kernel-args",
            "init_on_free=1",
        ],
    );
    let parent = cleanup.cgroup_parent.clone();
    let (a, admin) = (p.token("tenant-a"), p.token("admin"));
    let vm = p
        .post(
            &a,
            "/v1/vms",
            &json!({"name": "hog", "vcpus": 1, "memory_mib": 256}),
        )
        .expect(201)
        .body;
    let id = vm["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let v = p.get(&a, &format!("/v1/vms/{id}")).expect(200).body;
        if v["status"]["phase"] == "Failed" {
            break v["status"].clone();
        }
        assert_ne!(v["status"]["phase"], "Running", "it fit in its jail: {v}");
        assert!(Instant::now() < deadline, "never Failed: {v}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("OOM:"), "{status}");
    assert!(reason.contains("272 MiB"), "256 + 16: {status}");
    // Its jail is gone (directory and cgroup); the agent runs on and reports its node Ready.
    let node_dir = p.data_dir().join("nodes").join("node-1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !jail_gone(&node_dir, &parent, "node-1", &id) {
        assert!(Instant::now() < deadline, "the jail of {id} remains");
        std::thread::sleep(Duration::from_millis(100));
    }
    let nodes = p.get(&admin, "/v1/nodes").expect(200).body;
    assert_eq!(nodes[0]["state"], "Ready", "{nodes}");
}

#[test]
fn a_node_agent_that_cannot_jail_refuses_to_start_and_says_why() {
    // The agent as an unprivileged user (nobody): it cannot make namespaces or cgroups.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("modvisor");
    std::fs::copy(env!("CARGO_BIN_EXE_modvisor"), &exe).unwrap();
    let token = dir.path().join("bootstrap.jwt");
    std::fs::write(&token, "not-needed-before-the-jail-check").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(&exe)
        .args(["node-agent", "--control-plane", "http://127.0.0.1:9"])
        .arg("--bootstrap-token-file")
        .arg(&token)
        .arg("--data-dir")
        .arg(&data)
        .env("MODVISOR_LOG", "warn")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not root"), "{err}");
    assert!(err.contains("--jail off"), "{err}");
}

#[test]
fn bench_isolation_prints_its_table_for_the_three_ways() {
    let text = crate::support::bench_output(&["isolation", "--runs", "1"]);
    for want in ["container", "microVM (our vmm)", "QEMU ("] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // Two figures per way and a ratio row after each: every row has its three values.
    for row in [
        "jail + start -> first output",
        "resident memory beyond guest RAM",
    ] {
        let line = text.lines().find(|l| l.starts_with(row)).unwrap();
        let values = line[row.len()..]
            .split_whitespace()
            .filter(|w| w.parse::<f64>().is_ok_and(|v| v > 0.0))
            .count();
        assert_eq!(values, 3, "{line}");
    }
}
