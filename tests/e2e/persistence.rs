//! Acknowledged writes survive a restart and `kill -9`.

use crate::support::Plane;
use modvisor_control_plane_api::types::ModulePolicy;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[test]
fn state_survives_a_restart() {
    let mut p = Plane::start();
    let (a, admin) = (p.token("tenant-a"), p.token("admin"));
    let id = p.create_vm(&a, "keeper");
    p.put(
        &admin,
        "/v1/tenants/tenant-a/quota",
        &json!({"max_vms": 3, "max_vcpus": 3, "max_memory_mib": 999}),
    )
    .expect(200);
    p.restart();
    let vm = p.get(&a, &format!("/v1/vms/{id}")).expect(200);
    assert_eq!(vm.body["spec"]["name"], "keeper");
    let t = p.get(&admin, "/v1/tenants/tenant-a").expect(200);
    assert_eq!(t.body["quota"]["max_vms"], 3);
    assert_eq!(t.body["usage"]["vms"], 1);
    // The signing key is kept: tokens issued before the restart still verify.
    p.get(&a, "/v1/vms").expect(200);
}

#[test]
fn acknowledged_creates_survive_kill_9() {
    let mut p = Plane::start();
    let a = p.token("tenant-a");
    let admin = p.token("admin");
    p.put(
        &admin,
        "/v1/tenants/tenant-a/quota",
        &json!({"max_vms": 100000, "max_vcpus": 100000, "max_memory_mib": 100000000}),
    )
    .expect(200);

    // One create, then kill -9 the moment its 201 arrives.
    let id = p.create_vm(&a, "right-before-the-kill");
    p.kill9();
    p.respawn();
    p.get(&a, &format!("/v1/vms/{id}")).expect(200);

    // Many creates in flight from several clients; kill -9 in the middle. Every VM that
    // was acknowledged with 201 must be there afterwards, with consistent usage.
    let p = Arc::new(Mutex::new(p));
    let (base, http) = {
        let g = p.lock().unwrap();
        (g.base.clone(), g.http.clone())
    };
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (base, http, a, acked, stop) = (
                base.clone(),
                http.clone(),
                a.clone(),
                acked.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = http
                        .post(format!("{base}/v1/vms"))
                        .bearer_auth(&a)
                        .json(&json!({"name": format!("w{w}-{i}"), "vcpus": 1, "memory_mib": 128}))
                        .send();
                    match r {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let v: serde_json::Value = r.json().unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .push(v["id"].as_str().unwrap().to_string());
                        }
                        _ => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 40 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    p.lock().unwrap().kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let mut p = p.lock().unwrap();
    p.respawn();
    let acked = acked.lock().unwrap().clone();
    for id in &acked {
        p.get(&a, &format!("/v1/vms/{id}")).expect(200);
    }
    let listed = p.get(&a, "/v1/vms?limit=1000").expect(200);
    let n = listed.body["items"].as_array().unwrap().len();
    assert!(
        n > acked.len(),
        "listed {n}, acknowledged {} + 1",
        acked.len()
    );
    let t = p.get(&admin, "/v1/tenants/tenant-a").expect(200);
    assert_eq!(t.body["usage"]["vms"], n, "usage must match what exists");
    // Each VM's address was allocated in its create's transaction: every VM that exists
    // holds one, no two hold the same, and the network counts exactly those.
    let items = listed.body["items"].as_array().unwrap();
    let ips: std::collections::BTreeSet<&str> = items
        .iter()
        .map(|v| v["status"]["network"]["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), n, "distinct addresses");
    let net = p.get(&a, "/v1/networks/default").expect(200).body;
    assert_eq!(net["addresses_in_use"], n, "{net}");
}

#[test]
fn a_restart_never_reapproves_what_an_admin_revoked_or_restricted() {
    let mut p = Plane::start_with(&[
        "--nodes",
        "0",
        "--catalog",
        "kernel",
        "--listen",
        "127.0.0.1:0",
    ]);
    let admin = p.api(&p.token("admin"));
    assert!(
        policy_of(&admin, "tcp_bbr").approved,
        "seeded on the first start"
    );
    let revoked = ModulePolicy {
        approved: false,
        tenants: Vec::new(),
        signers: vec!["kernel".into()],
        licenses: Vec::new(),
    };
    admin.set_policy("tcp_bbr", &revoked).unwrap();
    let restricted = ModulePolicy {
        approved: true,
        tenants: vec!["tenant-a".into()],
        signers: vec!["kernel".into()],
        licenses: vec!["Proprietary".into()],
    };
    admin.set_policy("dummy", &restricted).unwrap();
    p.restart();
    let admin = p.api(&p.token("admin"));
    assert_eq!(policy_of(&admin, "tcp_bbr"), revoked);
    assert_eq!(policy_of(&admin, "dummy"), restricted);
    assert!(
        policy_of(&admin, "wireguard").approved,
        "untouched defaults stay"
    );
}

/// A module's policy as an admin sees it in the catalog.
fn policy_of(admin: &modvisor_control_plane_api::ApiClient, name: &str) -> ModulePolicy {
    admin
        .list_modules()
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .and_then(|m| m.policy)
        .unwrap()
}
