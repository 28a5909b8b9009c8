//! The `kvm` driver (our vmm behind the hypervisor-driver trait) on this machine's
//! /dev/kvm, with the vmm's probe guests, jailed as the node agent jails it (seccomp
//! allowlist included): it starts, observes, bridges COM2, stops, and reports a crash. And
//! `--driver kvm` without hardware virtualization fails clearly.

use crate::host::HostCleanup;
use modvisor_node_agent::driver::{DriverError, GuestSpec, GuestState, HypervisorDriver};
use modvisor_node_agent::jailing::{JailOptions, NodeJails};
use modvisor_node_agent::kvm::KvmDriver;
use modvisor_vmm::probe::{self, Probe};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The jailed kvm driver with jails in `dir`, and what removes its cgroups at the end.
fn driver(dir: &std::path::Path, test: &str) -> (KvmDriver, HostCleanup) {
    // A cgroup parent of the test's own: the cleanup kills everything under it.
    let parent = format!("modvisor-e2e-kvm-{}-{test}", std::process::id());
    let options = JailOptions {
        cgroup_parent: parent.clone(),
        uid_base: 2_300_000,
        ..JailOptions::default()
    };
    let jails = NodeJails::new(dir, "kvm", &options);
    let d = KvmDriver::new(env!("CARGO_BIN_EXE_modvisor").into(), vec!["vmm".into()])
        .with_jails(Arc::new(jails));
    let cleanup = HostCleanup {
        dir: dir.to_path_buf(),
        cgroup_parent: parent,
    };
    (d, cleanup)
}

fn spec(dir: &std::path::Path, probe: Probe) -> GuestSpec {
    let kernel = probe::build(probe, dir).expect("assemble the probe guest");
    let initrd = dir.join("initrd");
    std::fs::write(&initrd, b"modvisor").unwrap();
    GuestSpec {
        id: format!("probe-{}", probe.name()),
        vcpus: 1,
        memory_mib: 64,
        kernel,
        initrd,
        cmdline: "console=ttyS0".into(),
        run_dir: dir.join("run"),
        nic: None,
        virtio_channel: false,
    }
}

fn wait_end(g: &mut dyn modvisor_node_agent::driver::Guest) -> GuestState {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = g.status();
        if s != GuestState::Running {
            return s;
        }
        assert!(Instant::now() < deadline, "the probe guest did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kvm_driver_runs_observes_and_stops_probe_guests() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is required"
    );
    let node = tempfile::tempdir().unwrap();
    let (d, _cleanup) = driver(node.path(), "probes");
    assert_eq!(d.name(), "kvm");

    // A halting guest ends cleanly, its console in the log.
    let dir = tempfile::tempdir().unwrap();
    let mut g = d.start(&spec(dir.path(), Probe::Hello)).unwrap();
    assert_eq!(wait_end(g.as_mut()), GuestState::Exited);
    let console = std::fs::read_to_string(g.console_path()).unwrap();
    assert!(console.contains("hello from the guest"), "{console}");

    // COM2 is bridged to the agent socket, as with the qemu driver.
    let dir = tempfile::tempdir().unwrap();
    let mut g = d.start(&spec(dir.path(), Probe::Echo)).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(g.agent_socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 4 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the channel closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got[..4], b"ping");
    assert_eq!(g.status(), GuestState::Running);
    // ... from inside its jail: a per-VM uid, under the seccomp filter.
    let status = std::fs::read_to_string(format!("/proc/{}/status", g.pid().unwrap())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let uid: u32 = field("Uid:").parse().unwrap();
    assert!((2_300_000..2_300_000 + 65_536).contains(&uid), "{status}");
    assert_eq!(field("Seccomp:"), "2", "filter mode: {status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    // Stopping a running guest ends it cleanly.
    assert_eq!(g.stop(Duration::from_secs(10)), GuestState::Exited);

    // A triple fault is a crash with the reason: seen by `start` itself when the guest
    // dies before its agent socket is observed, else by `status`.
    let dir = tempfile::tempdir().unwrap();
    let reason = match d.start(&spec(dir.path(), Probe::TripleFault)) {
        Ok(mut g) => match wait_end(g.as_mut()) {
            GuestState::Crashed { reason } => reason,
            other => panic!("expected a crash, got {other:?}"),
        },
        Err(DriverError::Ended(reason)) => reason,
        Err(e) => panic!("expected a crash, got {e}"),
    };
    let reason = reason.to_lowercase();
    assert!(
        reason.contains("triple") || reason.contains("shutdown"),
        "{reason}"
    );
}

/// Sends `msg` on a guest's agent socket and reads the probe's echo of it.
fn echo(socket: &std::path::Path, msg: &[u8]) -> Vec<u8> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(msg).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < msg.len() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the channel closed");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn a_jailed_vmm_outlives_its_agent_and_is_adopted_by_the_next() {
    let node = tempfile::tempdir().unwrap();
    let (d, _cleanup) = driver(node.path(), "adopt");
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), Probe::Echo);
    spec.id = "probe-adopted".into();
    let g = d.start(&spec).unwrap();
    let pid = g.pid().unwrap();
    assert_eq!(echo(g.agent_socket(), b"one"), b"one");
    // The agent dies (kill -9: nothing of it runs, its vmm does).
    std::mem::forget(g);
    // The next agent adopts it through its jail, talks to it, and stops it.
    assert!(
        d.adopt(&spec.id, std::process::id(), &spec.run_dir)
            .is_none(),
        "not ours"
    );
    let mut g = d.adopt(&spec.id, pid, &spec.run_dir).expect("adopted");
    assert_eq!(g.pid(), Some(pid));
    assert_eq!(g.status(), GuestState::Running);
    assert_eq!(echo(g.agent_socket(), b"two"), b"two");
    assert_eq!(g.stop(Duration::from_secs(10)), GuestState::Exited);
    assert!(
        !node.path().join("jails").join(&spec.id).exists(),
        "jail removed"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            s.contains("State:\tZ")
        }
    );
}

#[test]
fn driver_kvm_without_hardware_virtualization_fails_clearly() {
    if modvisor_node_agent::hostcaps::hardware_virtualization() {
        // On such a host the kvm driver is the default; this test is about hosts without.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t");
    std::fs::write(&token, "x").unwrap();
    let start = Instant::now();
    let out = crate::support::modvisor()
        .args([
            "node-agent",
            "--driver",
            "kvm",
            "--control-plane",
            "http://127.0.0.1:9",
            "--name",
            "n",
            "--jail",
            "off",
        ])
        .arg("--bootstrap-token-file")
        .arg(&token)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "it must fail fast, not hang"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hardware virtualization"), "{err}");
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{err}"
    );
}
