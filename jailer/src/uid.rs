//! Per-VM uids: one per jail, recorded in `<jail dir>/uid` and claimed host-wide in a
//! registry directory (`/run/modvisor/uids/<uid>` holding the jail's directory), under a
//! lock on that registry. Every node agent on the host shares the registry, so two agents
//! never hand out the same uid, even with overlapping ranges. A uid that any live process
//! already runs as is skipped too. A claim whose jail directory is gone (a crash) is free.

use crate::jail::{ioe, JailConfig};
use crate::JailError;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Takes a lock on `dir/.lock`.
fn lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, JailError> {
    std::fs::create_dir_all(dir).map_err(ioe(dir))?;
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

/// Whether the registry's claim on `uid` is held by a jail that still exists; a claim
/// whose jail is gone (removed without teardown) is dropped.
fn claimed(registry: &Path, uid: u32) -> bool {
    let claim = registry.join(uid.to_string());
    let Ok(owner) = std::fs::read_to_string(&claim) else {
        return false;
    };
    let held = recorded(Path::new(owner.trim())) == Some(uid);
    if !held {
        let _ = std::fs::remove_file(claim);
    }
    held
}

/// Allocates the lowest free uid of `config`'s range for a new jail at `jail_dir`, creates
/// `root` inside it, records the uid there and claims it in the registry. Refuses a jail
/// directory that exists.
pub(crate) fn allocate(
    config: &JailConfig,
    jail_dir: &Path,
    root: &Path,
) -> Result<u32, JailError> {
    let _guard = lock(&config.uid_registry)?;
    if jail_dir.exists() {
        return Err(JailError::Invalid(format!(
            "{}: a jail of this id exists",
            jail_dir.display()
        )));
    }
    let live = live_uids();
    let uid = (config.uid_base..config.uid_base.saturating_add(config.uid_count))
        .find(|u| !live.contains(u) && !claimed(&config.uid_registry, *u))
        .ok_or_else(|| JailError::Unavailable("every per-VM uid is in use".into()))?;
    std::fs::create_dir_all(root).map_err(ioe(root))?;
    std::fs::write(jail_dir.join("uid"), uid.to_string()).map_err(ioe(jail_dir))?;
    let claim = config.uid_registry.join(uid.to_string());
    let owner: PathBuf = std::fs::canonicalize(jail_dir).map_err(ioe(jail_dir))?;
    std::fs::write(&claim, owner.as_os_str().as_encoded_bytes()).map_err(ioe(&claim))?;
    Ok(uid)
}

/// Drops the registry's claim on the uid of the jail at `jail_dir`, if that jail holds it.
pub(crate) fn release(registry: &Path, jail_dir: &Path) {
    let Some(uid) = recorded(jail_dir) else {
        return;
    };
    let claim = registry.join(uid.to_string());
    let owner = std::fs::read_to_string(&claim).unwrap_or_default();
    let mine = std::fs::canonicalize(jail_dir)
        .map(|d| d == Path::new(owner.trim()))
        .unwrap_or(false);
    if mine {
        let _ = std::fs::remove_file(claim);
    }
}
