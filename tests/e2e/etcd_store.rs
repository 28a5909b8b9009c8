//! The control plane on etcd (cargo feature `etcd`): `modvisor control-plane --store
//! etcd://...` keeps tenants, VMs and the audit trail in a real etcd member rather than in
//! its data directory, has them again after a kill -9 and a restart, and refuses a store
//! it cannot reach with one clear line, in bounded time.

use crate::etcd_member::EtcdMember;
use crate::support::{modvisor, Plane};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `modvisor control-plane` on `store`, its data directory `data`; the process and its API.
fn start(data: &Path, store: &str) -> (Child, String) {
    start_with(data, store, &[])
}

/// `modvisor control-plane` on `store` with `extra` arguments, its data directory `data`;
/// the process and its API, once it serves.
pub fn start_with(data: &Path, store: &str, extra: &[&str]) -> (Child, String) {
    let addr = data.join("control-plane.addr");
    if addr.exists() {
        std::fs::remove_file(&addr).unwrap();
    }
    let mut child = modvisor()
        .args(["control-plane", "--listen", "127.0.0.1:0", "--store", store])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .env("MODVISOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !addr.exists() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the control plane exited: {s}");
        }
        assert!(
            Instant::now() < deadline,
            "the control plane did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://{}", std::fs::read_to_string(&addr).unwrap().trim());
    (child, base)
}

/// A token signed offline with the key the replicas share in `store`.
pub fn token(store: &str, args: &[&str]) -> String {
    let out = modvisor()
        .args(["token", "issue", "--store", store])
        .args(args)
        .env("MODVISOR_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_control_plane_keeps_its_state_in_etcd_across_a_kill() {
    let member = EtcdMember::start();
    let store = format!("etcd://{}/e2e", member.client);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (mut cp, base) = start(&data, &store);
    let p = Plane::attach(dir, base);
    let admin = token(&store, &["--role", "admin"]);
    p.post(&admin, "/v1/tenants", &json!({"name": "acme"}))
        .expect(201);
    let acme = token(&store, &["--role", "tenant", "--tenant", "acme"]);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let body = json!({"name": format!("vm-{i}"), "vcpus": 1, "memory_mib": 256});
            let v = p.post(&acme, "/v1/vms", &body).expect(201).body;
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    p.post(
        &acme,
        "/v1/vms",
        &json!({"name": "vm-0", "vcpus": 1, "memory_mib": 256}),
    )
    .expect(409);

    // kill -9, and start again on the same store: everything is there.
    cp.kill().unwrap();
    cp.wait().unwrap();
    let (mut cp, base) = start(&data, &store);
    let p = Plane::attach(tempfile::tempdir().unwrap(), base);
    let listed = p.get(&acme, "/v1/vms").expect(200).body;
    let mut found: Vec<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(found, want, "{listed}");
    let events = p.get(&acme, "/v1/events").expect(200).body;
    let creates = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "vm.create" && e["outcome"] == "success")
        .count();
    assert_eq!(creates, 3, "{events}");
    let usage = p.get(&admin, "/v1/tenants/acme").expect(200).body;
    assert_eq!(usage["usage"]["vms"], 3, "{usage}");
    // The state and the secrets are in etcd: no database and no keys in the data
    // directory.
    assert!(!data.join("db").exists());
    assert!(!data.join("keys").exists());
    cp.kill().unwrap();
    cp.wait().unwrap();
    drop(member);
}

#[test]
fn an_unreachable_or_malformed_store_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for (store, says) in [
        ("etcd://127.0.0.1:9", "etcd"),
        ("etcd://nohost", "HOST:PORT"),
        ("postgres://x", "sled:PATH or etcd://"),
    ] {
        let started = Instant::now();
        let out = modvisor()
            .args(["control-plane", "--listen", "127.0.0.1:0", "--store", store])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("MODVISOR_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{store}: {err}");
        assert!(err.contains(says), "{store}: {err}");
        assert!(!err.contains("panicked"), "{store}: {err}");
        assert!(started.elapsed() < Duration::from_secs(30), "{store}");
    }
}

#[test]
fn store_copy_moves_an_up_installation_onto_etcd() {
    let member = EtcdMember::start();
    let store = format!("etcd://{}/moved", member.client);
    let mut up = Plane::start();
    let a = up.token("tenant-a");
    let id = up.create_vm(&a, "web-1");
    up.stop();
    let data = up.data_dir();
    let out = modvisor()
        .args(["store", "copy", "--to", &store, "--from"])
        .arg(format!("sled:{}", data.join("db").display()))
        .env("MODVISOR_LOG", "warn")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains(&format!("to {store}")), "{printed}");
    // The key copied with the state: A's token (signed by `up`) still works.
    let (mut cp, base) = start(&data, &store);
    let p = Plane::attach(tempfile::tempdir().unwrap(), base);
    let vm = p.get(&a, &format!("/v1/vms/{id}")).expect(200).body;
    assert_eq!(vm["spec"]["name"], "web-1");
    // Into a store that holds data already: refused, one line.
    let again = modvisor()
        .args(["store", "copy", "--to", &store, "--from"])
        .arg(format!("sled:{}", data.join("db").display()))
        .env("MODVISOR_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("already holds data"),
        "{err}"
    );
    cp.kill().unwrap();
    cp.wait().unwrap();
}

#[test]
fn bench_api_on_etcd_measures_etcds_own_puts_beside() {
    let member = EtcdMember::start();
    let store = format!("etcd://{}", member.client);
    let text = crate::support::bench_output(&[
        "api",
        "--seconds",
        "1",
        "--vms",
        "5",
        "--connections",
        "4",
        "--store",
        &store,
    ]);
    for want in [
        "store etcd://",
        "POST /v1/vms (durable create)",
        "peer: etcd put (4 concurrent)",
        "x the store's raw durable writes",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
}

#[test]
fn bench_scheduler_on_etcd_places_in_bounded_transactions() {
    let member = EtcdMember::start();
    let store = format!("etcd://{}", member.client);
    let text = crate::support::bench_output(&[
        "scheduler",
        "--nodes",
        "10",
        "--vms",
        "300",
        "--placements",
        "20",
        "--batch",
        "250",
        "--store",
        &store,
        "--idle-seconds",
        "2",
    ]);
    for want in [
        "store etcd://",
        "placements, one transaction each",
        "placements, batches of 250 (100 per transaction)",
        "peer: bare durable transactions (same store)",
        "idle leader, 300 VMs settled",
        "peer: a full pass every tick (before)",
        "one new VM: placed",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    // Every batched placement was made: the rate line is a positive number.
    let rate = |label: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(label)).unwrap();
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert!(rate("placements, batches of 250") > 0.0, "{text}");
}
