//! The trust store's types: operator certificates an admin trusts to sign modules
//! (`/v1/admin/trust`), re-exported from [`crate::types`].

use crate::types::Timestamp;
use serde::{Deserialize, Serialize};

/// Body of `PUT /v1/admin/trust/{name}`: an operator's module-signing certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TrustBody {
    /// One X.509 certificate, PEM (`-----BEGIN CERTIFICATE-----`), with an RSA key (what
    /// `modvisor module keygen` writes).
    pub certificate_pem: String,
}

/// A certificate the admin trusts to sign modules, besides the guest kernel's own keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TrustEntry {
    /// Its name in the trust store (what module policies' `signers` name).
    pub name: String,
    /// The certificate's subject, e.g. `CN=acme modules`.
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// Its serial number, hex.
    pub serial: String,
    /// sha256 of its DER encoding, lowercase hex.
    pub sha256: String,
    /// Its key, e.g. `rsa-4096`.
    pub key: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// When it was added.
    pub added_at: Timestamp,
    /// The modules whose policy names it as a signer (it cannot be removed while any
    /// does).
    #[serde(default)]
    pub used_by: Vec<String>,
}
