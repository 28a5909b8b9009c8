//! The guest kernel: Debian's cloud kernel fetched with `apt-get download`, unpacked with
//! `dpkg -x` into a cache, or a kernel tree the user points at.
//!
//! A tree holds `boot/vmlinuz-<release>` and `lib/modules/<release>/`; the release is
//! recorded in the cache as the directory name.

use crate::debian::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's metapackage that always depends on the current cloud kernel.
pub const CLOUD_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// Fetching or opening a kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A command the fetch needs failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed or why it could not run.
        detail: String,
    },
    /// The tree lacks something a guest needs.
    #[error("{path}: {detail}")]
    Layout {
        /// Where.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A guest kernel and its module tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// The release string (`uname -r` in the guest), e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

impl GuestKernel {
    /// Opens an unpacked tree (`boot/vmlinuz-R`, `lib/modules/R/`). With several releases
    /// in one tree, `release` picks one.
    pub fn open(root: &Path, release: Option<&str>) -> Result<Self, KernelError> {
        let boot = root.join("boot");
        let mut releases: Vec<String> = std::fs::read_dir(&boot)
            .map_err(|source| KernelError::Io {
                path: boot.clone(),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                    .map(str::to_string)
            })
            .collect();
        releases.sort();
        let release = match release {
            Some(r) if releases.iter().any(|x| x == r) => r.to_string(),
            Some(r) => {
                return Err(KernelError::Layout {
                    path: boot,
                    detail: format!("no vmlinuz-{r} (found {releases:?})"),
                })
            }
            None => releases.pop().ok_or_else(|| KernelError::Layout {
                path: boot.clone(),
                detail: "no vmlinuz-* here".into(),
            })?,
        };
        let modules_dir = root.join("lib/modules").join(&release);
        if !modules_dir.is_dir() {
            return Err(KernelError::Layout {
                path: modules_dir,
                detail: "module tree missing".into(),
            });
        }
        Ok(GuestKernel {
            vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
            release,
            modules_dir,
        })
    }

    /// The path of a module's .ko in the tree, by module name (`-` and `_` are the same).
    pub fn module_path(&self, name: &str) -> Option<PathBuf> {
        let want = name.replace('-', "_");
        find_ko(&self.modules_dir.join("kernel"), &want)
    }

    /// Every .ko in the tree.
    pub fn all_modules(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.modules_dir.join("kernel"), &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "ko") {
            out.push(p);
        }
    }
}

fn find_ko(dir: &Path, want: &str) -> Option<PathBuf> {
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.into_iter().find(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.replace('-', "_") == want)
    })
}

/// Where modvisor caches kernels: `$MODVISOR_CACHE_DIR`, else `$HOME/.cache/modvisor`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MODVISOR_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("modvisor")
}

/// The versioned package Debian's cloud metapackage currently depends on.
pub fn current_cloud_package() -> Result<String, KernelError> {
    let out = run(Command::new("apt-cache").args(["depends", CLOUD_METAPACKAGE]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(str::to_string)
        .ok_or_else(|| KernelError::Command {
            command: format!("apt-cache depends {CLOUD_METAPACKAGE}"),
            detail: "no linux-image-*-cloud-amd64 dependency; run `apt-get update` first".into(),
        })
}

/// Fetches Debian's current cloud kernel into `cache` (once; later calls reuse it) and
/// returns it. `progress` hears each step.
pub fn fetch_debian_cloud(
    cache: &Path,
    progress: impl FnMut(&str),
) -> Result<GuestKernel, KernelError> {
    let package = current_cloud_package()?;
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    fetch_release(cache, &release, progress)
}

/// Refuses what cannot be a kernel release (it names packages and cache directories).
pub fn check_release(release: &str) -> Result<(), KernelError> {
    let fine = !release.is_empty()
        && release.len() <= 64
        && release.starts_with(|c: char| c.is_ascii_digit())
        && release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+~".contains(c));
    if fine {
        Ok(())
    } else {
        Err(KernelError::Layout {
            path: PathBuf::from(release),
            detail: "not a kernel release (e.g. 6.1.0-57-cloud-amd64)".into(),
        })
    }
}

/// Fetches Debian's kernel of `release` (`linux-image-<release>`) into `cache` (once).
pub fn fetch_release(
    cache: &Path,
    release: &str,
    progress: impl FnMut(&str),
) -> Result<GuestKernel, KernelError> {
    check_release(release)?;
    let package = format!("linux-image-{release}");
    let root = crate::debian::fetch_unpacked(cache, "kernels", release, &package, progress)?;
    GuestKernel::open(&root, Some(release))
}

/// The guest kernel to use: `MODVISOR_KERNEL_DIR` (a user's tree) when set, else Debian's
/// cloud kernel, fetched into the cache if needed.
pub fn resolve(progress: impl FnMut(&str)) -> Result<GuestKernel, KernelError> {
    match std::env::var_os("MODVISOR_KERNEL_DIR") {
        Some(dir) => GuestKernel::open(Path::new(&dir), None),
        None => fetch_debian_cloud(&cache_dir(), progress),
    }
}
