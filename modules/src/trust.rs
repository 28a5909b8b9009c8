//! The set of X.509 certificates whose keys may sign modules.
//!
//! A guest kernel trusts the certificates compiled into it (`system_certificate_list`);
//! [`TrustStore::from_kernel_image`] recovers them from the kernel image itself, so a
//! module is accepted exactly when that kernel would accept its signature. An
//! administrator's list can be added with [`TrustStore::extend`] or used alone.

use const_oid::db::{rfc4519, rfc5280, rfc5912};
use der::{Decode, Encode};
use rsa::pkcs1;
use rsa::{BigUint, RsaPublicKey};
use serde::{Deserialize, Serialize};
use x509_cert::ext::pkix::name::DirectoryString;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use crate::error::TrustError;
use crate::kernel_image;
use crate::signature::{DigestAlgorithm, RawSignerId, Signer};

/// Largest RSA modulus accepted, in bits (bounds verification cost).
pub const MAX_RSA_BITS: usize = 8192;
/// Most certificates one store holds.
pub const MAX_CERTIFICATES: usize = 1024;

/// A description of one trusted certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedCertificate {
    /// Subject (RFC 4514).
    pub subject: String,
    /// Subject common name.
    pub common_name: Option<String>,
    /// Issuer (RFC 4514).
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Subject key identifier, lowercase hex, if the certificate has one.
    pub subject_key_id: Option<String>,
    /// The key: `rsa-4096`, or why it cannot verify (`unsupported key ...`).
    pub key: String,
    /// SHA-256 of the certificate's DER encoding, lowercase hex (its fingerprint).
    pub sha256: String,
}

/// One trusted certificate with its comparable identifiers and parsed key.
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    der: Vec<u8>,
    issuer_der: Vec<u8>,
    serial: Vec<u8>,
    skid: Option<Vec<u8>>,
    key: Result<RsaPublicKey, String>,
    summary: TrustedCertificate,
}

impl Anchor {
    fn from_certificate(cert: &Certificate) -> Result<Self, TrustError> {
        let bad = |e: der::Error| TrustError::Certificate(e.to_string());
        let tbs = &cert.tbs_certificate;
        let der = cert.to_der().map_err(bad)?;
        let issuer_der = tbs.issuer.to_der().map_err(bad)?;
        let serial = tbs.serial_number.as_bytes().to_vec();
        let skid = tbs
            .extensions
            .iter()
            .flatten()
            .find(|ext| ext.extn_id == rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
            .and_then(|ext| SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).ok())
            .map(|skid| skid.0.as_bytes().to_vec());
        let key = rsa_key(cert);
        let summary = TrustedCertificate {
            subject: tbs.subject.to_string(),
            common_name: common_name(&tbs.subject),
            issuer: tbs.issuer.to_string(),
            serial: hex::encode(&serial),
            subject_key_id: skid.as_ref().map(hex::encode),
            key: match &key {
                Ok(k) => format!("rsa-{}", rsa::traits::PublicKeyParts::n(k).bits()),
                Err(reason) => reason.clone(),
            },
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)),
        };
        Ok(Anchor {
            der,
            issuer_der,
            serial,
            skid,
            key,
            summary,
        })
    }

    /// The RSA key, or why there is none.
    pub(crate) fn rsa_key(&self) -> Result<&RsaPublicKey, &str> {
        self.key.as_ref().map_err(String::as_str)
    }

    /// The certificate's description.
    pub(crate) fn summary(&self) -> &TrustedCertificate {
        &self.summary
    }

    /// The signer this certificate stands for.
    pub(crate) fn signer(&self, digest: DigestAlgorithm) -> Signer {
        Signer {
            subject: self.summary.subject.clone(),
            common_name: self.summary.common_name.clone(),
            serial: self.summary.serial.clone(),
            digest,
        }
    }

    fn matches(&self, id: &RawSignerId) -> bool {
        match id {
            RawSignerId::IssuerAndSerial { issuer_der, serial } => {
                self.issuer_der == *issuer_der && self.serial == *serial
            }
            RawSignerId::SubjectKeyId(skid) => self.skid.as_deref() == Some(skid.as_slice()),
        }
    }
}

fn rsa_key(cert: &Certificate) -> Result<RsaPublicKey, String> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != rfc5912::RSA_ENCRYPTION {
        return Err(format!(
            "unsupported key type {} (only RSA keys verify module signatures here)",
            spki.algorithm.oid
        ));
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| "unsupported key: public key bit string is not byte-aligned".to_string())?;
    let parsed = pkcs1::RsaPublicKey::from_der(bits)
        .map_err(|e| format!("unsupported key: bad RSA public key: {e}"))?;
    let n = BigUint::from_bytes_be(parsed.modulus.as_bytes());
    let e = BigUint::from_bytes_be(parsed.public_exponent.as_bytes());
    RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS).map_err(|e| format!("unsupported key: {e}"))
}

/// The first common name of `name`, if it decodes as a directory string.
fn common_name(name: &x509_cert::name::Name) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == rfc4519::CN)
        .and_then(|atv| DirectoryString::from_der(&atv.value.to_der().ok()?).ok())
        .map(|s| match s {
            DirectoryString::PrintableString(s) => s.to_string(),
            DirectoryString::TeletexString(s) => s.to_string(),
            DirectoryString::Utf8String(s) => s,
        })
}

/// Certificates whose keys may sign modules.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    anchors: Vec<Anchor>,
}

