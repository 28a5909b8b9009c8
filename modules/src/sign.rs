//! Signing modules with an operator's key, in the kernel's own format (what
//! `scripts/sign-file` writes): the module, a detached PKCS#7 `SignedData` over it (one
//! signer by issuer and serial, SHA-256, RSA PKCS#1 v1.5, no signed attributes, no
//! certificates), `struct module_signature` and the marker. Also the operator's key pair:
//! an RSA key and a self-signed X.509 certificate for it, as the kernel's
//! `certs/default_x509.genkey` asks (code signing only).
//!
//! Pure like the rest of the crate: keys, certificates and modules come and go as bytes.

use crate::module::KernelModule;
use crate::signature::MODULE_SIG_MARKER;
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Encode, EncodePem};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::Digest;
use std::str::FromStr;
use std::time::Duration;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;
use x509_cert::Certificate;

/// Smallest and largest operator key sizes, in bits (the kernel's own keys are 4096).
pub const OPERATOR_KEY_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// Signing or making a key failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The input is not a module this crate can parse.
    #[error("not a kernel module: {0}")]
    NotAModule(#[from] crate::ParseError),
    /// The module carries a signature already (sign the unsigned build).
    #[error("the module is signed already; sign the unsigned build")]
    AlreadySigned,
    /// The private key cannot be read.
    #[error("the private key: {0}")]
    Key(String),
    /// The certificate cannot be read, or is not one this signer can use.
    #[error("the certificate: {0}")]
    Certificate(String),
    /// The key is not the certificate's.
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    /// A key size outside [`OPERATOR_KEY_BITS`].
    #[error("{0}-bit keys are not offered: 2048 to 4096 bits")]
    KeySize(usize),
    /// A name that cannot be a certificate subject.
    #[error("the certificate's name: {0}")]
    Name(String),
    /// Building the signature or the certificate failed.
    #[error("encoding: {0}")]
    Encoding(String),
}

/// An operator's module-signing key and its certificate.
pub struct OperatorKey {
    key: RsaPrivateKey,
    cert: Certificate,
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorKey")
            .field("subject", &self.cert.tbs_certificate.subject.to_string())
            .finish_non_exhaustive()
    }
}

impl OperatorKey {
    /// A new RSA key of `bits` and a self-signed certificate for it, named
    /// `CN=<common_name>`, valid for `valid_for` from now.
    pub fn generate(
        common_name: &str,
        bits: usize,
        valid_for: Duration,
    ) -> Result<Self, SignError> {
        if !OPERATOR_KEY_BITS.contains(&bits) {
            return Err(SignError::KeySize(bits));
        }
        if common_name.is_empty()
            || common_name.len() > 64
            || !common_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " -_.".contains(c))
        {
            return Err(SignError::Name(format!(
                "{common_name:?}: 1 to 64 of A-Z a-z 0-9 space - _ ."
            )));
        }
        let subject = Name::from_str(&format!("CN={common_name}"))
            .map_err(|e| SignError::Name(e.to_string()))?;
        let mut rng = rsa::rand_core::OsRng;
        let key = RsaPrivateKey::new(&mut rng, bits).map_err(|e| SignError::Key(e.to_string()))?;
        let public = SubjectPublicKeyInfoOwned::from_key(RsaPublicKey::from(&key))
            .map_err(|e| SignError::Encoding(e.to_string()))?;
        let mut serial = [0u8; 16];
        rsa::rand_core::RngCore::fill_bytes(&mut rng, &mut serial);
        // A positive INTEGER whose first byte is not zero.
        serial[0] = (serial[0] & 0x7f) | 0x01;
        let serial = SerialNumber::new(&serial).map_err(|e| SignError::Encoding(e.to_string()))?;
        let validity =
            Validity::from_now(valid_for).map_err(|e| SignError::Encoding(e.to_string()))?;
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
        let profile = Profile::Leaf {
            issuer: subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        let mut builder =
            CertificateBuilder::new(profile, serial, validity, subject, public, &signer)
                .map_err(|e| SignError::Encoding(e.to_string()))?;
        builder
            .add_extension(&ExtendedKeyUsage(vec![
                const_oid::db::rfc5280::ID_KP_CODE_SIGNING,
            ]))
            .map_err(|e| SignError::Encoding(e.to_string()))?;
        let cert = builder
            .build::<rsa::pkcs1v15::Signature>()
            .map_err(|e| SignError::Encoding(e.to_string()))?;
        Ok(OperatorKey { key, cert })
    }

