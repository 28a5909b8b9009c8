//! A parsed kernel module file: ELF checks, `.modinfo`, the appended signature and the
//! file's SHA-256, from one pass over the bytes.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::elf;
use crate::error::ParseError;
use crate::modinfo::ModInfo;
use crate::signature::{self, DigestAlgorithm, ModuleSignature};

/// Largest module file accepted by [`KernelModule::parse`] (Debian's largest module,
/// `xfs.ko`, is about 4 MiB).
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// The canonical form of a module name: `-` becomes `_`, as the kernel does
/// (`wireguard`, `ip6_udp_tunnel`; file names may say `ip6-udp-tunnel`).
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// A kernel module (`.ko`) file, parsed.
///
/// A value exists only as the faithful parse of some bytes: its fields are read through
/// methods and its signature is bound to the digest of exactly the content it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelModule {
    name: String,
    modinfo: ModInfo,
    signature: Option<ModuleSignature>,
    file_len: u64,
    signed_len: u64,
    sha256: String,
}

impl KernelModule {
    /// Parses a module file: an ELF64 little-endian x86-64 relocatable object with
    /// `.modinfo` and `.gnu.linkonce.this_module`, optionally followed by a PKCS#7
    /// signature. Never panics; input larger than [`MAX_MODULE_BYTES`] is refused before
    /// anything is read.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(ParseError::TooLarge {
                size: bytes.len() as u64,
                limit: MAX_MODULE_BYTES as u64,
            });
        }
        let trailer = signature::parse_trailer(bytes)?;
        let signed_len = trailer.map_or(bytes.len(), |t| t.signed_len);
        let (content, appended) = bytes.split_at(signed_len);
        let parsed = elf::parse(content)?;
        let modinfo = ModInfo::parse(parsed.modinfo)?;
        let name = parsed.this_module_name;
        if let Some(declared) = &modinfo.name {
            if *declared != name {
                return Err(ParseError::ModInfo(format!(
                    "name={declared} differs from the struct module name {name:?} the kernel would use"
                )));
            }
        }
        let mut signature = match trailer {
            Some(t) => Some(ModuleSignature::parse_cms(
                appended.get(..t.cms_len).unwrap_or_default(),
            )?),
            None => None,
        };
        let mut hasher = Sha256::new();
        hasher.update(content);
        if let Some(sig) = &mut signature {
            sig.content_digest = match sig.digest() {
                Some(DigestAlgorithm::Sha256) => hasher.clone().finalize().to_vec(),
                Some(other) => other.digest(content),
                None => Vec::new(),
            };
        }
        hasher.update(appended);
        Ok(KernelModule {
            name,
            modinfo,
            signature,
            file_len: bytes.len() as u64,
            signed_len: signed_len as u64,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// The module's name as the kernel knows it (`struct module.name`, which `name=` in
    /// `.modinfo` must equal when present).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The decoded `.modinfo`.
    pub fn modinfo(&self) -> &ModInfo {
        &self.modinfo
    }

    /// The appended signature, if the file has one.
    pub fn signature(&self) -> Option<&ModuleSignature> {
        self.signature.as_ref()
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes covered by the signature (the whole file when unsigned).
    pub fn signed_len(&self) -> u64 {
        self.signed_len
    }

    /// SHA-256 of the whole file, lowercase hex (what catalog pins compare against).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The modules this one depends on: normalized, sorted, without duplicates.
    pub fn dependencies(&self) -> Vec<String> {
        let mut deps: Vec<String> = self
            .modinfo
            .depends
            .iter()
            .map(|d| normalize_name(d))
            .collect();
        deps.sort();
        deps.dedup();
        deps
    }
}
