//! Builds `tenant_probe.c` (beside this file) for a guest: static, freestanding, a few
//! KiB. Shared by the node agent's guest tests and the end-to-end tests (`#[path]`).

use std::path::Path;

/// The probe's executable, built in `dir` with the host's `cc`.
pub fn tenant_probe(dir: &Path) -> Vec<u8> {
    let src = dir.join("tenant_probe.c");
    std::fs::write(&src, include_str!("tenant_probe.c")).expect("writing the probe's source");
    let out = dir.join("tenant_probe");
    let status = std::process::Command::new("cc")
        .args([
            "-static",
            "-no-pie",
            "-nostdlib",
            "-Os",
            "-fno-stack-protector",
        ])
        .args(["-fno-builtin", "-s", "-Wl,--build-id=none", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running cc");
    assert!(status.success(), "building the tenant probe");
    std::fs::read(out).expect("the built probe")
}
