//! Signs module content the way `scripts/sign-file` does, with the test-only key in
//! `tests/data`, so tests can make modules from a foreign signer and odd signatures.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::Digest;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

/// The test signer's certificate (PEM).
pub const TEST_CERT_PEM: &str = include_str!("../data/test-signer.cert.pem");
const TEST_KEY_PEM: &str = include_str!("../data/test-signer.key.pem");

/// Which digest to sign with.
#[derive(Clone, Copy, Debug)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
    /// Declares SHA-1 (digest bytes are SHA-256; verification must refuse before use).
    Sha1,
}

/// How to build the signature.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub hash: Hash,
    /// Identify the signer by subject key id instead of issuer and serial.
    pub by_key_id: bool,
    /// Add a (content-type) signed attribute, which the kernel refuses.
    pub signed_attrs: bool,
    /// Use sha*WithRSAEncryption instead of rsaEncryption as the signature algorithm.
    pub combined_oid: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hash: Hash::Sha256,
            by_key_id: false,
            signed_attrs: false,
            combined_oid: false,
        }
    }
}

fn cert() -> Certificate {
    Certificate::load_pem_chain(TEST_CERT_PEM.as_bytes())
        .unwrap()
        .remove(0)
}

/// `content` with a PKCS#7 signature by the test key appended, as sign-file lays it out.
pub fn sign(content: &[u8], opts: Options) -> Vec<u8> {
    let key = RsaPrivateKey::from_pkcs8_pem(TEST_KEY_PEM).unwrap();
    let cert = cert();
    let (digest_oid, sig_oid, digest, scheme) = match opts.hash {
        Hash::Sha256 => (
            rfc5912::ID_SHA_256,
            rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            sha2::Sha256::digest(content).to_vec(),
            Pkcs1v15Sign::new::<sha2::Sha256>(),
        ),
        Hash::Sha384 => (
            rfc5912::ID_SHA_384,
            rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
            sha2::Sha384::digest(content).to_vec(),
            Pkcs1v15Sign::new::<sha2::Sha384>(),
        ),
        Hash::Sha512 => (
            rfc5912::ID_SHA_512,
            rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
            sha2::Sha512::digest(content).to_vec(),
            Pkcs1v15Sign::new::<sha2::Sha512>(),
        ),
        Hash::Sha1 => (
            rfc5912::ID_SHA_1,
            rfc5912::SHA_1_WITH_RSA_ENCRYPTION,
            sha2::Sha256::digest(content).to_vec(),
            Pkcs1v15Sign::new::<sha2::Sha256>(),
        ),
    };
    let signature = key.sign(scheme, &digest).unwrap();
    let sid = if opts.by_key_id {
        let ext = cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
            .expect("test cert has a subject key identifier");
        SignerIdentifier::SubjectKeyIdentifier(
            SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).unwrap(),
        )
    } else {
        SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        })
    };
    let signed_attrs = opts.signed_attrs.then(|| {
        let value = Any::encode_from(&rfc5911::ID_DATA).unwrap();
        SetOfVec::try_from(vec![Attribute {
            oid: rfc5911::ID_CONTENT_TYPE,
            values: SetOfVec::try_from(vec![value]).unwrap(),
        }])
        .unwrap()
    });
    let digest_alg = AlgorithmIdentifierOwned {
        oid: digest_oid,
        parameters: None,
    };
    let signer = SignerInfo {
        version: if opts.by_key_id {
            CmsVersion::V3
        } else {
            CmsVersion::V1
        },
        sid,
        digest_alg: digest_alg.clone(),
        signed_attrs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: if opts.combined_oid {
                sig_oid
            } else {
                rfc5912::RSA_ENCRYPTION
            },
            parameters: Some(Any::null()),
        },
        signature: OctetString::new(signature).unwrap(),
        unsigned_attrs: None,
    };
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![digest_alg]).unwrap(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: None,
        },
        certificates: None,
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer]).unwrap(),
    };
    let info = ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: Any::encode_from(&signed).unwrap(),
    };
    append_signature(content, &info.to_der().unwrap())
}

pub use modvisor_modules::append_signature;

/// The unsigned content of a signed module file.
pub fn strip_signature(file: &[u8]) -> Vec<u8> {
    let m = modvisor_modules::KernelModule::parse(file).unwrap();
    file[..m.signed_len() as usize].to_vec()
}
