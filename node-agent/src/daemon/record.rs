//! What a VM leaves on the node's disk: its record (to re-adopt it after a restart) and
//! its boot's channel key (in its run directory, outside the jail).

use modvisor_guest_protocol::seal::ChannelKey;
use modvisor_node_api::types::EnsureVm;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the node persists about a VM, to re-adopt it after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    /// VM id.
    pub id: String,
    /// Desired state.
    pub spec: EnsureVm,
    /// The hypervisor process, while it runs.
    pub pid: Option<u32>,
    /// The guest's run directory.
    pub run_dir: PathBuf,
}

impl VmRecord {
    fn path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    /// Saves the record in `dir` (write, then rename).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{}.json.tmp", self.id));
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, Self::path(dir, &self.id))
    }

    /// Every record in `dir`.
    pub fn load_all(dir: &Path) -> Vec<VmRecord> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Removes the record from `dir`.
    pub fn remove(dir: &Path, id: &str) {
        match std::fs::remove_file(Self::path(dir, id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(vm = %id, error = %e, "removing the VM's record"),
        }
    }
}

const KEY_FILE: &str = "agent.key";

/// Saves this boot's channel key in the VM's run directory (0600; outside the jail).
pub(super) fn save_key(run_dir: &Path, key: &ChannelKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(run_dir)?;
    let tmp = run_dir.join(format!("{KEY_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, run_dir.join(KEY_FILE))
}

/// This boot's id: a digest of its channel key (new at every boot, kept in the run
/// directory, so an agent restarted later finds the same id; the digest tells nothing of
/// the key).
pub(super) fn boot_id(key: &ChannelKey) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"modvisor boot id\0")
        .chain_update(key.as_bytes())
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The channel key of the guest booted in `run_dir`.
pub(super) fn load_key(run_dir: &Path) -> std::io::Result<ChannelKey> {
    let path = run_dir.join(KEY_FILE);
    let bytes = std::fs::read(&path)?;
    ChannelKey::from_slice(&bytes)
        .ok_or_else(|| std::io::Error::other(format!("{}: not a channel key", path.display())))
}
