//! The vetted modprobe service against real guests: Debian's signed modules load with
//! their dependencies in order; every rejection is precise and sends nothing to the guest.

use modvisor_modules::{load_order, Rejection, TrustStore, VettingPolicy};
use modvisor_node_agent::modprobe::{ModprobeService, ModuleOutcome, ModuleSource};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn approve(source: &ModuleSource, release: &str, roots: &[&str]) -> VettingPolicy {
    let mut names = Vec::new();
    for r in roots {
        names.extend(load_order(r, source).unwrap());
    }
    VettingPolicy::for_tenant(release, names)
}

#[test]
fn loads_vetted_modules_with_dependencies_in_order() {
    let mut g = crate::support::boot("modprobe");
    let source = crate::support::module_source(&g.kernel);
    let trust = crate::support::kernel_trust(&g.kernel);
    let service = ModprobeService::new(&source, &trust);
    let policy = approve(&source, &g.kernel.release, &["tcp_bbr", "wireguard"]);

    let t0 = Instant::now();
    let out = service.modprobe(&g.client, "tcp_bbr", "", &policy);
    let service_us = t0.elapsed().as_micros() as u64;
    assert_eq!(out.len(), 1, "{out:?}");
    let ModuleOutcome::Loaded { kernel_us, .. } = out[0] else {
        panic!("{out:?}")
    };
    eprintln!(
        "tcp_bbr: request -> loaded through the service {service_us} us; finit_module in the guest {kernel_us} us; ratio {:.1}",
        service_us as f64 / kernel_us.max(1) as f64
    );

    let order = load_order("wireguard", &source).unwrap();
    assert!(
        order.len() >= 6,
        "wireguard and five or more dependencies: {order:?}"
    );
    assert_eq!(order.last().map(String::as_str), Some("wireguard"));
    let t0 = Instant::now();
    let out = service.modprobe(&g.client, "wireguard", "", &policy);
    eprintln!("wireguard with {} modules: {:?}", out.len(), t0.elapsed());
    let names: Vec<&str> = out.iter().map(|o| o.name()).collect();
    assert_eq!(names, order.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.iter().all(ModuleOutcome::is_loaded), "{out:?}");

    // The guest's own module list shows every one of them, dependencies before users.
    let listed: Vec<String> = g
        .client
        .list(T)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    for m in order.iter().chain(["tcp_bbr".to_string()].iter()) {
        assert!(
            listed.contains(m),
            "{m} missing from the guest's /proc/modules: {listed:?}"
        );
    }
    // Asking again sends nothing new.
    let again = service.modprobe(&g.client, "wireguard", "", &policy);
    assert!(
        again
            .iter()
            .all(|o| matches!(o, ModuleOutcome::AlreadyLoaded { .. })),
        "{again:?}"
    );
    // A module without dependencies is sent without asking first: the kernel's EEXIST
    // says it is there.
    let bbr_again = service.modprobe(&g.client, "tcp_bbr", "", &policy);
    assert!(
        matches!(bbr_again.as_slice(), [ModuleOutcome::AlreadyLoaded { name }] if name == "tcp_bbr"),
        "{bbr_again:?}"
    );

    // Unload works, and a module in use refuses to go.
    assert!(
        g.client.unload("udp_tunnel", T).is_err(),
        "in use by wireguard"
    );
    g.client.unload("wireguard", T).unwrap();
    g.client.unload("tcp_bbr", T).unwrap();
    let listed: Vec<String> = g
        .client
        .list(T)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(!listed.contains(&"wireguard".to_string()) && !listed.contains(&"tcp_bbr".to_string()));
    g.guest.stop(Duration::from_secs(5));
}

