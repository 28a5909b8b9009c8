//! The guest kernel's headers, for building out-of-tree modules against it: Debian's
//! `linux-headers-<release>` with the two packages it needs (`linux-headers-*-common`
//! and `linux-kbuild-*`, as `apt-cache depends` names them), fetched with `apt-get
//! download` into `<cache>/headers/<release>` as a pair with the kernel of that release:
//! every package must be of the kernel's own version, or nothing is unpacked.

use crate::debian::{candidate_version, fetch_unpacked_together, io, run};
use crate::kernel::KernelError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A guest kernel release's headers, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelHeaders {
    /// The release, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    /// The Debian version the kernel and its headers share, e.g. `6.1.192-3`.
    pub version: String,
    /// The tree to build against (`make -C <kdir> M=...`).
    pub kdir: PathBuf,
}

/// The packages `linux-headers-<release>` depends on that a build needs (the common
/// headers and kbuild; the compiler comes from the host).
fn header_packages(release: &str) -> Result<Vec<String>, KernelError> {
    let headers = format!("linux-headers-{release}");
    let out = run(Command::new("apt-cache").args(["depends", &headers]))?;
    let mut packages = vec![headers.clone()];
    for dep in out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
    {
        let wanted = (dep.starts_with("linux-headers-") && dep.ends_with("-common"))
            || dep.starts_with("linux-kbuild-");
        if wanted && !packages.iter().any(|p| p == dep) {
            packages.push(dep.to_string());
        }
    }
    if packages.len() != 3 {
        return Err(KernelError::Command {
            command: format!("apt-cache depends {headers}"),
            detail: format!(
                "expected {headers} to depend on linux-headers-*-common and linux-kbuild-*, found {:?} (run `apt-get update`; Debian keeps only current releases)",
                &packages[1..]
            ),
        });
    }
    Ok(packages)
}

/// Fetches (once) the headers of `release` into `cache`, checked to be of the same
/// Debian version as `linux-image-<release>` (the kernel they must match).
pub fn fetch(
    cache: &Path,
    release: &str,
    progress: impl FnMut(&str),
) -> Result<KernelHeaders, KernelError> {
    crate::kernel::check_release(release)?;
    let image_version = candidate_version(&format!("linux-image-{release}"))?;
    let packages = header_packages(release)?;
    for p in &packages {
        let v = candidate_version(p)?;
        if v != image_version {
            return Err(KernelError::Layout {
                path: cache.to_path_buf(),
                detail: format!(
                    "{p} is at {v} but linux-image-{release} at {image_version}: not a pair (run `apt-get update`)"
                ),
            });
        }
    }
    let name = format!("{release}_{image_version}");
    let root_of = cache.join("headers").join(&name);
    let common = packages[1].trim_start_matches("linux-headers-").to_string();
    let refs: Vec<&str> = packages.iter().map(String::as_str).collect();
    let root = fetch_unpacked_together(
        cache,
        "headers",
        &name,
        &refs,
        |partial| point_at_common(partial, &root_of, release, &common),
        progress,
    )?;
    let kdir = root
        .join("usr/src")
        .join(format!("linux-headers-{release}"));
    if !kdir.join("Makefile").is_file() {
        return Err(KernelError::Layout {
            path: kdir,
            detail: "no Makefile: the headers package did not unpack as expected".into(),
        });
    }
    Ok(KernelHeaders {
        release: release.to_string(),
        version: image_version,
        kdir,
    })
}

/// Debian's per-flavour Makefile includes the common headers' Makefile by its installed
/// path (`/usr/src/linux-headers-<base>-common/Makefile`); in the cache it is under
/// `root` instead.
fn point_at_common(
    partial: &Path,
    root: &Path,
    release: &str,
    common: &str,
) -> Result<(), KernelError> {
    let makefile = partial
        .join("usr/src")
        .join(format!("linux-headers-{release}"))
        .join("Makefile");
    let text = std::fs::read_to_string(&makefile).map_err(io(&makefile))?;
    let installed = format!("/usr/src/linux-headers-{common}/Makefile");
    if !text.contains(&installed) {
        return Err(KernelError::Layout {
            path: makefile,
            detail: format!("does not include {installed}"),
        });
    }
    let cached = root
        .join("usr/src")
        .join(format!("linux-headers-{common}"))
        .join("Makefile");
    let text = text.replace(&installed, &cached.to_string_lossy());
    std::fs::write(&makefile, text).map_err(io(&makefile))
}
