//! The operator's key pair and `OperatorKey::sign_module`: what it signs verifies
//! against its certificate (and only that one), in the layout the kernel reads.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::elfgen;
use modvisor_modules::{
    vet, KernelModule, OperatorKey, Rejection, SignError, TrustStore, VettingPolicy,
};
use std::time::Duration;

const RELEASE: &str = "6.1.0-56-cloud-amd64";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn key(name: &str) -> OperatorKey {
    OperatorKey::generate(name, 2048, YEAR).unwrap()
}

#[test]
fn a_module_signed_with_an_operator_key_verifies_against_its_certificate_only() {
    let acme = key("acme modules");
    let other = key("other");
    let unsigned = elfgen::module("khttpd", RELEASE, "GPL", &[]);
    let signed = acme.sign_module(&unsigned).unwrap();
    assert!(signed.starts_with(&unsigned), "the signature is appended");
    let module = KernelModule::parse(&signed).unwrap();
    assert_eq!(module.signed_len() as usize, unsigned.len());

    let policy = VettingPolicy::for_tenant(RELEASE, ["khttpd"]);
    let trust = TrustStore::from_pem(acme.cert_pem().unwrap().as_bytes()).unwrap();
    let vetted = vet(&module, Some(module.sha256()), &policy, &trust).unwrap();
    let signer = vetted.signer.expect("a signer");
    assert!(format!("{signer:?}").contains("acme modules"), "{signer:?}");

    let foreign = TrustStore::from_pem(other.cert_pem().unwrap().as_bytes()).unwrap();
    match vet(&module, Some(module.sha256()), &policy, &foreign) {
        Err(Rejection::UntrustedSigner { .. }) => {}
        other => panic!("{other:?}"),
    }

    // One byte of the signed content changed: the signature no longer verifies.
    let mut tampered = signed.clone();
    tampered[100] ^= 1;
    let tampered = KernelModule::parse(&tampered).unwrap();
    match vet(&tampered, Some(tampered.sha256()), &policy, &trust) {
        Err(Rejection::BadSignature { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_round_trip_through_pem_and_must_match_their_certificate() {
    let acme = key("acme");
    let again = OperatorKey::from_pem(&acme.key_pem().unwrap(), &acme.cert_pem().unwrap()).unwrap();
    assert_eq!(again.subject(), "CN=acme");
    let other = key("other");
    match OperatorKey::from_pem(&acme.key_pem().unwrap(), &other.cert_pem().unwrap()) {
        Err(SignError::KeyMismatch) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        OperatorKey::from_pem("not a key", &acme.cert_pem().unwrap()),
        Err(SignError::Key(_))
    ));
}

#[test]
fn refusals_are_typed() {
    let acme = key("acme");
    let unsigned = elfgen::module("khttpd", RELEASE, "GPL", &[]);
    let signed = acme.sign_module(&unsigned).unwrap();
    assert!(matches!(
        acme.sign_module(&signed),
        Err(SignError::AlreadySigned)
    ));
    assert!(matches!(
        acme.sign_module(b"not an ELF file"),
        Err(SignError::NotAModule(_))
    ));
    assert!(matches!(
        OperatorKey::generate("acme", 1024, YEAR),
        Err(SignError::KeySize(1024))
    ));
    assert!(matches!(
        OperatorKey::generate("a,CN=evil", 2048, YEAR),
        Err(SignError::Name(_))
    ));
}
