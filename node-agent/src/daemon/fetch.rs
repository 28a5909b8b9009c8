//! Module images from the control plane, by sha256, cached on disk: the closure a load
//! request names (resolved and pinned by the control plane) becomes a module source, each
//! image parsed once. Nothing here judges a module: vetting compares every image with its
//! pin.

use crate::modprobe::ModuleSource;
use modvisor_modules::{normalize_name, TrustStore};
use modvisor_node_api::{ControlPlaneClient, PinnedModule, SignerCertificate, KERNEL_SIGNER};
use std::path::PathBuf;

/// The sha256 of `bytes`, lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Most modules one request may name.
pub const MAX_CLOSURE: usize = 256;

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
    /// This node's credential.
    pub credential: std::sync::Arc<super::credential::CurrentCredential>,
    /// Blob cache directory.
    pub blobs: PathBuf,
}

impl Fetcher {
    fn blob(&self, sha: &str) -> Result<Vec<u8>, String> {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("catalog gave a malformed sha256 {sha:?}"));
        }
        let path = self.blobs.join(sha);
        if let Ok(bytes) = std::fs::read(&path) {
            if sha256_hex(&bytes) == sha {
                return Ok(bytes);
            }
            // A cache that no longer matches its address is dropped and fetched again;
            // it would otherwise leave the module unloadable on this node for good.
            tracing::warn!(blob = %sha, path = %path.display(), "a cached blob does not match its sha256: dropped, fetching it again");
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(blob = %sha, error = %e, "cannot drop a corrupt cached blob");
            }
        }
        let bytes = self
            .control_plane
            .blob(&self.credential.token(), sha)
            .map_err(|e| format!("fetching blob {sha}: {e}"))?;
        if sha256_hex(&bytes) != sha {
            // Served, not cached: vetting refuses it against the pin.
            return Ok(bytes);
        }
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

    /// A module source holding every module of `closure`, each pinned to its sha256,
    /// parsed once, and trusting the signers it names: `kernel` (the guest kernel's keys,
    /// `kernel_trust`) and operator `certificates`.
    pub fn source(
        &self,
        closure: &[PinnedModule],
        certificates: &[SignerCertificate],
        kernel_trust: &TrustStore,
    ) -> Result<ModuleSource, FetchError> {
        if closure.len() > MAX_CLOSURE {
            return Err(FetchError::Malformed {
                module: closure.first().map(|m| m.name.clone()).unwrap_or_default(),
                reason: format!("a closure of {} modules, over {MAX_CLOSURE}", closure.len()),
            });
        }
        let mut source = ModuleSource::new();
        for m in closure {
            let trust = signers_trust(m, certificates, kernel_trust)?;
            let bytes = self.blob(&m.sha256).map_err(FetchError::Unavailable)?;
            let name = source
                .insert_signed_by(bytes, Some(m.sha256.clone()), trust)
                .map_err(|e| FetchError::Malformed {
                    module: m.name.clone(),
                    reason: e.to_string(),
                })?;
            // The pin, signers and licenses are the closure entry's: its image must be
            // the module the entry names.
            if name != normalize_name(&m.name) || !source.allow_licenses(&name, &m.licenses) {
                return Err(FetchError::Malformed {
                    module: m.name.clone(),
                    reason: format!("its image holds module {name}"),
                });
            }
        }
        Ok(source)
    }
}

/// Who may sign `m`: `None` for the guest kernel's keys alone (what the service vets
/// with), else a store of the certificates its signers name (and the kernel's keys if
/// it names `kernel`). A signer the request carries no certificate for is malformed.
fn signers_trust(
    m: &PinnedModule,
    certificates: &[SignerCertificate],
    kernel_trust: &TrustStore,
) -> Result<Option<TrustStore>, FetchError> {
    if m.signers.iter().all(|s| s == KERNEL_SIGNER) && !m.signers.is_empty() {
        return Ok(None);
    }
    let malformed = |reason: String| FetchError::Malformed {
        module: m.name.clone(),
        reason,
    };
    let mut trust = TrustStore::new();
    for signer in &m.signers {
        let add = if signer == KERNEL_SIGNER {
            kernel_trust.clone()
        } else {
            let cert = certificates
                .iter()
                .find(|c| &c.name == signer)
                .ok_or_else(|| {
                    malformed(format!("signer {signer} has no certificate in the request"))
                })?;
            TrustStore::from_pem(cert.certificate_pem.as_bytes())
                .map_err(|e| malformed(format!("signer {signer}'s certificate: {e}")))?
        };
        trust
            .extend(add)
            .map_err(|e| malformed(format!("signer {signer}: {e}")))?;
    }
    Ok(Some(trust))
}

#[cfg(test)]
mod tests {
    use super::*;
    use modvisor_modules::KernelModule;
    use std::collections::BTreeSet;
    use std::time::Duration;

    /// wireguard's closure from the real guest kernel, with its blobs already cached (so
    /// the unreachable control plane is never asked): the source parses each image once.
    #[test]
    fn a_closure_becomes_a_source_parsing_each_module_once() {
        let kernel = modvisor_guest::kernel::resolve(|_| {}).expect("guest kernel");
        let dir = tempfile::tempdir().unwrap();
        let mut closure = Vec::new();
        let mut todo = vec!["wireguard".to_string()];
        let mut seen = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let path = kernel.module_path(&name).expect("module in the tree");
            let bytes = std::fs::read(path).unwrap();
            let parsed = KernelModule::parse(&bytes).unwrap();
            todo.extend(parsed.dependencies());
            let sha = parsed.sha256().to_string();
            std::fs::write(dir.path().join(&sha), &bytes).unwrap();
            closure.push(PinnedModule {
                name,
                sha256: sha,
                signers: vec![KERNEL_SIGNER.into()],
                licenses: Vec::new(),
            });
        }
        assert!(closure.len() > 5, "{closure:?}");
        let fetcher = Fetcher {
            control_plane: ControlPlaneClient::new(
                "https://127.0.0.1:9",
                &rcgen::generate_simple_self_signed(vec!["control-plane".to_string()])
                    .unwrap()
                    .cert
                    .pem(),
                Duration::from_secs(1),
            )
            .unwrap(),
            credential: std::sync::Arc::new(super::super::credential::CurrentCredential::new(
                dir.path(),
                "test",
                String::new(),
            )),
            blobs: dir.path().to_path_buf(),
        };
        let source = fetcher.source(&closure, &[], &TrustStore::new()).unwrap();
        assert_eq!(source.len(), closure.len());
        assert_eq!(source.parses(), closure.len());

        // An entry whose image is another module: its pin, signers and licenses would
        // apply to the wrong module; refused.
        let mut misnamed = closure.clone();
        misnamed[0].name = format!("not_{}", misnamed[0].name);
        match fetcher.source(&misnamed, &[], &TrustStore::new()) {
            Err(FetchError::Malformed { reason, .. }) => {
                assert!(reason.contains("its image holds module"), "{reason}")
            }
            other => panic!("a misnamed closure entry was taken: {other:?}"),
        }

        // A cached blob that no longer matches its address is not used: it is dropped
        // and fetched again (here from a control plane that does not answer).
        let victim = &closure[0];
        let cached = dir.path().join(&victim.sha256);
        let mut bytes = std::fs::read(&cached).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&cached, &bytes).unwrap();
        match fetcher.source(&closure, &[], &TrustStore::new()) {
            Err(FetchError::Unavailable(e)) => assert!(e.contains(&victim.sha256), "{e}"),
            other => panic!("a corrupt cache was used: {other:?}"),
        }
        assert!(!cached.exists(), "the corrupt copy is dropped");
    }
}
