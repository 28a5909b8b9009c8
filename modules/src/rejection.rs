//! Why a module may not be loaded: one typed, serializable reason, naming the module.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A vetting failure. Serialized with a `kind` tag (`{"kind":"sha256_mismatch",
/// "module":"wireguard",...}`); `Display` is a one-line human message that names the
/// module.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rejection {
    /// The file is not a well-formed x86-64 kernel module.
    #[error("module {module}: malformed: {reason}")]
    Malformed {
        /// The module (its name, or the file's name when it could not be parsed).
        module: String,
        /// What is wrong.
        reason: String,
    },
    /// The module is on the deny-list.
    #[error("module {module} is denied by policy")]
    Denied {
        /// The module.
        module: String,
    },
    /// The module is not approved for this tenant.
    #[error("module {module} is not approved for this tenant")]
    NotApproved {
        /// The module.
        module: String,
    },
    /// The catalog holds no module of that name.
    #[error("module {module} is not in the catalog")]
    NotInCatalog {
        /// The module.
        module: String,
    },
    /// The file exceeds the policy's size limit.
    #[error("module {module} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The module.
        module: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The policy requires a catalog pin and there is none.
    #[error("module {module} has no SHA-256 pin in the catalog")]
    NotPinned {
        /// The module.
        module: String,
    },
    /// The file's SHA-256 is not the catalog's pin.
    #[error("module {module}: SHA-256 {actual} does not match the pinned {expected}")]
    Sha256Mismatch {
        /// The module.
        module: String,
        /// The pin.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The module carries no signature and the policy requires one.
    #[error("module {module} is not signed")]
    Unsigned {
        /// The module.
        module: String,
    },
    /// The signature is malformed, unsupported, or does not verify.
    #[error("module {module}: bad signature: {reason}")]
    BadSignature {
        /// The module.
        module: String,
        /// What is wrong.
        reason: String,
    },
    /// The signature names a certificate that is not trusted.
    #[error("module {module} is signed by an untrusted key: {signer}")]
    UntrustedSigner {
        /// The module.
        module: String,
        /// The signer as the signature names it.
        signer: String,
    },
    /// The module was built for another kernel release.
    #[error("module {module} was built for kernel {}, not {kernel} (vermagic {vermagic:?})", vermagic.split_whitespace().next().unwrap_or("(none)"))]
    VermagicMismatch {
        /// The module.
        module: String,
        /// The module's whole `vermagic` (empty when it has none).
        vermagic: String,
        /// The target kernel release.
        kernel: String,
    },
    /// The license is not GPL-compatible and not allowed by policy.
    #[error("module {module}: license {} is not allowed", license.as_deref().map(|l| format!("{l:?}")).unwrap_or_else(|| "(none)".into()))]
    LicenseNotAllowed {
        /// The module.
        module: String,
        /// The offending `license=` value; `None` when the module declares none.
        license: Option<String>,
    },
    /// A module named in `depends=` is not in the catalog.
    #[error("module {module} depends on {dependency}, which is not in the catalog")]
    MissingDependency {
        /// The module whose `depends=` names it.
        module: String,
        /// The missing dependency.
        dependency: String,
    },
    /// The dependencies form a cycle.
    #[error("module {module}: dependency cycle {}", cycle.join(" -> "))]
    DependencyCycle {
        /// The module being resolved.
        module: String,
        /// The cycle, first name repeated at the end (`a -> b -> a`).
        cycle: Vec<String>,
    },
    /// A dependency failed vetting.
    #[error("module {module}: dependency {dependency} rejected: {reason}")]
    DependencyRejected {
        /// The module being vetted.
        module: String,
        /// The dependency that failed.
        dependency: String,
        /// Why it failed.
        reason: Box<Rejection>,
    },
}

impl Rejection {
    /// The stable `snake_case` kind, as in the serialized `kind` tag (for example to build
    /// `urn:modvisor:problem:module-<kind>`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::Denied { .. } => "denied",
            Self::NotApproved { .. } => "not_approved",
            Self::NotInCatalog { .. } => "not_in_catalog",
            Self::TooLarge { .. } => "too_large",
            Self::NotPinned { .. } => "not_pinned",
            Self::Sha256Mismatch { .. } => "sha256_mismatch",
            Self::Unsigned { .. } => "unsigned",
            Self::BadSignature { .. } => "bad_signature",
            Self::UntrustedSigner { .. } => "untrusted_signer",
            Self::VermagicMismatch { .. } => "vermagic_mismatch",
            Self::LicenseNotAllowed { .. } => "license_not_allowed",
            Self::MissingDependency { .. } => "missing_dependency",
            Self::DependencyCycle { .. } => "dependency_cycle",
            Self::DependencyRejected { .. } => "dependency_rejected",
        }
    }

    /// The module the rejection is about.
    pub fn module(&self) -> &str {
        match self {
            Self::Malformed { module, .. }
            | Self::Denied { module }
            | Self::NotApproved { module }
            | Self::NotInCatalog { module }
            | Self::TooLarge { module, .. }
            | Self::NotPinned { module }
            | Self::Sha256Mismatch { module, .. }
            | Self::Unsigned { module }
            | Self::BadSignature { module, .. }
            | Self::UntrustedSigner { module, .. }
            | Self::VermagicMismatch { module, .. }
            | Self::LicenseNotAllowed { module, .. }
            | Self::MissingDependency { module, .. }
            | Self::DependencyCycle { module, .. }
            | Self::DependencyRejected { module, .. } => module,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_a_kind_tag_and_round_trips() {
        let r = Rejection::DependencyRejected {
            module: "wireguard".into(),
            dependency: "udp_tunnel".into(),
            reason: Box::new(Rejection::Sha256Mismatch {
                module: "udp_tunnel".into(),
                expected: "aa".into(),
                actual: "bb".into(),
            }),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kind"], "dependency_rejected");
        assert_eq!(json["reason"]["kind"], "sha256_mismatch");
        assert_eq!(json["kind"], r.kind());
        let back: Rejection = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            r.to_string(),
            "module wireguard: dependency udp_tunnel rejected: module udp_tunnel: SHA-256 bb does not match the pinned aa"
        );
    }

    #[test]
    fn every_kind_matches_serde() {
        let all = [
            Rejection::Denied { module: "m".into() },
            Rejection::NotInCatalog { module: "m".into() },
            Rejection::LicenseNotAllowed {
                module: "m".into(),
                license: None,
            },
            Rejection::DependencyCycle {
                module: "a".into(),
                cycle: vec!["a".into(), "b".into(), "a".into()],
            },
        ];
        for r in all {
            assert_eq!(serde_json::to_value(&r).unwrap()["kind"], r.kind());
            assert_eq!(
                r.module(),
                if r.kind() == "dependency_cycle" {
                    "a"
                } else {
                    "m"
                }
            );
        }
        assert_eq!(
            Rejection::LicenseNotAllowed {
                module: "m".into(),
                license: None
            }
            .to_string(),
            "module m: license (none) is not allowed"
        );
    }
}
