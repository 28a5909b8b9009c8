//! Tenant networks through the API and the CLI: created, listed, read and deleted by
//! their tenant only; CIDRs checked (IPv4, /16 to /29, network addresses, no overlap
//! within a tenant, equal CIDRs across tenants allowed); the `max_networks` quota; every
//! refusal is a problem that writes nothing; they survive a restart.

use crate::support::{modvisor, Plane};
use serde_json::{json, Value};

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{}/{}",
                n["tenant"].as_str().unwrap(),
                n["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn tenants_own_their_networks_and_bad_input_changes_nothing() {
    let mut p = Plane::start();
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));
    let created = p
        .post(
            &a,
            "/v1/networks",
            &json!({"name": "blue", "cidr": "10.1.0.0/24"}),
        )
        .expect(201);
    assert_eq!(created.body["gateway"], "10.1.0.1", "{:?}", created.body);
    assert_eq!(created.body["tenant"], "tenant-a");
    assert_eq!(created.body["addresses_in_use"], 0);
    assert_eq!(
        p.get(&a, "/v1/networks/blue").expect(200).body["cidr"],
        "10.1.0.0/24"
    );

    // Another tenant: 404 on every verb; it may use the same name and CIDR itself.
    assert_eq!(p.get(&b, "/v1/networks/blue").status, 404);
    assert_eq!(p.delete(&b, "/v1/networks/blue").status, 404);
    p.post(
        &b,
        "/v1/networks",
        &json!({"name": "blue", "cidr": "10.1.0.0/24"}),
    )
    .expect(201);
    assert_eq!(
        names(&p.get(&b, "/v1/networks").expect(200).body),
        ["tenant-b/blue"]
    );

    // Bad input: a clear problem naming the field, nothing written.
    for (body, status, field) in [
        (json!({"name": "blue", "cidr": "10.7.0.0/24"}), 409, None),
        (json!({"name": "green", "cidr": "10.1.0.128/25"}), 409, None),
        (
            json!({"name": "green", "cidr": "10.1.0.1/24"}),
            400,
            Some("cidr"),
        ),
        (
            json!({"name": "green", "cidr": "10.1.0.0/30"}),
            400,
            Some("cidr"),
        ),
        (
            json!({"name": "green", "cidr": "10.0.0.0/8"}),
            400,
            Some("cidr"),
        ),
        (
            json!({"name": "green", "cidr": "fd00::/64"}),
            400,
            Some("cidr"),
        ),
        (
            json!({"name": "green", "cidr": "10.1.2.0/24 "}),
            400,
            Some("cidr"),
        ),
        (
            json!({"name": "none", "cidr": "10.9.0.0/24"}),
            400,
            Some("name"),
        ),
        (
            json!({"name": "Bad_Name", "cidr": "10.9.0.0/24"}),
            400,
            Some("name"),
        ),
        (
            json!({"name": "green", "cidr": "10.9.0.0/24", "vni": 7}),
            400,
            None,
        ),
        (json!({"name": "green"}), 400, None),
    ] {
        let r = p.post(&a, "/v1/networks", &body);
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
        assert_eq!(r.content_type(), "application/problem+json");
        if let Some(f) = field {
            assert_eq!(r.body["field"], f, "{body}: {:?}", r.body);
        }
    }
    let r = p.post(
        &a,
        "/v1/networks",
        &json!({"name": "green", "cidr": "10.1.0.1/24"}),
    );
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("did you mean 10.1.0.0/24"),
        "{:?}",
        r.body
    );
    assert_eq!(
        names(&p.get(&a, "/v1/networks").expect(200).body),
        ["tenant-a/blue"]
    );

    // The quota: a body with only the first three fields keeps working (default 8
    // networks); max_networks is one more limit.
    p.put(
        &admin,
        "/v1/tenants/tenant-a/quota",
        &json!({"max_vms": 10, "max_vcpus": 32, "max_memory_mib": 32768}),
    )
    .expect(200);
    let t = p
        .put(
            &admin,
            "/v1/tenants/tenant-a/quota",
            &json!({"max_vms": 10, "max_vcpus": 32, "max_memory_mib": 32768, "max_networks": 2}),
        )
        .expect(200)
        .body;
    assert_eq!(t["quota"]["max_networks"], 2);
    p.post(
        &a,
        "/v1/networks",
        &json!({"name": "green", "cidr": "10.2.0.0/16"}),
    )
    .expect(201);
    let over = p.post(
        &a,
        "/v1/networks",
        &json!({"name": "red", "cidr": "10.3.0.0/24"}),
    );
    assert_eq!(
        (over.status, over.problem_slug(), over.body["quota"].clone()),
        (409, "quota-exceeded", json!("max_networks"))
    );
    assert_eq!(
        p.get(&a, "/v1/tenants/tenant-a").expect(200).body["usage"]["networks"],
        2
    );

    // The admin sees every tenant's networks and changes none.
    assert_eq!(
        names(&p.get(&admin, "/v1/networks").expect(200).body),
        ["tenant-a/blue", "tenant-a/green", "tenant-b/blue"]
    );
    assert_eq!(p.get(&admin, "/v1/networks/blue").status, 403);
    assert_eq!(
        p.post(
            &admin,
            "/v1/networks",
            &json!({"name": "x", "cidr": "10.5.0.0/24"})
        )
        .status,
        403
    );

    // Deleted by its tenant; kept across a restart otherwise.
    assert_eq!(p.delete(&a, "/v1/networks/green").status, 204);
    assert_eq!(p.get(&a, "/v1/networks/green").status, 404);
    p.restart();
    let (a, b) = (p.token("tenant-a"), p.token("tenant-b"));
    assert_eq!(
        names(&p.get(&a, "/v1/networks").expect(200).body),
        ["tenant-a/blue"]
    );
    assert_eq!(
        names(&p.get(&b, "/v1/networks").expect(200).body),
        ["tenant-b/blue"]
    );

    // The audit trail has the changes and the refusals.
    let events = p.get(&a, "/v1/events?limit=1000").expect(200).body;
    let actions: Vec<(String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("network."))
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("network.create".into(), "success".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("network.delete".into(), "success".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("network.create".into(), "denied".into())),
        "{actions:?}"
    );

    // The CLI.
    let cli = |args: &[&str]| {
        modvisor()
            .arg("network")
            .args(args)
            .env("MODVISOR_API", &p.base)
            .env("MODVISOR_TOKEN_FILE", p.token_file("tenant-a"))
            .output()
            .unwrap()
    };
    let out = cli(&["create", "orange", "--cidr", "192.168.50.0/28"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("192.168.50.1"));
    let out = cli(&["create", "purple", "--cidr", "192.168.50.0/29"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("overlaps network orange"), "{err}");
    let out = cli(&["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("orange"));
    assert!(cli(&["delete", "orange"]).status.success());
}
