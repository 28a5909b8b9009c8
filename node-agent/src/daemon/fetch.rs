//! Module images from the control plane: the catalog (name -> sha256) for this node's
//! kernel release, and blobs by sha256, cached on disk. Nothing here judges a module:
//! vetting compares every image with its pin.

use crate::modprobe::ModuleSource;
use modvisor_modules::{normalize_name, KernelModule};
use modvisor_node_api::ControlPlaneClient;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Why a module request's images could not be assembled.
#[derive(Debug)]
pub enum FetchError {
    /// The control plane could not be reached or refused.
    Unavailable(String),
    /// An image is not a kernel module (a rejection, not a failure).
    Malformed {
        /// The module.
        module: String,
        /// What is wrong.
        reason: String,
    },
}

/// Fetches what a module request needs.
pub struct Fetcher {
    /// The control plane's internal API.
    pub control_plane: ControlPlaneClient,
    /// This node's token.
    pub token: String,
    /// The node's guest kernel release.
    pub kernel_release: String,
    /// Blob cache directory.
    pub blobs: PathBuf,
}

impl Fetcher {
    fn catalog(&self) -> Result<BTreeMap<String, String>, String> {
        let c = self
            .control_plane
            .catalog(&self.token, &self.kernel_release)
            .map_err(|e| format!("fetching the catalog: {e}"))?;
        Ok(c.modules
            .into_iter()
            .map(|(k, v): (String, String)| (normalize_name(&k), v))
            .collect())
    }

    fn blob(&self, sha: &str) -> Result<Vec<u8>, String> {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("catalog gave a malformed sha256 {sha:?}"));
        }
        let path = self.blobs.join(sha);
        if let Ok(bytes) = std::fs::read(&path) {
            // Served as stored: vetting checks it against the pin.
            return Ok(bytes);
        }
        let bytes = self
            .control_plane
            .blob(&self.token, sha)
            .map_err(|e| format!("fetching blob {sha}: {e}"))?;
        let tmp = self.blobs.join(format!("{sha}.tmp"));
        let cached = std::fs::create_dir_all(&self.blobs)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = cached {
            // Served all the same; the next request fetches it again.
            tracing::warn!(blob = %sha, error = %e, "cannot cache a blob");
        }
        Ok(bytes)
    }

    /// A module source holding `root` and everything it depends on (as far as the
    /// catalog has them), each pinned to the catalog's sha256.
    pub fn closure(&self, root: &str) -> Result<ModuleSource, FetchError> {
        let catalog = self.catalog().map_err(FetchError::Unavailable)?;
        let mut source = ModuleSource::new();
        let mut todo = vec![normalize_name(root)];
        let mut seen = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) || seen.len() > 256 {
                continue;
            }
            let Some(sha) = catalog.get(&name) else {
                continue; // vetting reports what is missing
            };
            let bytes = self.blob(sha).map_err(FetchError::Unavailable)?;
            if let Ok(m) = KernelModule::parse(&bytes) {
                todo.extend(m.dependencies());
            }
            source
                .insert(bytes, Some(sha.clone()))
                .map_err(|e| FetchError::Malformed {
                    module: name.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(source)
    }
}
