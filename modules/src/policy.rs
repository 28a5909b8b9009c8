//! Vetting one parsed module against a tenant's policy.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::module::{normalize_name, KernelModule};
use crate::rejection::Rejection;
use crate::signature::{SignatureError, Signer};
use crate::trust::TrustStore;

/// The licenses the kernel treats as GPL-compatible (`license_is_gpl_compatible()`).
pub const GPL_COMPATIBLE_LICENSES: [&str; 6] = [
    "GPL",
    "GPL v2",
    "GPL and additional rights",
    "Dual BSD/GPL",
    "Dual MIT/GPL",
    "Dual MPL/GPL",
];

/// Default size limit: 32 MiB (Debian's largest module is about 4 MiB).
pub const DEFAULT_MAX_SIZE: u64 = 32 << 20;

/// What a module must satisfy to be loaded into a tenant's guest kernel.
///
/// Names in `approved` and `denied` are compared after [`normalize_name`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VettingPolicy {
    /// Release of the target guest kernel (`uname -r`), which must equal the first word of
    /// the module's `vermagic`. `None` skips the check (inspection only).
    pub kernel_release: Option<String>,
    /// Modules approved for this tenant. `None` skips the check (inspection only).
    pub approved: Option<BTreeSet<String>>,
    /// Modules never allowed, whatever else says.
    #[serde(default)]
    pub denied: BTreeSet<String>,
    /// Reject modules whose catalog entry has no SHA-256 pin.
    #[serde(default = "yes")]
    pub require_pin: bool,
    /// Largest module file, in bytes.
    #[serde(default = "default_max_size")]
    pub max_size: u64,
    /// Licenses allowed beyond [`GPL_COMPATIBLE_LICENSES`].
    #[serde(default)]
    pub extra_licenses: BTreeSet<String>,
    /// Reject unsigned modules and modules signed by keys outside the trust store. A
    /// signature from a trusted key that does not verify is rejected either way.
    #[serde(default = "yes")]
    pub require_signature: bool,
}

fn yes() -> bool {
    true
}

fn default_max_size() -> u64 {
    DEFAULT_MAX_SIZE
}

impl VettingPolicy {
    /// The strict policy for a tenant: signed by a trusted key, pinned, built for
    /// `kernel_release`, GPL-compatible, at most [`DEFAULT_MAX_SIZE`], and in `approved`.
    pub fn for_tenant<I, S>(kernel_release: &str, approved: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        VettingPolicy {
            kernel_release: Some(kernel_release.to_string()),
            approved: Some(
                approved
                    .into_iter()
                    .map(|n| normalize_name(n.as_ref()))
                    .collect(),
            ),
            denied: BTreeSet::new(),
            require_pin: true,
            max_size: DEFAULT_MAX_SIZE,
            extra_licenses: BTreeSet::new(),
            require_signature: true,
        }
    }

    /// The policy for inspecting a file outside any tenant: no approval list and no pin;
    /// signature, license and size are checked, and `vermagic` when a release is given.
    pub fn inspection(kernel_release: Option<&str>) -> Self {
        VettingPolicy {
            kernel_release: kernel_release.map(str::to_string),
            approved: None,
            denied: BTreeSet::new(),
            require_pin: false,
            max_size: DEFAULT_MAX_SIZE,
            extra_licenses: BTreeSet::new(),
            require_signature: true,
        }
    }

    /// This policy, also allowing `licenses`.
    pub fn with_licenses(&self, licenses: &[String]) -> Self {
        let mut p = self.clone();
        p.extra_licenses.extend(licenses.iter().cloned());
        p
    }

    fn license_allowed(&self, license: &str) -> bool {
        GPL_COMPATIBLE_LICENSES.contains(&license) || self.extra_licenses.contains(license)
    }
}

/// A module that passed vetting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VettedModule {
    /// The module's name.
    pub name: String,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Who signed it (`None` only when the policy allows unsigned modules).
    pub signer: Option<Signer>,
    /// Its direct dependencies, normalized and sorted.
    pub dependencies: Vec<String>,
}

/// The outcome of checking a module's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignatureVerdict {
    /// No signature.
    Unsigned,
    /// Verified against a trusted certificate.
    Verified {
        /// The certificate that verified it.
        signer: Signer,
    },
    /// Signed by a certificate not in the trust store.
    UntrustedSigner {
        /// The signer as the signature names it.
        signer: String,
    },
    /// Unsupported, refused, or failing verification.
    Invalid {
        /// Why.
        reason: String,
    },
}

