//! VMs: conditional updates, validation, limits and pagination.

use crate::support::Plane;
use reqwest::Method;
use serde_json::json;

#[test]
fn if_match_guards_replace_and_delete() {
    let p = Plane::start();
    let a = p.token("tenant-a");
    let r = p
        .post(
            &a,
            "/v1/vms",
            &json!({"name": "db", "vcpus": 2, "memory_mib": 512}),
        )
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_string();
    let etag1 = r.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        format!("/v1/vms/{id}")
    );
    assert_eq!(r.body["status"]["phase"], "Pending");
    assert!(r.body["status"]["reason"]
        .as_str()
        .unwrap()
        .contains("no node"));

    let stopped = json!({"name": "db", "vcpus": 2, "memory_mib": 512, "power_state": "stopped"});
    let r = p
        .call(
            Method::PUT,
            Some(&a),
            &format!("/v1/vms/{id}"),
            Some(&stopped),
            &[("if-match", &etag1)],
        )
        .expect(200);
    let etag2 = r.headers["etag"].to_str().unwrap().to_string();
    assert_ne!(etag1, etag2);
    assert_eq!(r.body["spec"]["power_state"], "stopped");

    // The old ETag is stale now: 412 for PUT and DELETE, and nothing changes.
    let running = json!({"name": "db", "vcpus": 2, "memory_mib": 512, "power_state": "running"});
    let r = p
        .call(
            Method::PUT,
            Some(&a),
            &format!("/v1/vms/{id}"),
            Some(&running),
            &[("if-match", &etag1)],
        )
        .expect(412);
    assert_eq!(r.problem_slug(), "precondition-failed");
    p.call(
        Method::DELETE,
        Some(&a),
        &format!("/v1/vms/{id}"),
        None,
        &[("if-match", &etag1)],
    )
    .expect(412);
    let now = p.get(&a, &format!("/v1/vms/{id}")).expect(200);
    assert_eq!(now.body["spec"]["power_state"], "stopped");
    assert_eq!(now.headers["etag"].to_str().unwrap(), etag2);

    // The current ETag works; so does an unconditional PUT.
    p.call(
        Method::PUT,
        Some(&a),
        &format!("/v1/vms/{id}"),
        Some(&running),
        &[("if-match", &etag2)],
    )
    .expect(200);
    p.put(&a, &format!("/v1/vms/{id}"), &stopped).expect(200);
    let cur = p.get(&a, &format!("/v1/vms/{id}")).expect(200);
    let tag = cur.headers["etag"].to_str().unwrap().to_string();
    p.call(
        Method::DELETE,
        Some(&a),
        &format!("/v1/vms/{id}"),
        None,
        &[("if-match", &tag)],
    )
    .expect(204);
    p.get(&a, &format!("/v1/vms/{id}")).expect(404);
}

