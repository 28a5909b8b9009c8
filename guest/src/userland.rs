//! The tenant's userland in the guest: busybox from Debian's `busybox-static` package
//! (fetched with `apt-get download` like the kernel, cached per version), installed as
//! `/bin/busybox` with a link for each applet at the path busybox itself lists.

use crate::debian;
use crate::kernel::KernelError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's package with a static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// A static busybox and the paths of its applets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Userland {
    /// The package version it came from.
    pub version: String,
    /// The busybox binary (static x86-64).
    pub busybox: PathBuf,
    /// Applet paths without a leading `/`, e.g. `bin/sh`, `sbin/ip` (sorted).
    pub applets: Vec<String>,
}

impl Userland {
    /// Opens an unpacked `busybox-static` tree (`bin/busybox`), asking the binary (it runs
    /// on the host: static x86-64) for its applets.
    pub fn open(root: &Path, version: &str) -> Result<Self, KernelError> {
        let busybox = root.join("bin/busybox");
        if !busybox.is_file() {
            return Err(KernelError::Layout {
                path: busybox,
                detail: "no busybox binary".into(),
            });
        }
        let listed = debian::run(Command::new(&busybox).arg("--list-full"))?;
        let mut applets: Vec<String> = listed
            .lines()
            .map(str::trim)
            .filter(|l| is_applet_path(l))
            .map(str::to_string)
            .collect();
        applets.sort();
        applets.dedup();
        if !applets.iter().any(|a| a == "bin/sh") {
            return Err(KernelError::Layout {
                path: busybox,
                detail: "busybox lists no bin/sh applet".into(),
            });
        }
        Ok(Userland {
            version: version.to_string(),
            busybox,
            applets,
        })
    }
}

/// `bin/x`, `sbin/x`, `usr/bin/x` or `usr/sbin/x` with a plain applet name.
fn is_applet_path(p: &str) -> bool {
    let Some((dir, name)) = p.rsplit_once('/') else {
        return false;
    };
    matches!(dir, "bin" | "sbin" | "usr/bin" | "usr/sbin")
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.[".contains(&b))
}

fn cache_name(version: &str) -> String {
    format!("{BUSYBOX_PACKAGE}_{}", version.replace(':', "%3a"))
}

/// Where `version` of `busybox-static` is (or would be) unpacked in `cache`; it is
/// complete when it holds `.complete`.
pub fn cached_tree(cache: &Path, version: &str) -> PathBuf {
    cache.join("userland").join(cache_name(version))
}

/// Fetches Debian's current `busybox-static` into `cache` (once per version).
pub fn fetch_busybox(cache: &Path, progress: impl FnMut(&str)) -> Result<Userland, KernelError> {
    let version = debian::candidate_version(BUSYBOX_PACKAGE)?;
    let name = cache_name(&version);
    let root = debian::fetch_unpacked(cache, "userland", &name, BUSYBOX_PACKAGE, progress)?;
    Userland::open(&root, &version)
}

/// The userland to use: `MODVISOR_BUSYBOX_DIR` (an unpacked `busybox-static` of your own)
/// when set, else Debian's, fetched into the cache if needed.
pub fn resolve(progress: impl FnMut(&str)) -> Result<Userland, KernelError> {
    match std::env::var_os("MODVISOR_BUSYBOX_DIR") {
        Some(dir) => Userland::open(Path::new(&dir), "local"),
        None => fetch_busybox(&crate::kernel::cache_dir(), progress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_paths() {
        assert!(is_applet_path("bin/sh"));
        assert!(is_applet_path("usr/bin/["));
        assert!(!is_applet_path("etc/passwd"));
        assert!(!is_applet_path("bin/../x"));
        assert!(!is_applet_path("sh"));
    }
}