/// Checks `module` against every rule of `policy` and returns every rejection, in the
/// order [`vet`] reports them, along with the signature verdict.
///
/// `pin` is the catalog's SHA-256 for this module (hex, any case).
pub fn check_all(
    module: &KernelModule,
    pin: Option<&str>,
    policy: &VettingPolicy,
    trust: &TrustStore,
) -> (Vec<Rejection>, SignatureVerdict) {
    let name = normalize_name(module.name());
    let module_name = || module.name().to_string();
    let mut out = Vec::new();
    if policy.denied.iter().any(|d| normalize_name(d) == name) {
        out.push(Rejection::Denied {
            module: module_name(),
        });
    }
    if let Some(approved) = &policy.approved {
        if !approved.iter().any(|a| normalize_name(a) == name) {
            out.push(Rejection::NotApproved {
                module: module_name(),
            });
        }
    }
    if module.file_len() > policy.max_size {
        out.push(Rejection::TooLarge {
            module: module_name(),
            size: module.file_len(),
            limit: policy.max_size,
        });
    }
    match pin {
        Some(expected) if !expected.eq_ignore_ascii_case(module.sha256()) => {
            out.push(Rejection::Sha256Mismatch {
                module: module_name(),
                expected: expected.to_ascii_lowercase(),
                actual: module.sha256().to_string(),
            });
        }
        None if policy.require_pin => out.push(Rejection::NotPinned {
            module: module_name(),
        }),
        _ => {}
    }
    let verdict = match module.signature() {
        None => SignatureVerdict::Unsigned,
        Some(sig) => match sig.verify(trust) {
            Ok(signer) => SignatureVerdict::Verified { signer },
            Err(SignatureError::UntrustedSigner { signer }) => {
                SignatureVerdict::UntrustedSigner { signer }
            }
            Err(SignatureError::Invalid { reason }) => SignatureVerdict::Invalid { reason },
        },
    };
    match &verdict {
        SignatureVerdict::Verified { .. } => {}
        SignatureVerdict::Unsigned if policy.require_signature => {
            out.push(Rejection::Unsigned {
                module: module_name(),
            });
        }
        SignatureVerdict::UntrustedSigner { signer } if policy.require_signature => {
            out.push(Rejection::UntrustedSigner {
                module: module_name(),
                signer: signer.clone(),
            });
        }
        SignatureVerdict::Invalid { reason } => out.push(Rejection::BadSignature {
            module: module_name(),
            reason: reason.clone(),
        }),
        SignatureVerdict::Unsigned | SignatureVerdict::UntrustedSigner { .. } => {}
    }
    if let Some(kernel) = &policy.kernel_release {
        if module.modinfo().vermagic_release() != Some(kernel.as_str()) {
            out.push(Rejection::VermagicMismatch {
                module: module_name(),
                vermagic: module.modinfo().vermagic.clone().unwrap_or_default(),
                kernel: kernel.clone(),
            });
        }
    }
    let licenses = &module.modinfo().licenses;
    if licenses.is_empty() {
        out.push(Rejection::LicenseNotAllowed {
            module: module_name(),
            license: None,
        });
    }
    if let Some(bad) = licenses.iter().find(|l| !policy.license_allowed(l)) {
        out.push(Rejection::LicenseNotAllowed {
            module: module_name(),
            license: Some(bad.clone()),
        });
    }
    (out, verdict)
}

/// Vets one module: `Ok` with what was established, or the first rejection (deny-list,
/// approval, size, pin, signature, vermagic, license, in that order).
///
/// `pin` is the catalog's SHA-256 for this module. Dependencies are not looked at: see
/// [`crate::vet_closure`].
pub fn vet(
    module: &KernelModule,
    pin: Option<&str>,
    policy: &VettingPolicy,
    trust: &TrustStore,
) -> Result<VettedModule, Rejection> {
    let (rejections, verdict) = check_all(module, pin, policy, trust);
    if let Some(first) = rejections.into_iter().next() {
        return Err(first);
    }
    Ok(VettedModule {
        name: module.name().to_string(),
        sha256: module.sha256().to_string(),
        size: module.file_len(),
        signer: match verdict {
            SignatureVerdict::Verified { signer } => Some(signer),
            _ => None,
        },
        dependencies: module.dependencies(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_json_defaults_are_strict() {
        let p: VettingPolicy = serde_json::from_str(
            r#"{"kernel_release":"6.1.0-56-cloud-amd64","approved":["tcp-bbr"]}"#,
        )
        .unwrap();
        assert!(p.require_pin && p.require_signature);
        assert_eq!(p.max_size, DEFAULT_MAX_SIZE);
        assert!(serde_json::from_str::<VettingPolicy>(
            r#"{"kernel_release":null,"approved":null,"typo":1}"#
        )
        .is_err());
    }

    #[test]
    fn gpl_list_is_the_kernels() {
        let p = VettingPolicy::inspection(None);
        assert!(p.license_allowed("Dual MIT/GPL"));
        assert!(!p.license_allowed("Proprietary"));
        assert!(!p.license_allowed("GPL v3"));
        let mut q = p.clone();
        q.extra_licenses.insert("Proprietary".into());
        assert!(q.license_allowed("Proprietary"));
    }
}