    /// The key (PKCS#8 PEM) and its certificate (PEM), checked to belong together.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, SignError> {
        let key =
            RsaPrivateKey::from_pkcs8_pem(key_pem).map_err(|e| SignError::Key(e.to_string()))?;
        let mut certs = Certificate::load_pem_chain(cert_pem.as_bytes())
            .map_err(|e| SignError::Certificate(e.to_string()))?;
        if certs.len() != 1 {
            return Err(SignError::Certificate(format!(
                "{} certificates in the file; give exactly one",
                certs.len()
            )));
        }
        let cert = certs.remove(0);
        let ours = RsaPublicKey::from(&key)
            .to_public_key_der()
            .map_err(|e| SignError::Encoding(e.to_string()))?;
        let theirs = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| SignError::Certificate(e.to_string()))?;
        if ours.as_bytes() != theirs.as_slice() {
            return Err(SignError::KeyMismatch);
        }
        Ok(OperatorKey { key, cert })
    }

    /// The private key, PKCS#8 PEM (keep it in a 0600 file).
    pub fn key_pem(&self) -> Result<String, SignError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|s| s.to_string())
            .map_err(|e| SignError::Encoding(e.to_string()))
    }

    /// The certificate, PEM (what an admin adds to the trust store).
    pub fn cert_pem(&self) -> Result<String, SignError> {
        self.cert
            .to_pem(LineEnding::LF)
            .map_err(|e| SignError::Encoding(e.to_string()))
    }

    /// The certificate's subject, e.g. `CN=acme modules`.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// `ko` (an unsigned module) with this key's signature appended.
    pub fn sign_module(&self, ko: &[u8]) -> Result<Vec<u8>, SignError> {
        let module = KernelModule::parse(ko)?;
        if module.signature().is_some() {
            return Err(SignError::AlreadySigned);
        }
        let digest = sha2::Sha256::digest(ko);
        let signature = self
            .key
            .sign(Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
            .map_err(|e| SignError::Encoding(e.to_string()))?;
        let cms = pkcs7_detached(&self.cert, &signature)?;
        Ok(append_signature(ko, &cms))
    }
}

/// The kernel's detached PKCS#7 over SHA-256 with `signature`, naming `cert`'s issuer and
/// serial.
fn pkcs7_detached(cert: &Certificate, signature: &[u8]) -> Result<Vec<u8>, SignError> {
    let enc = |e: der::Error| SignError::Encoding(e.to_string());
    let digest_alg = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: digest_alg.clone(),
        signed_attrs: None,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: rfc5912::RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        signature: OctetString::new(signature).map_err(enc)?,
        unsigned_attrs: None,
    };
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![digest_alg]).map_err(enc)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: None,
        },
        certificates: None,
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer]).map_err(enc)?,
    };
    ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(enc)?,
    }
    .to_der()
    .map_err(enc)
}

/// `content` + `cms` + `struct module_signature` (PKCS#7 id type, `sig_len` big-endian) +
/// the marker: the layout `scripts/sign-file` writes.
pub fn append_signature(content: &[u8], cms: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + cms.len() + 40);
    out.extend_from_slice(content);
    out.extend_from_slice(cms);
    // algo, hash, id_type = PKEY_ID_PKCS7, signer_len, key_id_len, pad[3].
    out.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
    // `sig_len` is a u32: a CMS larger than 4 GiB cannot come from a module of at most
    // MAX_MODULE_BYTES, so the cast cannot truncate.
    out.extend_from_slice(&(cms.len() as u32).to_be_bytes());
    out.extend_from_slice(MODULE_SIG_MARKER);
    out
}
