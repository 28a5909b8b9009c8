//! A tenant reaches only its own resources: another tenant's are 404 on every verb and
//! absent from every list.

use crate::support::{real_module, Plane};
use reqwest::Method;
use serde_json::json;

#[test]
fn tenants_never_see_each_other() {
    let p = Plane::start();
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));
    p.publish("dummy", &real_module("dummy")).expect(201);
    p.put(
        &admin,
        "/v1/admin/modules/dummy/policy",
        &json!({"approved": true, "tenants": ["*"]}),
    )
    .expect(200);

    let va = p.create_vm(&a, "shared-name");
    let vb = p.create_vm(&b, "shared-name"); // names are per tenant
    p.post(
        &a,
        &format!("/v1/vms/{va}/modules"),
        &json!({"name": "dummy"}),
    )
    .expect(202);

    for (me, other_vm) in [(&b, &va), (&a, &vb)] {
        let spec = json!({"name": "stolen", "vcpus": 1, "memory_mib": 128});
        let cases: Vec<(Method, String, Option<serde_json::Value>)> = vec![
            (Method::GET, format!("/v1/vms/{other_vm}"), None),
            (
                Method::PUT,
                format!("/v1/vms/{other_vm}"),
                Some(spec.clone()),
            ),
            (Method::DELETE, format!("/v1/vms/{other_vm}"), None),
            (Method::GET, format!("/v1/vms/{other_vm}/modules"), None),
            (
                Method::POST,
                format!("/v1/vms/{other_vm}/modules"),
                Some(json!({"name": "dummy"})),
            ),
            (
                Method::DELETE,
                format!("/v1/vms/{other_vm}/modules/dummy"),
                None,
            ),
        ];
        for (method, path, body) in cases {
            let r = p.call(method.clone(), Some(me), &path, body.as_ref(), &[]);
            assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
            assert_eq!(r.problem_slug(), "not-found");
            // The answer is the same as for a VM that does not exist at all.
            let ghost = path.replace(other_vm.as_str(), "00000000-0000-0000-0000-000000000000");
            let g = p.call(method.clone(), Some(me), &ghost, body.as_ref(), &[]);
            assert_eq!(g.status, 404);
            assert_eq!(
                r.body["detail"]
                    .as_str()
                    .unwrap()
                    .replace(other_vm.as_str(), "X"),
                g.body["detail"]
                    .as_str()
                    .unwrap()
                    .replace("00000000-0000-0000-0000-000000000000", "X"),
                "404s must not tell a foreign VM from a missing one"
            );
        }
    }

    // Lists hold only one's own.
    let la = p.get(&a, "/v1/vms").expect(200);
    let ids: Vec<&str> = la.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![va.as_str()]);
    let lb = p.get(&b, "/v1/vms").expect(200);
    let ids: Vec<&str> = lb.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![vb.as_str()]);

    // Nothing was changed by the attempts: A's VM and its request are intact.
    let vm = p.get(&a, &format!("/v1/vms/{va}")).expect(200);
    assert_eq!(vm.body["spec"]["name"], "shared-name");
    assert_eq!(vm.body["generation"], 1);
    let reqs = p.get(&a, &format!("/v1/vms/{va}/modules")).expect(200);
    assert_eq!(reqs.body[0]["state"], "Pending");

    // The audit trail is tenant-scoped; the admin sees everything.
    let ea = p.get(&a, "/v1/events").expect(200);
    for e in ea.body["items"].as_array().unwrap() {
        assert_eq!(e["tenant"], "tenant-a", "{e}");
        assert!(!e["resource"].as_str().unwrap().contains(&vb));
    }
    let eb = p.get(&b, "/v1/events").expect(200);
    assert!(eb.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant"] == "tenant-b"));
    let all = p.get(&admin, "/v1/vms").expect(200);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    let events = p.get(&admin, "/v1/events?limit=1000").expect(200);
    let actions: Vec<&str> = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "tenant.create",
        "vm.create",
        "module.publish_forced",
        "module.set_policy",
        "module.request",
    ] {
        assert!(actions.contains(&want), "missing {want} in {actions:?}");
    }
}