#[test]
fn rejections_are_precise_and_never_reach_the_guest() {
    let mut g = crate::support::boot("rejections");
    let source = crate::support::module_source(&g.kernel);
    let trust = crate::support::kernel_trust(&g.kernel);
    let release = g.kernel.release.clone();
    let service = ModprobeService::new(&source, &trust);
    let before = g.client.health(T).unwrap().load_requests;
    let kind = |out: &[ModuleOutcome]| match out {
        [ModuleOutcome::Rejected { reason, .. }] => reason.clone(),
        other => panic!("expected one rejection, got {other:?}"),
    };

    // Not approved for the tenant.
    let policy = approve(&source, &release, &["tcp_bbr"]);
    let r = kind(&service.modprobe(&g.client, "dummy", "", &policy));
    assert!(matches!(r, Rejection::NotApproved { .. }), "{r:?}");
    // A dependency not approved: the whole request is refused, naming it.
    let r = kind(&service.modprobe(
        &g.client,
        "wireguard",
        "",
        &VettingPolicy::for_tenant(&release, ["wireguard"]),
    ));
    assert!(matches!(r, Rejection::DependencyRejected { .. }), "{r:?}");

    // Vermagic mismatch: the module was built for another kernel.
    let other = approve(&source, "6.1.0-0-other-amd64", &["tcp_bbr"]);
    let r = kind(&service.modprobe(&g.client, "tcp_bbr", "", &other));
    assert!(matches!(r, Rejection::VermagicMismatch { .. }), "{r:?}");

    // sha256 mismatch: one byte flipped in the stored blob.
    let path = g.kernel.module_path("dummy").unwrap();
    let original = std::fs::read(&path).unwrap();
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 1;
    let tampered = crate::support::source_of(&flipped, &crate::support::sha256_hex(&original));
    let dummy_policy = VettingPolicy::for_tenant(&release, ["dummy"]);
    let r = kind(&ModprobeService::new(&tampered, &trust).modprobe(
        &g.client,
        "dummy",
        "",
        &dummy_policy,
    ));
    assert!(matches!(r, Rejection::Sha256Mismatch { .. }), "{r:?}");

    // Missing dependency: wireguard without the modules it needs.
    let wg = std::fs::read(g.kernel.module_path("wireguard").unwrap()).unwrap();
    let partial = crate::support::source_of(&wg, &crate::support::sha256_hex(&wg));
    let wg_policy = approve(&source, &release, &["wireguard"]);
    let r = kind(&ModprobeService::new(&partial, &trust).modprobe(
        &g.client,
        "wireguard",
        "",
        &wg_policy,
    ));
    assert!(matches!(r, Rejection::MissingDependency { .. }), "{r:?}");

    // Unsigned: the signature stripped (and pinned as such).
    let stripped = crate::support::strip_signature(&original);
    let unsigned = crate::support::source_of(&stripped, &crate::support::sha256_hex(&stripped));
    let r = kind(&ModprobeService::new(&unsigned, &trust).modprobe(
        &g.client,
        "dummy",
        "",
        &dummy_policy,
    ));
    assert!(matches!(r, Rejection::Unsigned { .. }), "{r:?}");

    // Foreign signature: a signer this guest kernel does not trust.
    let r = kind(&ModprobeService::new(&source, &TrustStore::new()).modprobe(
        &g.client,
        "dummy",
        "",
        &dummy_policy,
    ));
    assert!(matches!(r, Rejection::UntrustedSigner { .. }), "{r:?}");

    // Truncated ELF: refused before it can even enter the node's source.
    let mut s = ModuleSource::new();
    assert!(s
        .insert(original[..original.len() / 3].to_vec(), None)
        .is_err());

    // Nothing of the above reached the guest.
    let after = g.client.health(T).unwrap().load_requests;
    assert_eq!(
        after, before,
        "a rejected module must never be sent to the guest"
    );
    assert!(!g.client.list(T).unwrap().iter().any(|m| m.name == "dummy"));

    // Policy approved, sent: loads (dummy with a parameter).
    let out = service.modprobe(&g.client, "dummy", "numdummies=2", &dummy_policy);
    assert!(
        matches!(out.as_slice(), [ModuleOutcome::Loaded { .. }]),
        "{out:?}"
    );
    g.guest.stop(Duration::from_secs(5));
}

#[test]
fn sample_out_of_tree_module_is_rejected_by_vetting_and_by_the_guest_kernel() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../modules/sample/khttpd");
    let kernel = crate::support::guest_kernel();
    let status = std::process::Command::new("make")
        .arg("-C")
        .arg(dir)
        .arg(format!("KERNEL_RELEASE={}", kernel.release))
        .status()
        .expect("make");
    assert!(
        status.success(),
        "building the sample needs linux-headers-{} (apt-get install it; .ci/run does)",
        kernel.release
    );
    let image = std::fs::read(format!("{dir}/khttpd.ko")).unwrap();
    let mut g = crate::support::boot("sample");
    let trust = crate::support::kernel_trust(&g.kernel);
    let source = crate::support::source_of(&image, &crate::support::sha256_hex(&image));
    let policy = VettingPolicy::for_tenant(&g.kernel.release, ["khttpd"]);
    let out = ModprobeService::new(&source, &trust).modprobe(&g.client, "khttpd", "", &policy);
    assert!(
        matches!(
            out.as_slice(),
            [ModuleOutcome::Rejected {
                reason: Rejection::Unsigned { .. },
                ..
            }]
        ),
        "{out:?}"
    );
    // Pushed past vetting, the guest kernel (module.sig_enforce=1) refuses it too.
    match g.client.load("khttpd", "", &image, T) {
        Err(modvisor_node_agent::channel::ChannelError::Agent { errno, message, .. }) => {
            assert_eq!(errno, 129, "EKEYREJECTED: {message}")
        }
        other => panic!("the guest kernel must refuse an unsigned module: {other:?}"),
    }
    g.guest.stop(Duration::from_secs(5));
}
