//! The module catalog and module requests: publishing, policies, approval per tenant.

use crate::support::{guest_release, real_module, Plane};
use serde_json::{json, Value};

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn publish_is_content_addressed_and_validated() {
    let p = Plane::start();
    let admin = p.token("admin");
    let release = guest_release();
    let bytes = real_module("tcp_bbr");
    // No node runs any kernel yet: a publish is refused unless forced, and says why.
    let r = p
        .publish_for("tcp_bbr", &release, false, &bytes)
        .expect(409);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("no node is registered"),
        "{}",
        r.body
    );
    // The vermagic must name the release, forced or not.
    let r = p
        .publish_for("tcp_bbr", "6.1.0-0-cloud-amd64", true, &bytes)
        .expect(400);
    assert_eq!(r.body["field"], "kernel_release");
    assert!(
        r.body["detail"].as_str().unwrap().contains(&release),
        "{}",
        r.body
    );
    let r = p.publish("tcp_bbr", &bytes).expect(201);
    assert_eq!(r.body["sha256"], sha256_hex(&bytes));
    assert_eq!(r.body["size"], bytes.len());
    let events = p.get(&admin, "/v1/events").expect(200).body;
    let forced: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "module.publish_forced")
        .collect();
    assert_eq!(forced.len(), 1, "{events}");
    assert!(forced[0]["detail"]
        .as_str()
        .unwrap()
        .contains("no registered node runs"));
    // Once a node that runs the release has registered, no force is needed.
    let bootstrap = p.offline_bootstrap_token();
    p.register_node(&bootstrap, "n1", "https://127.0.0.1:9")
        .expect(200);
    p.publish_for("dummy", &release, false, &real_module("dummy"))
        .expect(201);
    assert_eq!(
        p.publish("tcp_bbr", b"not an elf").expect(400).body["field"],
        "body"
    );
    assert_eq!(
        p.publish("../etc", &bytes).status,
        404,
        "path traversal never routes"
    );
    assert_eq!(
        p.publish("bad name", &bytes).expect(400).body["field"],
        "name"
    );
    assert_eq!(
        p.publish_for("ok", "6.1 0", true, &bytes).expect(400).body["field"],
        "kernel_release"
    );
    let big = {
        let mut b = real_module("dummy");
        b.resize(16 * 1024 * 1024 + 1, 0);
        b
    };
    assert_eq!(
        p.publish("big", &big).expect(413).problem_slug(),
        "payload-too-large"
    );
    let r = p
        .http
        .put(format!(
            "{}/v1/admin/modules/x?kernel_release=6.1.0",
            p.base
        ))
        .bearer_auth(p.token("admin"))
        .header("content-type", "application/json")
        .body(bytes.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // Only tcp_bbr and dummy made it into the catalog, unapproved.
    let cat = p.get(&admin, "/v1/modules").expect(200);
    let names: Vec<&str> = cat
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["dummy", "tcp_bbr"]);
    assert_eq!(cat.body[1]["policy"]["approved"], false);
}

