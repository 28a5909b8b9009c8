//! `modvisor-vmm` as a process (the same code as `modvisor vmm`): exit codes, the one-line
//! reason, the state file, and the control API on its Unix socket.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use modvisor_vmm::probe::Probe;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_modvisor-vmm");

/// One HTTP/1.1 request over the API socket; returns (status, body).
fn http(sock: &Path, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: vmm\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status: u16 = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn api_pauses_resumes_and_stops_the_vm() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let kernel = build(Probe::PvhReady, dir.path());
    let (console, api, state) = (
        dir.path().join("console"),
        dir.path().join("api.sock"),
        dir.path().join("state.json"),
    );
    let mut child = Command::new(BIN)
        .arg("--kernel")
        .arg(&kernel)
        .args(["--cmdline", "console=ttyS0", "--memory-mib", "32"])
        .arg("--console")
        .arg(&console)
        .arg("--api-socket")
        .arg(&api)
        .arg("--state-file")
        .arg(&state)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the console", || {
        std::fs::read_to_string(&console).is_ok_and(|c| c.contains("ready"))
    });
    let (code, vm) = http(&api, "GET", "/vm", "");
    assert_eq!((code, vm["state"].as_str()), (200, Some("Running")), "{vm}");
    assert!(vm["uptime_ms"].as_u64().is_some());
    let (code, vm) = http(&api, "PUT", "/vm/state", r#"{"action":"pause"}"#);
    assert_eq!((code, vm["state"].as_str()), (200, Some("Paused")));
    let (code, vm) = http(&api, "PUT", "/vm/state", r#"{"action":"resume"}"#);
    assert_eq!((code, vm["state"].as_str()), (200, Some("Running")));
    let (code, p) = http(&api, "PUT", "/vm/state", r#"{"action":"explode"}"#);
    assert_eq!(code, 400);
    assert_eq!(p["type"], "urn:modvisor:problem:invalid-action");
    let (code, p) = http(&api, "PUT", "/vm/state", "not json");
    assert_eq!(
        (code, p["type"].as_str()),
        (400, Some("urn:modvisor:problem:invalid-body"))
    );
    let (code, _) = http(&api, "GET", "/nope", "");
    assert_eq!(code, 404);
    let (code, vm) = http(&api, "PUT", "/vm/state", r#"{"action":"stop"}"#);
    assert_eq!((code, vm["state"].as_str()), (200, Some("ShutDown")));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["state"], "ShutDown");
    assert_eq!(saved["reason"], "stopped through the API");
}

#[test]
fn a_crash_is_a_distinct_exit_code_with_a_one_line_reason() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let kernel = build(Probe::TripleFault, dir.path());
    let state = dir.path().join("state.json");
    let out = Command::new(BIN)
        .arg("--kernel")
        .arg(&kernel)
        .args(["--cmdline", "x", "--memory-mib", "32"])
        .arg("--console")
        .arg(dir.path().join("console"))
        .arg("--state-file")
        .arg(&state)
        .env("MODVISOR_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(modvisor_vmm::ExitCode::Crashed.code())
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("crashed: vCPU 0: triple fault"), "{stderr}");
    let saved = modvisor_vmm::StateReport::from_file_text(&std::fs::read(&state).unwrap()).unwrap();
    assert!(
        matches!(&saved.state, modvisor_vmm::VmState::Crashed(r) if r.contains("triple fault")),
        "{saved:?}"
    );
}

#[test]
fn bad_input_is_a_clear_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"\x7fELF garbage").unwrap();
    let state = dir.path().join("state.json");
    for kernel in [dir.path().join("missing"), junk] {
        let out = Command::new(BIN)
            .arg("--kernel")
            .arg(&kernel)
            .args(["--cmdline", "x"])
            .arg("--console")
            .arg(dir.path().join("console"))
            .arg("--state-file")
            .arg(&state)
            .env("MODVISOR_LOG", "off")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(modvisor_vmm::ExitCode::Setup.code()),
            "{stderr}"
        );
        assert!(stderr.starts_with("modvisor vmm: error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let saved =
            modvisor_vmm::StateReport::from_file_text(&std::fs::read(&state).unwrap()).unwrap();
        assert!(
            matches!(saved.state, modvisor_vmm::VmState::SetupFailed(_)),
            "{saved:?}"
        );
    }
}
