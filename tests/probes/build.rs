//! Builds small programs for guests: static, freestanding (no libc), a few KiB, with the
//! host's `cc`. Shared by the node agent's guest tests, the end-to-end tests and the
//! bench crate's build script (`#[path]`).

use std::path::Path;

/// `source` built as `<dir>/<name>`: its executable's bytes.
pub fn freestanding(dir: &Path, name: &str, source: &str) -> std::io::Result<Vec<u8>> {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source)?;
    let out = dir.join(name);
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
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!("cc {name}.c: {status}")));
    }
    std::fs::read(out)
}

/// The tenant probe's executable (`tenant_probe.c` beside this file), built in `dir`.
#[cfg(test)]
pub fn tenant_probe(dir: &Path) -> Vec<u8> {
    freestanding(dir, "tenant_probe", include_str!("tenant_probe.c"))
        .expect("building the tenant probe")
}
