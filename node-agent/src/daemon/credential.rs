//! The node's credential on disk (`credential.json`, mode 0600): the name it is bound to
//! and its node token. A restarted agent re-registers with it; the bootstrap token is
//! only for a name that is not yet bound (or a credential the control plane no longer
//! knows, e.g. after its store was reset).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where, under the data directory, the credential lives.
pub const CREDENTIAL_FILE: &str = "credential.json";

/// What is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedCredential {
    /// The node name it was issued for.
    pub name: String,
    /// The node token.
    pub token: String,
}

/// Why the credential file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Reading or writing it failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a credential file.
    #[error("{path}: not a credential file: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// The credential saved under `data_dir` for node `name`, if any (one saved for another
/// name is ignored).
pub fn load(data_dir: &Path, name: &str) -> Result<Option<SavedCredential>, CredentialError> {
    let path = data_dir.join(CREDENTIAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CredentialError::Io { path, source }),
    };
    let saved: SavedCredential =
        serde_json::from_slice(&bytes).map_err(|e| CredentialError::Malformed {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    Ok((saved.name == name).then_some(saved))
}

/// Saves a credential atomically (a 0600 temporary file renamed over the old one).
pub fn save(data_dir: &Path, saved: &SavedCredential) -> Result<(), CredentialError> {
    let path = data_dir.join(CREDENTIAL_FILE);
    let tmp = data_dir.join(format!("{CREDENTIAL_FILE}.tmp"));
    let io = |source| CredentialError::Io {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec(saved).map_err(|e| CredentialError::Malformed {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// The node's current token, shared by heartbeats and blob fetches, renewed in place (and
/// on disk first) when a heartbeat's answer carries a renewal.
#[derive(Debug)]
pub struct CurrentCredential {
    data_dir: PathBuf,
    name: String,
    token: std::sync::RwLock<String>,
}

impl CurrentCredential {
    /// The credential `token` of node `name`, kept under `data_dir`.
    pub fn new(data_dir: &Path, name: &str, token: String) -> Self {
        CurrentCredential {
            data_dir: data_dir.to_path_buf(),
            name: name.to_string(),
            token: std::sync::RwLock::new(token),
        }
    }

    /// The token to present now.
    pub fn token(&self) -> String {
        match self.token.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Takes a renewed token: saved first (a restart presents it), then presented.
    pub fn renew(&self, token: String) -> Result<(), CredentialError> {
        save(
            &self.data_dir,
            &SavedCredential {
                name: self.name.clone(),
                token: token.clone(),
            },
        )?;
        match self.token.write() {
            Ok(mut t) => *t = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_credentials_are_private_and_bound_to_their_name() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "n1").unwrap().is_none());
        let saved = SavedCredential {
            name: "n1".into(),
            token: "t".into(),
        };
        save(dir.path(), &saved).unwrap();
        save(dir.path(), &saved).unwrap();
        let mode = std::fs::metadata(dir.path().join(CREDENTIAL_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(dir.path(), "n1").unwrap().unwrap().token, "t");
        assert!(load(dir.path(), "n2").unwrap().is_none());
        std::fs::write(dir.path().join(CREDENTIAL_FILE), b"{").unwrap();
        assert!(load(dir.path(), "n1").is_err());
    }

    #[test]
    fn a_renewal_is_saved_before_it_is_presented() {
        let dir = tempfile::tempdir().unwrap();
        let current = CurrentCredential::new(dir.path(), "n1", "old".into());
        assert_eq!(current.token(), "old");
        current.renew("new".into()).unwrap();
        assert_eq!(current.token(), "new");
        assert_eq!(load(dir.path(), "n1").unwrap().unwrap().token, "new");
    }
}