#[test]
fn bad_input_is_400_naming_the_field_and_writes_nothing() {
    let p = Plane::start();
    let a = p.token("tenant-a");
    p.create_vm(&a, "taken");
    let cases = [
        (json!({"name": "", "vcpus": 1, "memory_mib": 128}), "name"),
        (
            json!({"name": "1abc", "vcpus": 1, "memory_mib": 128}),
            "name",
        ),
        (
            json!({"name": "UPPER", "vcpus": 1, "memory_mib": 128}),
            "name",
        ),
        (
            json!({"name": "a".repeat(64), "vcpus": 1, "memory_mib": 128}),
            "name",
        ),
        (
            json!({"name": "ok", "vcpus": 0, "memory_mib": 128}),
            "vcpus",
        ),
        (
            json!({"name": "ok", "vcpus": 33, "memory_mib": 128}),
            "vcpus",
        ),
        (
            json!({"name": "ok", "vcpus": -1, "memory_mib": 128}),
            "vcpus",
        ),
        (
            json!({"name": "ok", "vcpus": 1.5, "memory_mib": 128}),
            "vcpus",
        ),
        (
            json!({"name": "ok", "vcpus": "1", "memory_mib": 128}),
            "vcpus",
        ),
        (
            json!({"name": "ok", "vcpus": 1, "memory_mib": 127}),
            "memory_mib",
        ),
        (
            json!({"name": "ok", "vcpus": 1, "memory_mib": 65537}),
            "memory_mib",
        ),
        (
            json!({"name": "ok", "vcpus": 1, "memory_mib": 4294967296u64}),
            "memory_mib",
        ),
        (json!({"name": "ok", "vcpus": 1}), "memory_mib"),
        (
            json!({"name": "ok", "vcpus": 1, "memory_mib": 128, "admin": true}),
            "admin",
        ),
        (
            json!({"name": "ok", "vcpus": 1, "memory_mib": 128, "power_state": "exploded"}),
            "power_state",
        ),
        (
            json!({"name": "ok", "vcpus": 1, "memory_mib": 128, "modules": [{"name": "../../etc"}]}),
            "modules[0].name",
        ),
        (
            json!({"name": "ok", "vcpus": 1, "memory_mib": 128, "modules": [{"name": "x", "params": {"a": "b c"}}]}),
            "modules[0].params.a",
        ),
        (
            json!({"name": "ok", "vcpus": 1, "memory_mib": 128, "modules": [{"name": "x", "color": 1}]}),
            "modules[0].color",
        ),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let r = p.post(&a, "/v1/vms", &body).expect(400);
        assert_eq!(r.problem_slug(), "invalid-field", "{body}");
        assert_eq!(r.body["field"], field, "{body}: {}", r.body);
    }
    // Malformed JSON, trailing garbage, wrong media type, oversized body.
    for raw in ["{", "{\"name\": }", "{} {}", "\u{0}", ""] {
        let r = p
            .http
            .post(format!("{}/v1/vms", p.base))
            .bearer_auth(&a)
            .header("content-type", "application/json")
            .body(raw.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{raw:?}");
    }
    let r = p
        .http
        .post(format!("{}/v1/vms", p.base))
        .bearer_auth(&a)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let huge = json!({"name": "ok", "vcpus": 1, "memory_mib": 128, "pad": "x".repeat(70_000)});
    let r = p.post(&a, "/v1/vms", &huge).expect(413);
    assert_eq!(r.problem_slug(), "payload-too-large");
    // Duplicate names are 409.
    let r = p
        .post(
            &a,
            "/v1/vms",
            &json!({"name": "taken", "vcpus": 1, "memory_mib": 128}),
        )
        .expect(409);
    assert_eq!(r.problem_slug(), "conflict");
    // Nothing of the above was written.
    let list = p.get(&a, "/v1/vms").expect(200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let t = p.get(&a, "/v1/tenants/tenant-a").expect(200);
    assert_eq!(t.body["usage"]["vms"], 1);
    // Query parameters are validated too.
    assert_eq!(
        p.get(&a, "/v1/vms?limit=0").expect(400).body["field"],
        "limit"
    );
    assert_eq!(
        p.get(&a, "/v1/vms?limit=abc").expect(400).body["field"],
        "limit"
    );
    assert_eq!(
        p.get(&a, "/v1/vms?page_token=%%%").expect(400).body["field"],
        "page_token"
    );
    assert_eq!(
        p.get(&a, "/v1/vms?bogus=1").expect(400).body["field"],
        "bogus"
    );
}

#[test]
fn lists_paginate_in_a_stable_order() {
    let p = Plane::start();
    let a = p.token("tenant-a");
    let mut ids: Vec<String> = (0..7)
        .map(|i| p.create_vm(&a, &format!("vm-{i}")))
        .collect();
    ids.sort();
    let mut seen = Vec::new();
    let mut path = "/v1/vms?limit=3".to_string();
    let mut pages = 0;
    loop {
        let r = p.get(&a, &path).expect(200);
        pages += 1;
        for v in r.body["items"].as_array().unwrap() {
            seen.push(v["id"].as_str().unwrap().to_string());
        }
        match r.body["next_page_token"].as_str() {
            Some(t) => path = format!("/v1/vms?limit=3&page_token={t}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    // By name: the tenant's one VM of that name; B has none of A's; the admin sees each
    // tenant's VM of that name; a bad name is 400 naming the field.
    let b = p.token("tenant-b");
    let b_vm = p.create_vm(&b, "vm-3");
    let named = p.get(&a, "/v1/vms?name=vm-3").expect(200).body;
    assert_eq!(named["items"].as_array().unwrap().len(), 1, "{named}");
    assert_eq!(named["items"][0]["spec"]["name"], "vm-3");
    assert_eq!(named["next_page_token"], serde_json::Value::Null);
    let none = p.get(&a, "/v1/vms?name=vm-99").expect(200).body;
    assert_eq!(none["items"], serde_json::json!([]));
    let b_named = p.get(&b, "/v1/vms?name=vm-3").expect(200).body;
    assert_eq!(b_named["items"][0]["id"], b_vm.as_str());
    assert_eq!(b_named["items"].as_array().unwrap().len(), 1);
    let admin = p.token("admin");
    let all = p.get(&admin, "/v1/vms?name=vm-3").expect(200).body;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    let bad = p.get(&a, "/v1/vms?name=Bad%20Name").expect(400).body;
    assert_eq!(bad["field"], "name");
}

#[test]
fn a_huge_or_forged_if_match_never_reaches_the_audit_trail() {
    let p = Plane::start();
    let a = p.token("tenant-a");
    let id = p.create_vm(&a, "target");
    let events = |p: &Plane| p.api(&a).events(1000).unwrap();
    let before = events(&p).len();
    let huge = format!("\"{}\"", "9".repeat(10_000));
    let spec = json!({"name": "target", "vcpus": 1, "memory_mib": 128});
    let r = p
        .call(
            Method::PUT,
            Some(&a),
            &format!("/v1/vms/{id}"),
            Some(&spec),
            &[("if-match", &huge)],
        )
        .expect(400);
    assert_eq!(r.body["field"], "If-Match");
    assert_eq!(events(&p).len(), before, "a refused header is not audited");
    // A stale but short one is refused (412) and audited as sent, one line.
    p.call(
        Method::PUT,
        Some(&a),
        &format!("/v1/vms/{id}"),
        Some(&spec),
        &[("if-match", "\"41\" forged")],
    )
    .expect(412);
    let all = events(&p);
    let denial = all.last().unwrap();
    assert!(
        denial.detail.as_deref().unwrap_or("").len() < 600,
        "{denial:?}"
    );
}
