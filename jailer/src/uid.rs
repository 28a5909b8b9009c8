//! Per-VM uids: one per jail, recorded in `<jail dir>/uid`, allocated under a lock on the
//! jails' directory. A uid that any live process on the host runs as is never handed out,
//! so two node agents whose uid ranges overlap by mistake still do not share one.

use crate::jail::JailConfig;
use crate::JailError;
use std::collections::HashSet;
use std::path::Path;

fn ioe(path: &Path) -> impl FnOnce(std::io::Error) -> JailError + '_ {
    move |source| JailError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes a lock on `dir/.lock`.
fn lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, JailError> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(ioe(&path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
        JailError::Io {
            path,
            source: e.into(),
        }
    })
}

/// The uid recorded for the jail in `jail_dir`.
pub(crate) fn recorded(jail_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(jail_dir.join("uid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Every real, effective, saved or filesystem uid of a live process on the host.
fn live_uids() -> HashSet<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return HashSet::new();
    };
    procs
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| {
                    ids.split_whitespace()
                        .filter_map(|u| u.parse().ok())
                        .collect::<Vec<u32>>()
                })
        })
        .flatten()
        .collect()
}

/// Allocates the lowest free uid of `config`'s range for a new jail at `jail_dir`, creates
/// `root` inside it and records the uid. Refuses a jail directory that exists.
pub(crate) fn allocate(
    config: &JailConfig,
    jail_dir: &Path,
    root: &Path,
) -> Result<u32, JailError> {
    let _guard = lock(&config.dir)?;
    if jail_dir.exists() {
        return Err(JailError::Invalid(format!(
            "{}: a jail of this id exists",
            jail_dir.display()
        )));
    }
    let mut used = live_uids();
    used.extend(
        std::fs::read_dir(&config.dir)
            .map_err(ioe(&config.dir))?
            .flatten()
            .filter_map(|e| recorded(&e.path())),
    );
    let uid = (config.uid_base..config.uid_base.saturating_add(config.uid_count))
        .find(|u| !used.contains(u))
        .ok_or_else(|| JailError::Unavailable("every per-VM uid is in use".into()))?;
    std::fs::create_dir_all(root).map_err(ioe(root))?;
    std::fs::write(jail_dir.join("uid"), uid.to_string()).map_err(ioe(jail_dir))?;
    Ok(uid)
}
