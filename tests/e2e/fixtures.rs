//! What tests use beside a plane: the output of a bench, the guest kernel's release and
//! modules, tokens signed with a given key, samples of a metrics text, and bounded waits.

use crate::support::modvisor;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The stdout of a command that must succeed (its stderr in the failure).
#[track_caller]
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Waits (up to `secs`) until module request `module` of VM `id` settles as it wants
/// now: Loaded (or Rejected, Failed) when it wants the module loaded, Unloaded (or
/// Rejected, Failed) after an unload; the request.
pub fn request_settled(
    p: &crate::support::Plane,
    token: &str,
    id: &str,
    module: &str,
    secs: u64,
) -> Value {
    wait_for(&format!("{module} on {id} to settle"), secs, || {
        let reqs = p
            .get(token, &format!("/v1/vms/{id}/modules"))
            .expect(200)
            .body;
        let r = reqs
            .as_array()?
            .iter()
            .find(|r| r["name"] == module)?
            .clone();
        let done: &[&str] = if r["want_loaded"] == true {
            &["Loaded", "Rejected", "Failed"]
        } else {
            &["Unloaded", "Rejected", "Failed"]
        };
        done.contains(&r["state"].as_str()?).then_some(r)
    })
}

/// The stdout of `modvisor bench ARGS`, which must succeed.
pub fn bench_output(args: &[&str]) -> String {
    let out = modvisor()
        .arg("bench")
        .args(args)
        .env("MODVISOR_LOG", "warn")
        .output()
        .expect("running modvisor bench");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The guest kernel's release (what `modvisor guest fetch` cached).
pub fn guest_release() -> String {
    modvisor_guest::kernel::resolve(|m| eprintln!("{m}"))
        .expect("guest kernel (run `modvisor guest fetch`)")
        .release
}

/// A real module of the guest kernel (Debian's signed .ko), by name.
pub fn real_module(name: &str) -> Vec<u8> {
    let kernel = modvisor_guest::kernel::resolve(|m| eprintln!("{m}"))
        .expect("guest kernel (run `modvisor guest fetch`)");
    let path = kernel
        .module_path(name)
        .unwrap_or_else(|| panic!("{name}.ko in the guest kernel"));
    std::fs::read(path).expect("read module")
}

/// Waits up to `secs` for `f` to hold, failing the test with `what` when it never does.
#[track_caller]
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to `secs`) until `f` gives a value, and returns it.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A JWT with `claims`, signed with the PKCS#8 PEM Ed25519 key `pem`.
pub fn sign(pem: &str, claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("an Ed25519 key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        claims,
        &key,
    )
    .expect("signing")
}

/// The value of the sample of metric `name` whose labels include every one of `labels`,
/// in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, r)) => (m, r.trim_end_matches('}')),
            None => (series, ""),
        };
        let has =
            |(k, v): &(&str, &str)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\""));
        (metric == name && labels.iter().all(has))
            .then(|| value.parse().ok())
            .flatten()
    })
}
