//! An operator's own module in real guests: khttpd built against the guest kernel's own
//! headers, signed with an operator key, vetted against that operator's certificate. A
//! standard guest's kernel still refuses it (it cannot verify the key); an
//! `operator-modules` guest loads it with its parameters, shows it tainted (O, E), serves
//! HTTP from kernel space, and unloads it cleanly.

use crate::tenant::sh;
use modvisor_modules::{OperatorKey, Rejection, TrustStore, VettingPolicy};
use modvisor_node_agent::modprobe::{ModprobeService, ModuleOutcome, ModuleSource};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../modules/sample/khttpd");

/// khttpd built for `release` and signed with a new operator key.
fn built_and_signed(release: &str) -> (Vec<u8>, OperatorKey) {
    let cache = modvisor_guest::kernel::cache_dir();
    let headers = modvisor_guest::headers::fetch(&cache, release, |m| eprintln!("{m}"))
        .expect("the guest kernel's headers");
    let dir = tempfile::tempdir().unwrap();
    let built = modvisor_guest::module_build::build(
        std::path::Path::new(SAMPLE),
        &headers,
        &dir.path().join("build"),
        &dir.path().join("out"),
    )
    .expect("khttpd builds");
    let key =
        OperatorKey::generate("guest test operator", 2048, Duration::from_secs(86400)).unwrap();
    let signed = key
        .sign_module(&std::fs::read(&built[0].path).unwrap())
        .unwrap();
    (signed, key)
}

#[test]
fn an_operator_signed_module_serves_http_only_from_an_operator_modules_guest() {
    let kernel = crate::support::guest_kernel();
    let (signed, key) = built_and_signed(&kernel.release);
    let operator = TrustStore::from_pem(key.cert_pem().unwrap().as_bytes()).unwrap();
    let kernel_keys = crate::support::kernel_trust(&kernel);
    let pin = crate::support::sha256_hex(&signed);
    let policy = VettingPolicy::for_tenant(&kernel.release, ["khttpd"]);

    // Against the guest kernel's keys alone, vetting refuses it: nothing is sent.
    let by_kernel = crate::support::source_of(&signed, &pin);
    match ModprobeService::new(&by_kernel, &kernel_keys).vet("khttpd", &policy) {
        Err(Rejection::UntrustedSigner { .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut source = ModuleSource::new();
    source
        .insert_signed_by(signed.clone(), Some(pin), Some(operator))
        .unwrap();
    let service = ModprobeService::new(&source, &kernel_keys);
    assert!(service.vet("khttpd", &policy).is_ok());

    // A standard guest (module.sig_enforce=1, lockdown) refuses it even so.
    let mut g = crate::support::boot("operator-std");
    match g.client.load("khttpd", "", &signed, T) {
        Err(modvisor_node_agent::channel::ChannelError::Agent { errno, message, .. }) => {
            assert_eq!(errno, 129, "EKEYREJECTED: {message}")
        }
        other => panic!("a standard guest kernel must refuse an operator key: {other:?}"),
    }
    g.guest.stop(Duration::from_secs(5));

    // An operator-modules guest loads it, with its parameters.
    let mut g = crate::support::boot_with(
        "operator-mod",
        &modvisor_guest::cmdline::operator_modules_cmdline(),
    );
    let out = service.modprobe(
        &g.client,
        "khttpd",
        "port=8080 body=hello-from-the-kernel",
        &policy,
    );
    assert!(
        matches!(out.as_slice(), [ModuleOutcome::Loaded { .. }]),
        "{out:?}"
    );
    let listed = g.client.list(T).unwrap();
    let khttpd = listed.iter().find(|m| m.name == "khttpd").expect("listed");
    assert!(
        khttpd.taint.contains('O') && khttpd.taint.contains('E'),
        "taint {:?}",
        khttpd.taint
    );
    let (code, body, err) = sh(
        &g,
        "ip link set lo up; wget -q -O - http://127.0.0.1:8080/ && wget -q -O - http://127.0.0.1:8080/again",
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "hello-from-the-kernelhello-from-the-kernel");
    // The tenant cannot take it out itself (no CAP_SYS_MODULE); the host can.
    let (code, _, _) = sh(&g, "rmmod khttpd", b"");
    assert_ne!(code, 0, "tenant root unloaded a module");
    g.client.unload("khttpd", T).unwrap();
    let (code, _, _) = sh(&g, "wget -q -T 5 -O - http://127.0.0.1:8080/", b"");
    assert_ne!(code, 0, "khttpd still answers after its unload");
    g.guest.stop(Duration::from_secs(5));
}
