//! Quotas: checked in the same transaction as the create, also under a race.

use crate::support::Plane;
use serde_json::json;
use std::sync::Arc;

#[test]
fn quota_exceeded_names_the_quota_and_changes_nothing() {
    let p = Plane::start();
    let (a, admin) = (p.token("tenant-a"), p.token("admin"));
    p.put(
        &admin,
        "/v1/tenants/tenant-a/quota",
        &json!({"max_vms": 5, "max_vcpus": 4, "max_memory_mib": 1024}),
    )
    .expect(200);
    p.post(
        &a,
        "/v1/vms",
        &json!({"name": "big", "vcpus": 3, "memory_mib": 512}),
    )
    .expect(201);
    let r = p
        .post(
            &a,
            "/v1/vms",
            &json!({"name": "cpu", "vcpus": 2, "memory_mib": 128}),
        )
        .expect(409);
    assert_eq!(r.problem_slug(), "quota-exceeded");
    assert_eq!(r.body["quota"], "max_vcpus");
    let r = p
        .post(
            &a,
            "/v1/vms",
            &json!({"name": "mem", "vcpus": 1, "memory_mib": 1024}),
        )
        .expect(409);
    assert_eq!(r.body["quota"], "max_memory_mib");
    let t = p.get(&admin, "/v1/tenants/tenant-a").expect(200);
    assert_eq!(
        t.body["usage"],
        // The VM's `default` network was created with it.
        json!({"vms": 1, "vcpus": 3, "memory_mib": 512, "networks": 1})
    );

    // Growing an existing VM past the quota is refused too; shrinking is fine.
    let id = p.get(&a, "/v1/vms").body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = p
        .put(
            &a,
            &format!("/v1/vms/{id}"),
            &json!({"name": "big", "vcpus": 5, "memory_mib": 512}),
        )
        .expect(409);
    assert_eq!(r.body["quota"], "max_vcpus");
    p.put(
        &a,
        &format!("/v1/vms/{id}"),
        &json!({"name": "big", "vcpus": 1, "memory_mib": 256}),
    )
    .expect(200);
    let t = p.get(&admin, "/v1/tenants/tenant-a").expect(200);
    assert_eq!(
        t.body["usage"],
        json!({"vms": 1, "vcpus": 1, "memory_mib": 256, "networks": 1})
    );

    // Deleting releases the quota.
    p.delete(&a, &format!("/v1/vms/{id}")).expect(204);
    let t = p.get(&admin, "/v1/tenants/tenant-a").expect(200);
    assert_eq!(
        t.body["usage"],
        json!({"vms": 0, "vcpus": 0, "memory_mib": 0, "networks": 1})
    );

    // Refusals are in the audit trail.
    let ev = p.get(&a, "/v1/events?limit=1000").expect(200);
    assert!(ev.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["outcome"] == "denied" && e["action"] == "vm.create"));
}

#[test]
fn concurrent_creates_racing_for_the_last_slots() {
    let p = Arc::new(Plane::start());
    let admin = p.token("admin");
    let quota = 7;
    p.put(
        &admin,
        "/v1/tenants/tenant-b/quota",
        // 40 requests at once: more than the default bound on a tenant's requests in
        // flight (32), which is not what this test is about.
        &json!({"max_vms": quota, "max_vcpus": 1000, "max_memory_mib": 1_000_000,
                "max_concurrent_requests": 64}),
    )
    .expect(200);
    p.create_vm(&p.token("tenant-b"), "first");
    let threads: Vec<_> = (0..40)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                let b = p.token("tenant-b");
                p.post(
                    &b,
                    "/v1/vms",
                    &json!({"name": format!("racer-{i}"), "vcpus": 1, "memory_mib": 128}),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!(created as u64, quota - 1, "{statuses:?}");
    assert_eq!(created + refused, 40, "{statuses:?}");
    let b = p.token("tenant-b");
    let list = p.get(&b, "/v1/vms?limit=1000").expect(200);
    assert_eq!(list.body["items"].as_array().unwrap().len() as u64, quota);
    let t = p.get(&admin, "/v1/tenants/tenant-b").expect(200);
    assert_eq!(t.body["usage"]["vms"], quota);
}