impl TrustStore {
    /// An empty store: every signature is from an untrusted signer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding the one DER-encoded certificate `der`.
    pub fn from_der(der: &[u8]) -> Result<Self, TrustError> {
        let cert =
            Certificate::from_der(der).map_err(|e| TrustError::Certificate(e.to_string()))?;
        let mut store = Self::new();
        store.add(&cert)?;
        Ok(store)
    }

    /// A store holding every certificate of a PEM file (one or more
    /// `-----BEGIN CERTIFICATE-----` blocks).
    pub fn from_pem(pem: &[u8]) -> Result<Self, TrustError> {
        let certs = Certificate::load_pem_chain(pem).map_err(|e| TrustError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TrustError::NoCertificates("the PEM file"));
        }
        let mut store = Self::new();
        for cert in &certs {
            store.add(cert)?;
        }
        Ok(store)
    }

    /// The certificates compiled into a kernel: unpacks a bzImage (or takes a vmlinux ELF
    /// as is) and keeps every DER `SEQUENCE` (`30 82 ..`) that parses as an X.509
    /// certificate.
    pub fn from_kernel_image(image: &[u8]) -> Result<Self, TrustError> {
        let vmlinux = kernel_image::decompress(image)?;
        let store = Self::from_embedded_certificates(&vmlinux)?;
        if store.is_empty() {
            return Err(TrustError::NoCertificates("the kernel image"));
        }
        Ok(store)
    }

    /// Guesses what `bytes` is (PEM, DER certificate, bzImage or vmlinux) and loads it:
    /// the one call behind a `--trust FILE` option.
    pub fn from_any(bytes: &[u8]) -> Result<Self, TrustError> {
        let trimmed = bytes.trim_ascii_start();
        if trimmed.starts_with(b"-----BEGIN") {
            return Self::from_pem(trimmed);
        }
        if bytes.starts_with(&[0x30, 0x82]) {
            if let Ok(store) = Self::from_der(bytes) {
                return Ok(store);
            }
        }
        if kernel_image::looks_like_kernel(bytes) {
            return Self::from_kernel_image(bytes);
        }
        Err(TrustError::Unrecognised)
    }

    /// Scans raw bytes for embedded DER certificates.
    fn from_embedded_certificates(bytes: &[u8]) -> Result<Self, TrustError> {
        let mut store = Self::new();
        let mut i = 0;
        while let Some(rel) = bytes.get(i..).and_then(find_cert_start) {
            let start = i + rel;
            let len = usize::from(u16::from_be_bytes([bytes[start + 2], bytes[start + 3]]));
            let end = start + 4 + len;
            match bytes.get(start..end).map(Certificate::from_der) {
                Some(Ok(cert)) => {
                    store.add(&cert)?;
                    i = end;
                }
                _ => i = start + 1,
            }
        }
        Ok(store)
    }

    fn add(&mut self, cert: &Certificate) -> Result<(), TrustError> {
        let anchor = Anchor::from_certificate(cert)?;
        if self.anchors.iter().any(|a| a.der == anchor.der) {
            return Ok(());
        }
        if self.anchors.len() >= MAX_CERTIFICATES {
            return Err(TrustError::Certificate(format!(
                "more than {MAX_CERTIFICATES} certificates"
            )));
        }
        self.anchors.push(anchor);
        Ok(())
    }

    /// Adds every certificate of `other` not already here (an administrator's list on top
    /// of the kernel's). To replace instead, use the other store alone.
    pub fn extend(&mut self, other: TrustStore) -> Result<(), TrustError> {
        for anchor in other.anchors {
            if self.anchors.iter().any(|a| a.der == anchor.der) {
                continue;
            }
            if self.anchors.len() >= MAX_CERTIFICATES {
                return Err(TrustError::Certificate(format!(
                    "more than {MAX_CERTIFICATES} certificates"
                )));
            }
            self.anchors.push(anchor);
        }
        Ok(())
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True when the store holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Descriptions of the certificates, in the order they were added.
    pub fn certificates(&self) -> Vec<TrustedCertificate> {
        self.anchors.iter().map(|a| a.summary.clone()).collect()
    }

    /// The certificates a signer identifier names.
    pub(crate) fn matching<'a>(&'a self, id: &'a RawSignerId) -> impl Iterator<Item = &'a Anchor> {
        self.anchors.iter().filter(move |a| a.matches(id))
    }
}

/// Offset of the next `30 82 LL LL 30 82` (a long SEQUENCE starting with a long
/// SEQUENCE, as every RSA certificate does) in `bytes`.
fn find_cert_start(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(6)
        .position(|w| w[0] == 0x30 && w[1] == 0x82 && w[4] == 0x30 && w[5] == 0x82)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(TrustStore::from_der(b"\x30\x82\x00\x01\x00").is_err());
        assert!(TrustStore::from_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert_eq!(
            TrustStore::from_any(b"hello").unwrap_err(),
            TrustError::Unrecognised
        );
    }

    #[test]
    fn scanning_garbage_finds_nothing_and_never_reads_past_the_end() {
        let mut bytes = vec![0u8; 64];
        bytes.extend_from_slice(&[0x30, 0x82, 0xff, 0xff, 0x30, 0x82]);
        let store = TrustStore::from_embedded_certificates(&bytes).unwrap();
        assert!(store.is_empty());
        let tail = [0x30, 0x82, 0x00];
        assert!(TrustStore::from_embedded_certificates(&tail)
            .unwrap()
            .is_empty());
    }
}
