//! Small hand-built modules: every policy rule, dependency resolution corner cases, and
//! signature variants made with the test-only key. Needs no kernel tree.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::elfgen::{self, section, PROGBITS};
use common::sign::{self, Hash, Options};
use modvisor_modules::{
    inspect, load_order, vet, vet_closure, KernelModule, MemoryCatalog, ParseError, Rejection,
    SignatureError, TrustStore, Verdict, VettingPolicy,
};

const RELEASE: &str = "6.1.0-56-cloud-amd64";

fn parse(bytes: &[u8]) -> KernelModule {
    KernelModule::parse(bytes).unwrap()
}

fn test_trust() -> TrustStore {
    TrustStore::from_pem(sign::TEST_CERT_PEM.as_bytes()).unwrap()
}

fn signed(name: &str, depends: &[&str]) -> KernelModule {
    let content = elfgen::module(name, RELEASE, "GPL", depends);
    parse(&sign::sign(&content, Options::default()))
}

fn catalog(modules: &[(&str, &[&str])]) -> MemoryCatalog {
    let mut c = MemoryCatalog::new();
    for (name, deps) in modules {
        c.insert(parse(&elfgen::module(name, RELEASE, "GPL", deps)), None);
    }
    c
}

#[test]
fn a_hand_built_module_parses() {
    let m = parse(&elfgen::module("tiny-mod", RELEASE, "GPL", &["a-b", "c"]));
    assert_eq!(m.name(), "tiny-mod");
    assert_eq!(m.dependencies(), ["a_b", "c"]);
    assert!(m.signature().is_none());
    assert_eq!(m.signed_len(), m.file_len());
    assert_eq!(m.modinfo().vermagic_release(), Some(RELEASE));
    assert!(m.modinfo().retpoline);
}