#[test]
fn requests_follow_the_policy_of_each_tenant() {
    let p = Plane::start();
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));
    p.publish("dummy", &real_module("dummy")).expect(201);
    p.publish("zram", &real_module("zram")).expect(201);
    p.put(
        &admin,
        "/v1/admin/modules/nosuch/policy",
        &json!({"approved": true, "tenants": ["*"]}),
    )
    .expect(404);
    p.put(
        &admin,
        "/v1/admin/modules/dummy/policy",
        &json!({"approved": true, "tenants": ["tenant-a"]}),
    )
    .expect(200);
    p.put(
        &admin,
        "/v1/admin/modules/dummy/policy",
        &json!({"approved": true, "tenants": ["Bad Name"]}),
    )
    .expect(400);
    // A tenant that does not exist is refused, and the policy in force stays as it was;
    // the admin reads it back; a tenant may not.
    let r = p
        .put(
            &admin,
            "/v1/admin/modules/dummy/policy",
            &json!({"approved": true, "tenants": ["tenant-a", "tenant-zz"]}),
        )
        .expect(400);
    assert_eq!(r.body["field"], "tenants[1]", "{}", r.body);
    assert_eq!(
        p.get(&admin, "/v1/admin/modules/dummy/policy")
            .expect(200)
            .body,
        json!({"approved": true, "tenants": ["tenant-a"], "signers": ["kernel"], "licenses": []})
    );
    p.get(&a, "/v1/admin/modules/dummy/policy").expect(403);
    p.get(&admin, "/v1/admin/modules/nosuch/policy").expect(404);

    // Tenants see only what they may request; tenants never see policies.
    let ca = p.get(&a, "/v1/modules").expect(200);
    assert_eq!(ca.body.as_array().unwrap().len(), 1);
    assert_eq!(ca.body[0]["name"], "dummy");
    assert!(ca.body[0].get("policy").is_none());
    assert_eq!(p.get(&b, "/v1/modules").expect(200).body, json!([]));

    let va = p.create_vm(&a, "a1");
    let vb = p.create_vm(&b, "b1");

    let r = p
        .post(
            &a,
            &format!("/v1/vms/{va}/modules"),
            &json!({"name": "dummy", "params": {"numdummies": "2"}}),
        )
        .expect(202);
    assert_eq!(r.body["state"], "Pending");
    assert_eq!(r.body["params"]["numdummies"], "2");
    assert_eq!(
        p.post(
            &a,
            &format!("/v1/vms/{va}/modules"),
            &json!({"name": "dummy"})
        )
        .expect(409)
        .problem_slug(),
        "conflict"
    );
    assert_eq!(
        p.post(
            &a,
            &format!("/v1/vms/{va}/modules"),
            &json!({"name": "nosuch"})
        )
        .expect(404)
        .problem_slug(),
        "not-found"
    );

    // Not approved for B: 403, and stored as Rejected with the reason.
    let r = p
        .post(
            &b,
            &format!("/v1/vms/{vb}/modules"),
            &json!({"name": "dummy"}),
        )
        .expect(403);
    assert_eq!(r.problem_slug(), "module-not-approved");
    let reqs = p.get(&b, &format!("/v1/vms/{vb}/modules")).expect(200);
    assert_eq!(reqs.body[0]["state"], "Rejected");
    assert!(reqs.body[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not approved for tenant tenant-b"));
    let r = p
        .post(
            &a,
            &format!("/v1/vms/{va}/modules"),
            &json!({"name": "zram"}),
        )
        .expect(403);
    assert_eq!(r.problem_slug(), "module-not-approved");

    // Unload of a request never loaded ends it at once; it can be requested again.
    let r = p
        .delete(&a, &format!("/v1/vms/{va}/modules/dummy"))
        .expect(202);
    assert_eq!(r.body["state"], "Unloaded");
    p.post(
        &a,
        &format!("/v1/vms/{va}/modules"),
        &json!({"name": "dummy"}),
    )
    .expect(202);
    p.delete(&a, &format!("/v1/vms/{va}/modules/zzz"))
        .expect(404);

    // Modules in a VM spec are checked at create time: all approved, or nothing is written.
    let r = p
        .post(&a, "/v1/vms", &json!({"name": "a2", "vcpus": 1, "memory_mib": 128, "modules": [{"name": "dummy"}, {"name": "zram"}]}))
        .expect(403);
    assert_eq!(r.problem_slug(), "module-not-approved");
    assert_eq!(
        p.get(&a, "/v1/vms").body["items"].as_array().unwrap().len(),
        1
    );
    let r = p
        .post(
            &a,
            "/v1/vms",
            &json!({"name": "a2", "vcpus": 1, "memory_mib": 128, "modules": [{"name": "dummy"}]}),
        )
        .expect(201);
    let id = r.body["id"].as_str().unwrap();
    let reqs = p.get(&a, &format!("/v1/vms/{id}/modules")).expect(200);
    assert_eq!(reqs.body[0]["name"], "dummy");
    assert_eq!(reqs.body[0]["state"], "Pending");

    // The refusals are audited for the tenant that was refused.
    let eb = p.get(&b, "/v1/events").expect(200);
    assert!(eb.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "module.request" && e["outcome"] == "denied"));
}

#[test]
fn module_names_resolve_as_the_kernel_does_and_the_catalog_refuses_unknown_parameters() {
    let p = Plane::start();
    let (a, admin) = (p.token("tenant-a"), p.token("admin"));
    p.publish("tcp_bbr", &real_module("tcp_bbr")).expect(201);
    p.put(
        &admin,
        "/v1/admin/modules/tcp_bbr/policy",
        &json!({"approved": true, "tenants": ["*"]}),
    )
    .expect(200);
    let vm = p.create_vm(&a, "dashes");
    // `tcp-bbr` is `tcp_bbr`, as modprobe has it.
    let r = p
        .post(
            &a,
            &format!("/v1/vms/{vm}/modules"),
            &json!({"name": "tcp-bbr"}),
        )
        .expect(202);
    assert_eq!(r.body["name"], "tcp_bbr");
    let r = p
        .delete(&a, &format!("/v1/vms/{vm}/modules/tcp-bbr"))
        .expect(202);
    assert_eq!(r.body["name"], "tcp_bbr");
    let r = p
        .post(
            &a,
            "/v1/vms",
            &json!({"name": "both", "vcpus": 1, "memory_mib": 128, "modules": [{"name": "tcp-bbr"}]}),
        )
        .expect(201);
    assert_eq!(r.body["spec"]["modules"][0]["name"], "tcp_bbr");
    // Like every other list, the catalog refuses parameters it does not take.
    let r = p.get(&a, "/v1/modules?limit=5").expect(400);
    assert_eq!(r.problem_slug(), "invalid-field");
}
