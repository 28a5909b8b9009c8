//! Fetching Debian packages into the cache: `apt-get download`, then `dpkg -x` into a
//! directory named after the package and version, completed by a rename and marked with
//! `.complete`, one fetch at a time per cache directory (a file lock).

use crate::kernel::KernelError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd`; its stdout, or why it failed.
pub(crate) fn run(cmd: &mut Command) -> Result<String, KernelError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| KernelError::Command {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(KernelError::Command {
            command,
            detail: format!("{}: {}", out.status, stderr.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError {
    let path = path.to_path_buf();
    move |source| KernelError::Io { path, source }
}

/// The version apt would install of `package` (`apt-cache policy`'s candidate).
pub fn candidate_version(package: &str) -> Result<String, KernelError> {
    let out = run(Command::new("apt-cache").args(["policy", package]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate: "))
        .map(str::trim)
        .find(|v| *v != "(none)")
        .map(str::to_string)
        .ok_or_else(|| KernelError::Command {
            command: format!("apt-cache policy {package}"),
            detail: "no candidate version; run `apt-get update` first".into(),
        })
}

/// `package` unpacked in `<cache>/<kind>/<name>` (fetched and unpacked once; later calls
/// reuse it).
pub fn fetch_unpacked(
    cache: &Path,
    kind: &str,
    name: &str,
    package: &str,
    progress: impl FnMut(&str),
) -> Result<PathBuf, KernelError> {
    fetch_unpacked_together(cache, kind, name, &[package], |_| Ok(()), progress)
}

/// `packages` unpacked together in `<cache>/<kind>/<name>`, then `finish`ed (which may
/// adjust the tree) before the tree counts as complete; fetched once, later calls reuse
/// it.
pub fn fetch_unpacked_together(
    cache: &Path,
    kind: &str,
    name: &str,
    packages: &[&str],
    finish: impl FnOnce(&Path) -> Result<(), KernelError>,
    mut progress: impl FnMut(&str),
) -> Result<PathBuf, KernelError> {
    let dir = cache.join(kind);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let root = dir.join(name);
    let all = packages.join(" ");
    if root.join(".complete").exists() {
        progress(&format!("{all}: cached in {}", root.display()));
        return Ok(root);
    }
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(io(&downloads))?;
    let partial = dir.join(format!("{name}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    for package in packages {
        progress(&format!("{package}: apt-get download"));
        run(Command::new("apt-get").current_dir(&downloads).args([
            "-q",
            "-o",
            "APT::Sandbox::User=root",
            "download",
            package,
        ]))?;
        let deb = std::fs::read_dir(&downloads)
            .map_err(io(&downloads))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .ok_or_else(|| KernelError::Layout {
                path: downloads.clone(),
                detail: format!("apt-get download left no {package}_*.deb"),
            })?;
        progress(&format!("{package}: dpkg -x {}", deb.display()));
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))?;
        std::fs::remove_file(&deb).map_err(io(&deb))?;
    }
    finish(&partial)?;
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(io(&root))?;
    }
    std::fs::rename(&partial, &root).map_err(io(&root))?;
    std::fs::write(root.join(".complete"), name).map_err(io(&root))?;
    progress(&format!("{all}: ready in {}", root.display()));
    Ok(root)
}
