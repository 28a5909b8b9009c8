//! Per-tenant rate limits from the quota: a flooding tenant gets 429 with `Retry-After`
//! and changes nothing; another tenant is not slowed; module requests are limited per VM;
//! a tenant's requests in flight are bounded (slow senders cannot hold the server).

use crate::support::{wait_until, Plane, Resp};
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn quota(p: &Plane, admin: &str, tenant: &str, limits: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"max_vms": 10, "max_vcpus": 32, "max_memory_mib": 32768});
    for (k, v) in limits.as_object().unwrap() {
        body[k] = v.clone();
    }
    p.put(admin, &format!("/v1/tenants/{tenant}/quota"), &body)
        .expect(200)
        .body
}

#[track_caller]
fn assert_limited(r: &Resp, limit: &str) -> u64 {
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.content_type(), "application/problem+json");
    assert_eq!(r.problem_slug(), "rate-limited");
    assert_eq!(r.body["quota"], limit, "{}", r.body);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    retry
}

#[test]
fn a_tenant_over_its_limits_gets_429_and_other_tenants_do_not() {
    let p = Plane::start();
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));

    // A quota body with only the first three fields keeps working; the limits default.
    let t = quota(&p, &admin, "tenant-a", json!({}));
    assert_eq!(t["quota"]["api_requests_per_sec"], 100);
    assert_eq!(t["quota"]["api_burst"], 200);
    assert_eq!(t["quota"]["max_concurrent_requests"], 32);
    assert_eq!(t["quota"]["module_requests_per_vm_per_min"], 30);
    let r = p
        .put(
            &admin,
            "/v1/tenants/tenant-a/quota",
            &json!({"max_vms": 10, "max_vcpus": 32, "max_memory_mib": 32768, "api_burst": 0}),
        )
        .expect(400);
    assert_eq!(r.body["field"], "api_burst");

    // A: a burst of 5, then 1 per second.
    quota(
        &p,
        &admin,
        "tenant-a",
        json!({"api_requests_per_sec": 1, "api_burst": 5}),
    );
    let mut served = 0;
    let limited = loop {
        let r = p.get(&a, "/v1/vms");
        if r.status != 200 {
            break r;
        }
        served += 1;
        assert!(served <= 7, "no limit after {served} requests");
    };
    assert!((5..=7).contains(&served), "{served}");
    let retry = assert_limited(&limited, "api_requests_per_sec");
    // Refused requests change nothing.
    let r = p.post(
        &a,
        "/v1/vms",
        &json!({"name": "refused", "vcpus": 1, "memory_mib": 128}),
    );
    assert_limited(&r, "api_requests_per_sec");
    // B is not limited by A's flood.
    for _ in 0..30 {
        p.get(&b, "/v1/vms").expect(200);
    }
    std::thread::sleep(Duration::from_secs(retry));
    let list = p.get(&a, "/v1/vms").expect(200).body;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");

    // Module requests: two per VM per minute; another VM has its own.
    quota(
        &p,
        &admin,
        "tenant-a",
        json!({"module_requests_per_vm_per_min": 2}),
    );
    std::thread::sleep(Duration::from_secs(1)); // A's bucket refills at its new rate
    let v1 = p.create_vm(&a, "v1");
    let v2 = p.create_vm(&a, "v2");
    let ask = |vm: &str| {
        p.post(
            &a,
            &format!("/v1/vms/{vm}/modules"),
            &json!({"name": "dummy"}),
        )
    };
    for _ in 0..2 {
        assert_ne!(ask(&v1).status, 429);
    }
    assert_limited(&ask(&v1), "module_requests_per_vm_per_min");
    assert_limited(
        &p.delete(&a, &format!("/v1/vms/{v1}/modules/dummy")),
        "module_requests_per_vm_per_min",
    );
    assert_ne!(ask(&v2).status, 429);
    // Another tenant's VM id is 404 whatever its bucket holds.
    p.post(
        &b,
        &format!("/v1/vms/{v1}/modules"),
        &json!({"name": "dummy"}),
    )
    .expect(404);
}

#[test]
fn a_tenants_requests_in_flight_are_bounded() {
    // Bodies may take longer than this test's waits: only the bound frees the slots.
    let p = Plane::start_plus(&["--body-timeout-secs", "300"]);
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));
    quota(
        &p,
        &admin,
        "tenant-a",
        json!({"max_concurrent_requests": 3}),
    );
    // Three requests whose bodies never finish hold A's three slots.
    let addr = p.base.trim_start_matches("http://");
    let head = format!(
        "POST /v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    let slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    let mut last = None;
    let refused = (0..600).any(|_| {
        let r = p.get(&a, "/v1/vms");
        if r.status == 429 {
            return true;
        }
        last = Some((r.status, r.body));
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(
        refused,
        "A's fourth request was never refused in 60 s; the last answer: {last:?}"
    );
    assert_limited(&p.get(&a, "/v1/vms"), "max_concurrent_requests");
    p.get(&b, "/v1/vms").expect(200);
    p.get(&admin, "/v1/vms").expect(200);
    // Gone, they free their slots.
    drop(slow);
    wait_until("A is served again", 10, || {
        p.get(&a, "/v1/vms").status == 200
    });
}