#[test]
fn modinfo_name_must_match_struct_module() {
    let file = elfgen::build(&[
        section(
            ".modinfo",
            PROGBITS,
            &elfgen::modinfo(&[("name", "tcp_bbr"), ("license", "GPL")]),
        ),
        section(
            ".gnu.linkonce.this_module",
            PROGBITS,
            &elfgen::this_module("evil"),
        ),
    ]);
    match KernelModule::parse(&file) {
        Err(ParseError::ModInfo(reason)) => assert!(reason.contains("evil"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_policy_rule_rejects_with_its_own_kind() {
    let trust = test_trust();
    let ok = signed("good", &[]);
    let policy = VettingPolicy::for_tenant(RELEASE, ["good", "proprietary", "nolicense"]);
    assert!(vet(&ok, Some(ok.sha256()), &policy, &trust).is_ok());

    let mut denied = policy.clone();
    denied.denied.insert("good".into());
    let r = vet(&ok, Some(ok.sha256()), &denied, &trust).unwrap_err();
    assert_eq!(
        r,
        Rejection::Denied {
            module: "good".into()
        }
    );

    let r = vet(
        &ok,
        Some(ok.sha256()),
        &VettingPolicy::for_tenant(RELEASE, ["other"]),
        &trust,
    );
    assert_eq!(r.unwrap_err().kind(), "not_approved");

    let mut small = policy.clone();
    small.max_size = 100;
    match vet(&ok, Some(ok.sha256()), &small, &trust).unwrap_err() {
        Rejection::TooLarge { size, limit, .. } => {
            assert_eq!((size, limit), (ok.file_len(), 100));
        }
        other => panic!("{other:?}"),
    }

    let prop = parse(&sign::sign(
        &elfgen::module("proprietary", RELEASE, "Proprietary", &[]),
        Options::default(),
    ));
    let r = vet(&prop, Some(prop.sha256()), &policy, &trust).unwrap_err();
    assert_eq!(
        r,
        Rejection::LicenseNotAllowed {
            module: "proprietary".into(),
            license: Some("Proprietary".into())
        }
    );
    let mut lenient = policy.clone();
    lenient.extra_licenses.insert("Proprietary".into());
    assert!(vet(&prop, Some(prop.sha256()), &lenient, &trust).is_ok());

    let file = elfgen::build(&[
        section(
            ".modinfo",
            PROGBITS,
            &elfgen::modinfo(&[("vermagic", RELEASE)]),
        ),
        section(
            ".gnu.linkonce.this_module",
            PROGBITS,
            &elfgen::this_module("nolicense"),
        ),
    ]);
    let nolicense = parse(&sign::sign(&file, Options::default()));
    let r = vet(&nolicense, Some(nolicense.sha256()), &policy, &trust).unwrap_err();
    assert_eq!(
        r.to_string(),
        "module nolicense: license (none) is not allowed"
    );
}

#[test]
fn signature_variants() {
    let trust = test_trust();
    let content = elfgen::module("variant", RELEASE, "GPL", &[]);
    for (opts, ok) in [
        (Options::default(), true),
        (
            Options {
                hash: Hash::Sha384,
                ..Options::default()
            },
            true,
        ),
        (
            Options {
                hash: Hash::Sha512,
                combined_oid: true,
                ..Options::default()
            },
            true,
        ),
        (
            Options {
                by_key_id: true,
                ..Options::default()
            },
            true,
        ),
        (
            Options {
                hash: Hash::Sha1,
                ..Options::default()
            },
            false,
        ),
        (
            Options {
                signed_attrs: true,
                ..Options::default()
            },
            false,
        ),
    ] {
        let module = parse(&sign::sign(&content, opts));
        let result = module.signature().unwrap().verify(&trust);
        if ok {
            let signer = result.unwrap_or_else(|e| panic!("{opts:?}: {e}"));
            assert_eq!(
                signer.common_name.as_deref(),
                Some("modvisor test signer (DO NOT TRUST)")
            );
        } else {
            match result {
                Err(SignatureError::Invalid { reason }) => eprintln!("{opts:?}: {reason}"),
                other => panic!("{opts:?}: expected Invalid, got {other:?}"),
            }
        }
    }
    // A signature over other content does not verify.
    let other = elfgen::module("variant", RELEASE, "GPL v2", &[]);
    let sig_of_other = sign::sign(&other, Options::default());
    let cms_len = sig_of_other.len() - other.len() - 40;
    let cms = &sig_of_other[other.len()..other.len() + cms_len];
    let swapped = parse(&sign::append_signature(&content, cms));
    assert!(matches!(
        swapped.signature().unwrap().verify(&trust),
        Err(SignatureError::Invalid { .. })
    ));
}

#[test]
fn an_empty_trust_store_trusts_nobody() {
    let m = signed("lonely", &[]);
    let r = vet(
        &m,
        None,
        &VettingPolicy::inspection(None),
        &TrustStore::new(),
    )
    .unwrap_err();
    assert_eq!(r.kind(), "untrusted_signer");
    let mut relaxed = VettingPolicy::inspection(None);
    relaxed.require_signature = false;
    assert!(vet(&m, None, &relaxed, &TrustStore::new()).is_ok());
}

#[test]
fn load_order_is_dependencies_first_each_once_and_deterministic() {
    // d depends on b and c; both depend on a.
    let c = catalog(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["c", "b"])]);
    assert_eq!(load_order("d", &c).unwrap(), ["a", "b", "c", "d"]);
    assert_eq!(load_order("a", &c).unwrap(), ["a"]);
}

#[test]
fn dashes_and_underscores_are_the_same_module() {
    let c = catalog(&[("ip6_udp_tunnel", &[]), ("wg", &["ip6-udp-tunnel"])]);
    assert_eq!(load_order("wg", &c).unwrap(), ["ip6_udp_tunnel", "wg"]);
}

#[test]
fn missing_dependency_names_the_module_that_needs_it() {
    let c = catalog(&[("top", &["mid"]), ("mid", &["gone"])]);
    assert_eq!(
        load_order("top", &c).unwrap_err(),
        Rejection::MissingDependency {
            module: "mid".into(),
            dependency: "gone".into()
        }
    );
    assert_eq!(
        load_order("nothere", &c).unwrap_err().kind(),
        "not_in_catalog"
    );
}

#[test]
fn cycles_are_rejections() {
    let c = catalog(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("s", &["s"])]);
    assert_eq!(
        load_order("a", &c).unwrap_err(),
        Rejection::DependencyCycle {
            module: "a".into(),
            cycle: vec!["a".into(), "b".into(), "c".into(), "a".into()]
        }
    );
    match load_order("s", &c).unwrap_err() {
        Rejection::DependencyCycle { cycle, .. } => assert_eq!(cycle, ["s", "s"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_long_chain_does_not_overflow_the_stack() {
    let names: Vec<String> = (0..5000).map(|i| format!("m{i}")).collect();
    let mut c = MemoryCatalog::new();
    for (i, name) in names.iter().enumerate() {
        let deps: Vec<&str> = names.get(i + 1).map(String::as_str).into_iter().collect();
        c.insert(parse(&elfgen::module(name, RELEASE, "GPL", &deps)), None);
    }
    let order = load_order("m0", &c).unwrap();
    assert_eq!(order.len(), 5000);
    assert_eq!(order[0], "m4999");
}

#[test]
fn vet_closure_vets_every_dependency() {
    let trust = test_trust();
    let mut c = MemoryCatalog::new();
    for (name, deps) in [("base", &[][..]), ("top", &["base"][..])] {
        let m = signed(name, deps);
        let pin = m.sha256().to_string();
        c.insert(m, Some(pin));
    }
    let policy = VettingPolicy::for_tenant(RELEASE, ["top", "base"]);
    let vetted = vet_closure("top", &c, &policy, &trust).unwrap();
    assert_eq!(
        vetted.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["base", "top"]
    );

    // An unsigned dependency fails the whole closure.
    c.insert(parse(&elfgen::module("base", RELEASE, "GPL", &[])), None);
    let mut no_pins = policy.clone();
    no_pins.require_pin = false;
    match vet_closure("top", &c, &no_pins, &trust).unwrap_err() {
        Rejection::DependencyRejected {
            module,
            dependency,
            reason,
        } => {
            assert_eq!((module.as_str(), dependency.as_str()), ("top", "base"));
            assert_eq!(
                *reason,
                Rejection::Unsigned {
                    module: "base".into()
                }
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn report_of_garbage_is_malformed_and_serializes() {
    let report = inspect(
        "junk.ko",
        b"not an elf",
        &VettingPolicy::inspection(None),
        &TrustStore::new(),
        None,
        None,
    );
    assert!(!report.accepted());
    assert!(matches!(
        report.verdict,
        Verdict::Rejected {
            reason: Rejection::Malformed { .. }
        }
    ));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["reason"]["kind"], "malformed");
    assert_eq!(json["reason"]["reason"], "not an ELF file");
    assert!(report.to_string().contains("rejected (malformed)"));
}

/// A catalog whose entries carry their own license allowance, as the node agent's does
/// from each module's policy.
struct Allowing {
    modules: Vec<(KernelModule, Vec<String>)>,
}

impl modvisor_modules::ModuleCatalog for Allowing {
    fn lookup(&self, name: &str) -> Option<modvisor_modules::CatalogEntry<'_>> {
        self.modules
            .iter()
            .find(|(m, _)| m.name() == name)
            .map(|(m, licenses)| modvisor_modules::CatalogEntry {
                module: m,
                sha256_pin: Some(m.sha256()),
                trust: None,
                licenses,
            })
    }
}

#[test]
fn a_license_allowance_covers_its_own_module_only() {
    let trust = test_trust();
    let proprietary = |name: &str, deps: &[&str]| {
        parse(&sign::sign(
            &elfgen::module(name, RELEASE, "Proprietary", deps),
            Options::default(),
        ))
    };
    let policy = VettingPolicy::for_tenant(RELEASE, ["top", "base"]);
    let allowed = vec!["Proprietary".to_string()];
    // Allowed for top, not for its dependency: the closure is refused at the dependency.
    let c = Allowing {
        modules: vec![
            (proprietary("top", &["base"]), allowed.clone()),
            (proprietary("base", &[]), Vec::new()),
        ],
    };
    match vet_closure("top", &c, &policy, &trust).unwrap_err() {
        Rejection::DependencyRejected { reason, .. } => assert_eq!(
            *reason,
            Rejection::LicenseNotAllowed {
                module: "base".into(),
                license: Some("Proprietary".into())
            }
        ),
        other => panic!("{other:?}"),
    }
    // Allowed for both: it passes; the policy itself is unchanged.
    let c = Allowing {
        modules: vec![
            (proprietary("top", &["base"]), allowed.clone()),
            (proprietary("base", &[]), allowed),
        ],
    };
    assert_eq!(vet_closure("top", &c, &policy, &trust).unwrap().len(), 2);
    assert!(policy.extra_licenses.is_empty());
}
