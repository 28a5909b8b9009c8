//! Addresses of tenant networks, through the API (no node needed: the address is the
//! store's): distinct under concurrent creates until the network is full (then a clear
//! 409), given back on delete and handed out again; fixed for a VM's life; bad input
//! writes nothing. (Across kill -9 of the control plane: `persistence`.)

use crate::support::Plane;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn ip(v: &Value) -> String {
    v["status"]["network"]["ip"].as_str().unwrap().to_string()
}

#[test]
fn concurrent_creates_get_distinct_addresses_until_the_network_is_full() {
    let p = Plane::start();
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));
    p.put(
        &admin,
        "/v1/tenants/tenant-a/quota",
        &json!({"max_vms": 100, "max_vcpus": 100, "max_memory_mib": 1000000,
                "api_requests_per_sec": 1000, "max_concurrent_requests": 64}),
    )
    .expect(200);
    p.post(
        &a,
        "/v1/networks",
        &json!({"name": "small", "cidr": "192.168.50.0/27"}),
    )
    .expect(201);

    // 50 creates at once on a /27 (29 addresses for VMs).
    let (base, http) = (p.base.clone(), p.http.clone());
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (base, http, a) = (&base, &http, &a);
                s.spawn(move || {
                    let r = http
                        .post(format!("{base}/v1/vms"))
                        .bearer_auth(a)
                        .json(&json!({"name": format!("c{i}"), "vcpus": 1, "memory_mib": 128, "network": "small"}))
                        .send()
                        .unwrap();
                    (r.status().as_u16(), r.json().unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, v)| v)
        .collect();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, v)| v)
        .collect();
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(created.len(), 29, "{statuses:?}");
    assert_eq!(refused.len(), 21, "{statuses:?}");
    for r in &refused {
        assert!(
            r["detail"].as_str().unwrap().contains("is full"),
            "a clear reason: {r}"
        );
    }
    let ips: BTreeSet<String> = created.iter().map(|v| ip(v)).collect();
    assert_eq!(ips.len(), 29, "distinct: {ips:?}");
    assert!(ips.iter().all(|i| i.starts_with("192.168.50.")));
    assert!(!ips.contains("192.168.50.1"), "the gateway is not a VM's");
    for v in &created {
        assert_eq!(v["status"]["network"]["network"], "small");
        assert_eq!(v["status"]["network"]["prefix"], 27);
    }
    let net = p.get(&a, "/v1/networks/small").expect(200).body;
    assert_eq!(net["addresses_in_use"], 29);

    // Deletes give addresses back; the next creates get exactly those.
    let freed: BTreeSet<String> = created[..5].iter().map(|v| ip(v)).collect();
    for v in &created[..5] {
        p.delete(&a, &format!("/v1/vms/{}", v["id"].as_str().unwrap()))
            .expect(204);
    }
    assert_eq!(
        p.get(&a, "/v1/networks/small").expect(200).body["addresses_in_use"],
        24
    );
    let again: BTreeSet<String> = (0..5)
        .map(|i| {
            ip(&p
                .post(
                    &a,
                    "/v1/vms",
                    &json!({"name": format!("d{i}"), "vcpus": 1, "memory_mib": 128, "network": "small"}),
                )
                .expect(201)
                .body)
        })
        .collect();
    assert_eq!(again, freed);

    // A network in use is not deleted; a VM's network is fixed.
    p.delete(&a, "/v1/networks/small").expect(409);
    let kept = created[6]["id"].as_str().unwrap();
    let mut spec = created[6]["spec"].clone();
    spec["network"] = json!("default");
    p.put(&a, &format!("/v1/vms/{kept}"), &spec).expect(409);
    spec["network"] = json!("small");
    spec["vcpus"] = json!(2);
    let replaced = p
        .put(&a, &format!("/v1/vms/{kept}"), &spec)
        .expect(200)
        .body;
    assert_eq!(
        replaced["status"]["network"],
        created[6]["status"]["network"]
    );

    // Bad input: another tenant's network is not found, odd names and `none`'s meaning.
    let before = p.get(&a, "/v1/vms?limit=1000").expect(200).body;
    p.post(
        &b,
        "/v1/networks",
        &json!({"name": "b-only", "cidr": "10.9.0.0/24"}),
    )
    .expect(201);
    for (network, status) in [
        (json!("b-only"), 404),
        (json!("Bad_Name"), 400),
        (json!("x".repeat(64)), 400),
        (json!(""), 400),
        (json!(7), 400),
    ] {
        let r = p.post(
            &a,
            "/v1/vms",
            &json!({"name": "odd", "vcpus": 1, "memory_mib": 128, "network": network}),
        );
        assert_eq!(r.status, status, "{network}: {:?}", r.body);
        assert!(r.content_type().starts_with("application/problem+json"));
    }
    assert_eq!(p.get(&a, "/v1/vms?limit=1000").expect(200).body, before);
    let bare = p
        .post(
            &a,
            "/v1/vms",
            &json!({"name": "bare", "vcpus": 1, "memory_mib": 128, "network": "none"}),
        )
        .expect(201)
        .body;
    assert!(bare["status"]["network"].is_null(), "{bare}");
    assert_eq!(bare["spec"]["network"], "none");
}
