//! A complete, printable account of one module file: what `modvisor module inspect`
//! shows, as JSON (serde) or text (`Display`).

use std::fmt;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::deps::{load_order, ModuleCatalog};
use crate::modinfo::ModInfo;
use crate::module::KernelModule;
use crate::policy::{check_all, SignatureVerdict, VettingPolicy};
use crate::rejection::Rejection;
use crate::signature::SignerId;
use crate::trust::TrustStore;

/// What the signature of a module is and whether it verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureReport {
    /// The signer as the signature names it (`None` when unsigned).
    pub signer_id: Option<SignerId>,
    /// Digest algorithm named by the signature.
    pub digest_algorithm: Option<String>,
    /// Signature algorithm named by the signature.
    pub signature_algorithm: Option<String>,
    /// Bytes of the file covered by the signature.
    pub signed_len: u64,
    /// The outcome, tagged by `status`.
    #[serde(flatten)]
    pub verdict: SignatureVerdict,
}

/// The overall outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed.
    Accepted,
    /// The first failed check.
    Rejected {
        /// Why.
        reason: Rejection,
    },
}

/// Everything known about one module file after parsing and vetting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VettingReport {
    /// The label the caller gave the file (usually its path).
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// The module's name (`None` when the file did not parse).
    pub module: Option<String>,
    /// The decoded `.modinfo` (`None` when the file did not parse).
    pub modinfo: Option<ModInfo>,
    /// The signature (`None` when the file did not parse).
    pub signature: Option<SignatureReport>,
    /// Direct dependencies, normalized and sorted.
    pub dependencies: Vec<String>,
    /// Full load order, dependencies first, when a catalog was given and resolved.
    pub load_order: Option<Vec<String>>,
    /// Every failed check, in checking order.
    pub rejections: Vec<Rejection>,
    /// The verdict: accepted, or the first rejection.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Parses and vets `bytes` (the file labelled `file`) and describes the outcome.
///
/// `pin` is the catalog's SHA-256 for the module, if any; with a `catalog` the
/// dependency load order is resolved too (its failures become rejections; dependencies
/// themselves are not vetted here, see [`crate::vet_closure`]). Never fails: a file that
/// does not parse yields a report whose verdict is [`Rejection::Malformed`].
pub fn inspect(
    file: &str,
    bytes: &[u8],
    policy: &VettingPolicy,
    trust: &TrustStore,
    pin: Option<&str>,
    catalog: Option<&dyn ModuleCatalog>,
) -> VettingReport {
    let module = match KernelModule::parse(bytes) {
        Ok(module) => module,
        Err(e) => {
            let reason = Rejection::Malformed {
                module: file.to_string(),
                reason: e.to_string(),
            };
            return VettingReport {
                file: file.to_string(),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(bytes)),
                module: None,
                modinfo: None,
                signature: None,
                dependencies: Vec::new(),
                load_order: None,
                rejections: vec![reason.clone()],
                verdict: Verdict::Rejected { reason },
            };
        }
    };
    let (mut rejections, verdict) = check_all(&module, pin, policy, trust);
    let sig = module.signature();
    let signature = SignatureReport {
        signer_id: sig.map(|s| s.signer_id().clone()),
        digest_algorithm: sig.map(|s| s.digest_algorithm().to_string()),
        signature_algorithm: sig.map(|s| s.signature_algorithm().to_string()),
        signed_len: module.signed_len(),
        verdict,
    };
    let load_order = catalog.and_then(|c| match load_order(module.name(), c) {
        Ok(order) => Some(order),
        Err(rejection) => {
            rejections.push(rejection);
            None
        }
    });
    let verdict = match rejections.first() {
        Some(first) => Verdict::Rejected {
            reason: first.clone(),
        },
        None => Verdict::Accepted,
    };
    VettingReport {
        file: file.to_string(),
        size: module.file_len(),
        sha256: module.sha256().to_string(),
        module: Some(module.name().to_string()),
        dependencies: module.dependencies(),
        modinfo: Some(module.modinfo().clone()),
        signature: Some(signature),
        load_order,
        rejections,
        verdict,
    }
}

impl VettingReport {
    /// True when the module was accepted.
    pub fn accepted(&self) -> bool {
        self.verdict == Verdict::Accepted
    }
}

/// The text form: one `label  value` line per fact, then the verdict.
impl fmt::Display for VettingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, label: &str, value: &str| {
            writeln!(f, "{label:<12}{value}")
        };
        line(f, "file", &format!("{} ({} bytes)", self.file, self.size))?;
        line(f, "sha256", &self.sha256)?;
        if let Some(name) = &self.module {
            line(f, "module", name)?;
        }
        if let Some(info) = &self.modinfo {
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            line(f, "vermagic", opt(&info.vermagic).trim_end())?;
            line(f, "license", &info.licenses.join(", "))?;
            line(f, "description", &opt(&info.description))?;
            line(f, "author", &info.authors.join("; "))?;
            line(f, "srcversion", &opt(&info.srcversion))?;
            line(f, "intree", if info.intree { "yes" } else { "no" })?;
            line(f, "retpoline", if info.retpoline { "yes" } else { "no" })?;
            line(f, "aliases", &info.aliases.len().to_string())?;
            for p in &info.parameters {
                let kind = p.kind.as_deref().unwrap_or("?");
                let desc = p.description.as_deref().unwrap_or("");
                line(f, "parameter", &format!("{} ({kind}) {desc}", p.name))?;
            }
        }
        if self.modinfo.is_some() {
            let deps = if self.dependencies.is_empty() {
                "(none)".to_string()
            } else {
                self.dependencies.join(", ")
            };
            line(f, "depends", &deps)?;
        }
        if let Some(order) = &self.load_order {
            line(f, "load order", &order.join(" -> "))?;
        }
        if let Some(sig) = &self.signature {
            let text = match &sig.verdict {
                SignatureVerdict::Unsigned => "none".to_string(),
                SignatureVerdict::Verified { signer } => format!(
                    "verified, signed by \"{}\" ({}, serial {})",
                    signer.common_name.as_deref().unwrap_or(&signer.subject),
                    signer.digest,
                    signer.serial
                ),
                SignatureVerdict::UntrustedSigner { signer } => {
                    format!("NOT TRUSTED: signer {signer} is not in the trust store")
                }
                SignatureVerdict::Invalid { reason } => format!("INVALID: {reason}"),
            };
            line(f, "signature", &text)?;
        }
        match &self.verdict {
            Verdict::Accepted => line(f, "verdict", "accepted")?,
            Verdict::Rejected { reason } => {
                line(
                    f,
                    "verdict",
                    &format!("rejected ({}): {reason}", reason.kind()),
                )?;
                for other in self.rejections.iter().skip(1) {
                    line(f, "also", &other.to_string())?;
                }
            }
        }
        Ok(())
    }
}
