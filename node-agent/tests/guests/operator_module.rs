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
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../modules/sample");

/// The sample in `modules/sample/<name>`, built for `release`, unsigned.
fn built(name: &str, release: &str) -> Vec<u8> {
    let cache = modvisor_guest::kernel::cache_dir();
    let headers = modvisor_guest::headers::fetch(&cache, release, |m| eprintln!("{m}"))
        .expect("the guest kernel's headers");
    let dir = tempfile::tempdir().unwrap();
    let built = modvisor_guest::module_build::build(
        &std::path::Path::new(SAMPLES).join(name),
        &headers,
        &dir.path().join("build"),
        &dir.path().join("out"),
    )
    .unwrap_or_else(|e| panic!("{name} builds: {e}"));
    std::fs::read(&built[0].path).unwrap()
}

/// khttpd built for `release` and signed with a new operator key.
fn built_and_signed(release: &str) -> (Vec<u8>, OperatorKey) {
    let key =
        OperatorKey::generate("guest test operator", 2048, Duration::from_secs(86400)).unwrap();
    let signed = key.sign_module(&built("khttpd", release)).unwrap();
    (signed, key)
}

/// A release of the same length as `release` that is not it (its ABI number changed).
fn other_release(release: &str) -> String {
    let (before, after) = release.split_once('-').expect("a Debian release");
    let (abi, flavour) = after.split_once('-').expect("a Debian release");
    let flipped: String = abi
        .chars()
        .map(|c| if c == '9' { '8' } else { '9' })
        .collect();
    format!("{before}-{flipped}-{flavour}")
}

/// `bytes` with the first `from` replaced by `to` (of the same length).
fn replace_once(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "{from} -> {to}");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("the release in the module");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
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

    // An operator-modules guest: builds that must not load are refused by vetting with
    // their typed reason, and nothing reaches the guest.
    let mut g = crate::support::boot_with(
        "operator-mod",
        &modvisor_guest::cmdline::operator_modules_cmdline(),
    );
    // What vetting says of `image` pinned to `pin`, signers as the operator's.
    let refusal = |image: Vec<u8>, pin: String| -> Rejection {
        let mut source = ModuleSource::new();
        let trust = TrustStore::from_pem(key.cert_pem().unwrap().as_bytes()).unwrap();
        source
            .insert_signed_by(image, Some(pin), Some(trust))
            .unwrap();
        let out =
            ModprobeService::new(&source, &kernel_keys).modprobe(&g.client, "khttpd", "", &policy);
        match out.as_slice() {
            [ModuleOutcome::Rejected { reason, .. }] => reason.clone(),
            other => panic!("not refused: {other:?}"),
        }
    };
    // Its bytes changed after the catalog pinned them.
    let mut changed = signed.clone();
    changed[200] ^= 1;
    let r = refusal(changed, crate::support::sha256_hex(&signed));
    assert!(matches!(r, Rejection::Sha256Mismatch { .. }), "{r:?}");
    // Built for another kernel release (its vermagic names one), signed all the same.
    let other = other_release(&kernel.release);
    let unsigned = crate::support::strip_signature(&signed);
    let retargeted = key
        .sign_module(&replace_once(
            &unsigned,
            &format!("vermagic={}", kernel.release),
            &format!("vermagic={other}"),
        ))
        .unwrap();
    let pin = crate::support::sha256_hex(&retargeted);
    let r = refusal(retargeted, pin);
    assert!(matches!(r, Rejection::VermagicMismatch { .. }), "{r:?}");
    assert!(!g.client.list(T).unwrap().iter().any(|m| m.name == "khttpd"));

    // The operator's build loads, with its parameters.
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
    // Without lockdown, what stops tenant root at /dev/mem and friends is the missing
    // CAP_SYS_RAWIO of its context.
    // (The tenant's /dev has no mem node: it makes one.)
    let (code, out, err) = sh(
        &g,
        "mknod /tmp/mem c 1 1 && echo made; dd if=/tmp/mem of=/dev/null bs=1 count=1",
        b"",
    );
    assert_ne!(
        code, 0,
        "tenant root read /dev/mem in an operator-modules guest"
    );
    assert!(out.contains("made"), "{out} {err}");
    assert!(err.contains("not permitted"), "{err}");
    // The tenant cannot take it out itself (no CAP_SYS_MODULE); the host can.
    let (code, _, _) = sh(&g, "rmmod khttpd", b"");
    assert_ne!(code, 0, "tenant root unloaded a module");
    g.client.unload("khttpd", T).unwrap();
    let (code, _, _) = sh(&g, "wget -q -T 5 -O - http://127.0.0.1:8080/", b"");
    assert_ne!(code, 0, "khttpd still answers after its unload");

    // A GPL-incompatible license: refused unless its policy accepts that license; then
    // it loads and the kernel shows the taint (P) beside O and E.
    let closed = key
        .sign_module(&built("closed_hello", &kernel.release))
        .unwrap();
    let mut source = ModuleSource::new();
    let operator = TrustStore::from_pem(key.cert_pem().unwrap().as_bytes()).unwrap();
    let name = source
        .insert_signed_by(
            closed.clone(),
            Some(crate::support::sha256_hex(&closed)),
            Some(operator),
        )
        .unwrap();
    let policy = VettingPolicy::for_tenant(&kernel.release, ["closed_hello"]);
    let load = |source: &ModuleSource| {
        ModprobeService::new(source, &kernel_keys).modprobe(
            &g.client,
            "closed_hello",
            "greeting=hi",
            &policy,
        )
    };
    match load(&source).as_slice() {
        [ModuleOutcome::Rejected {
            reason: Rejection::LicenseNotAllowed { license, .. },
            ..
        }] => assert_eq!(license.as_deref(), Some("Proprietary")),
        other => panic!("a Proprietary module without the policy's leave: {other:?}"),
    }
    assert!(source.allow_licenses(&name, &["Proprietary".to_string()]));
    let out = load(&source);
    assert!(
        matches!(out.as_slice(), [ModuleOutcome::Loaded { .. }]),
        "{out:?}"
    );
    let listed = g.client.list(T).unwrap();
    let m = listed
        .iter()
        .find(|m| m.name == "closed_hello")
        .expect("listed");
    assert!(
        ["P", "O", "E"].iter().all(|t| m.taint.contains(t)),
        "taint {:?}",
        m.taint
    );
    g.guest.stop(Duration::from_secs(5));
}
