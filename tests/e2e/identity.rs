//! Who may act as whom: listed tokens and their revocation (honoured at once, after a
//! restart too), and node identity (a name is bound to one node credential; admins
//! re-bind and delete nodes).

use crate::support::{sign, Plane};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

/// The claims of a JWT, read without verifying it.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn jti_of(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_string()
}

fn jtis(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["jti"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tokens_are_listed_and_a_revoked_token_is_refused_at_once() {
    let mut p = Plane::start();
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));

    // What `up` wrote is listed: each tenant sees its own, the admin sees all.
    let mine = p.get(&a, "/v1/me/tokens").expect(200).body;
    assert_eq!(jtis(&mine), vec![jti_of(&a)], "{mine}");
    assert_eq!(mine[0]["role"], "tenant");
    assert_eq!(mine[0]["tenant"], "tenant-a");
    assert!(
        mine[0].get("token").is_none(),
        "a listing never shows tokens"
    );
    let all = jtis(&p.get(&admin, "/v1/tokens").expect(200).body);
    for t in [&a, &b, &admin] {
        assert!(all.contains(&jti_of(t)), "{all:?}");
    }
    p.get(&a, "/v1/tokens").expect(403);

    // An admin issues a second token for tenant A over the API: shown once, listed.
    let issued = p
        .post(
            &admin,
            "/v1/tokens",
            &json!({"role": "tenant", "tenant": "tenant-a", "ttl_secs": 600}),
        )
        .expect(201)
        .body;
    let second = issued["token"].as_str().unwrap().to_string();
    assert_eq!(issued["jti"], jti_of(&second));
    p.get(&second, "/v1/vms").expect(200); // now in the verifier's cache
    assert_eq!(
        jtis(&p.get(&a, "/v1/me/tokens").expect(200).body).len(),
        2,
        "tenant A sees both of its tokens"
    );

    // B cannot see or revoke A's token; that changes nothing.
    p.delete(&b, &format!("/v1/tokens/{}", jti_of(&second)))
        .expect(404);
    p.get(&second, "/v1/vms").expect(200);

    // A revokes it: refused on the very next request, though cached as verified.
    p.delete(&a, &format!("/v1/tokens/{}", jti_of(&second)))
        .expect(204);
    let r = p.get(&second, "/v1/vms").expect(401);
    assert!(
        r.body["detail"].as_str().unwrap().contains("revoked"),
        "{}",
        r.body
    );
    p.delete(&a, &format!("/v1/tokens/{}", jti_of(&second)))
        .expect(204); // twice is no error
    let listed = p.get(&a, "/v1/me/tokens").expect(200).body;
    let revoked = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["jti"] == jti_of(&second).as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{listed}");
    p.get(&a, "/v1/vms").expect(200);

    // An admin revokes a token that was never listed (signed offline) by its id.
    let offline = sign(
        &p.key_pem(),
        &json!({"sub": "tenant-b", "role": "tenant", "tenant": "tenant-b", "aud": "modvisor",
                "iat": claims_of(&b)["iat"], "exp": claims_of(&b)["exp"], "jti": "offline-1"}),
    );
    p.get(&offline, "/v1/vms").expect(200);
    p.delete(&b, "/v1/tokens/offline-1").expect(404); // not listed as B's
    p.delete(&admin, "/v1/tokens/offline-1").expect(204);
    p.get(&offline, "/v1/vms").expect(401);

    // Revocations are in the store: a restart keeps them.
    p.restart();
    p.get(&second, "/v1/vms").expect(401);
    p.get(&offline, "/v1/vms").expect(401);
    p.get(&a, "/v1/vms").expect(200);

    // Bad input changes nothing and says why.
    let bad = |body: Value, field: &str| {
        let r = p.post(&admin, "/v1/tokens", &body).expect(400);
        assert_eq!(r.body["field"], field, "{}", r.body);
    };
    bad(json!({"role": "node", "ttl_secs": 600}), "role");
    bad(json!({"role": "tenant", "ttl_secs": 600}), "tenant");
    bad(
        json!({"role": "admin", "tenant": "tenant-a", "ttl_secs": 600}),
        "tenant",
    );
    bad(json!({"role": "admin", "ttl_secs": 5}), "ttl_secs");
    bad(
        json!({"role": "admin", "sub": "a b", "ttl_secs": 600}),
        "sub",
    );
    p.post(
        &admin,
        "/v1/tokens",
        &json!({"role": "tenant", "tenant": "nobody", "ttl_secs": 600}),
    )
    .expect(404);
    p.delete(&admin, "/v1/tokens/not%20an%20id").expect(400);
    let bootstrap = p.offline_bootstrap_token();
    p.delete(&bootstrap, &format!("/v1/tokens/{}", jti_of(&a)))
        .expect(403);
    p.get(&a, "/v1/vms").expect(200);
}

#[test]
fn a_node_name_is_bound_to_its_credential() {
    let p = Plane::start();
    let admin = p.token("admin");
    let a = p.token("tenant-a");
    let bootstrap = p.offline_bootstrap_token();
    let beat = |token: &str, name: &str| {
        p.node_post(
            token,
            &format!("/v1/nodes/{name}/heartbeat"),
            &json!({"vms": []}),
        )
    };
    let token_of = |r: crate::support::Resp| r.body["token"].as_str().unwrap().to_string();

    let first = token_of(
        p.register_node(&bootstrap, "n1", "https://127.0.0.1:9")
            .expect(200),
    );
    beat(&first, "n1").expect(200);

    // A bootstrap-token holder cannot take the name (nor move it to its own address).
    let r = p
        .register_node(&bootstrap, "n1", "https://127.0.0.1:7")
        .expect(409);
    assert!(
        r.body["detail"].as_str().unwrap().contains("n1"),
        "{}",
        r.body
    );
    let node = p.get(&admin, "/v1/nodes/n1").expect(200).body;
    assert_eq!(node["address"], "https://127.0.0.1:9");

    // A node acts only as itself.
    let other = token_of(
        p.register_node(&bootstrap, "n2", "https://127.0.0.1:8")
            .expect(200),
    );
    beat(&first, "n2").expect(404);
    p.register_node(&first, "n2", "https://127.0.0.1:9")
        .expect(403);
    beat(&other, "n2").expect(200);

    // The node re-registers itself; the credential it replaces is dead at once.
    let second = token_of(
        p.register_node(&first, "n1", "https://127.0.0.1:9")
            .expect(200),
    );
    beat(&first, "n1").expect(401);
    p.node_get(&first, "/v1/blobs/00").expect(401);
    beat(&second, "n1").expect(200);
    // A key holder's token for the node with any other id is not its credential.
    let forged = sign(
        &p.key_pem(),
        &json!({"sub": "n1", "role": "node", "aud": "modvisor", "iat": claims_of(&second)["iat"],
                "exp": claims_of(&second)["exp"], "jti": "forged-1"}),
    );
    beat(&forged, "n1").expect(401);

    // An admin re-binds the name (e.g. a replaced machine).
    let third = token_of(
        p.register_node(&admin, "n1", "https://127.0.0.1:6")
            .expect(200),
    );
    beat(&second, "n1").expect(401);
    beat(&third, "n1").expect(200);
    let listed = p.get(&admin, "/v1/tokens").expect(200).body;
    let node_creds: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["role"] == "node" && t["sub"] == "n1")
        .collect();
    assert_eq!(node_creds.len(), 3, "{listed}");
    assert_eq!(
        node_creds
            .iter()
            .filter(|t| t["revoked_at"].is_null())
            .count(),
        1,
        "only the current credential is live"
    );

    // A node holding VMs cannot be deleted; drained, it can, and its credential dies.
    let vm = p.create_vm(&a, "v1");
    crate::support::wait_until("the VM is placed on a node", 30, || {
        let v = p.get(&a, &format!("/v1/vms/{vm}")).expect(200).body;
        v["status"]["node"].is_string()
    });
    let holder = p.get(&a, &format!("/v1/vms/{vm}")).expect(200).body["status"]["node"]
        .as_str()
        .unwrap()
        .to_string();
    let r = p.delete(&admin, &format!("/v1/nodes/{holder}")).expect(409);
    assert!(
        r.body["detail"].as_str().unwrap().contains("drain"),
        "{}",
        r.body
    );
    p.get(&admin, &format!("/v1/nodes/{holder}")).expect(200);
    // The CLI's drain says what it would stop and, without --yes and without a terminal
    // to ask on, changes nothing; with --yes it drains, audited as a drain.
    let cli = |args: &[&str]| {
        crate::support::modvisor()
            .args(args)
            .env("MODVISOR_API", &p.base)
            .env("MODVISOR_TOKEN_FILE", p.token_file("admin"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let refused = cli(&["node", "drain", &holder]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("stops 1 VM(s)") && said.contains(&vm),
        "{said}"
    );
    assert!(said.contains("pass --yes"), "{said}");
    let still = p
        .get(&admin, &format!("/v1/nodes/{holder}"))
        .expect(200)
        .body;
    assert_eq!(still["cordoned"], false, "{still}");
    let listed = cli(&["node", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&holder),
        "{listed:?}"
    );
    // Drained (both, so that the VM waits unplaced), n1 holds nothing.
    let drained = cli(&["node", "drain", &holder, "--yes"]);
    assert!(drained.status.success(), "{drained:?}");
    let other_node = if holder == "n1" { "n2" } else { "n1" };
    p.post(&admin, &format!("/v1/nodes/{other_node}/drain"), &json!({}))
        .expect(200);
    let events = p.get(&admin, "/v1/events?limit=1000").expect(200).body;
    let drains: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "node.drain")
        .collect();
    assert_eq!(drains.len(), 2, "{events}");
    assert!(
        !events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "node.cordon"),
        "a drain is audited as one"
    );
    crate::support::wait_until("n1 and n2 hold nothing", 30, || {
        ["n1", "n2"].iter().all(|n| {
            p.get(&admin, &format!("/v1/nodes/{n}")).expect(200).body["allocated"]["vcpus"] == 0
        })
    });
    p.delete(&a, "/v1/nodes/n1").expect(403);
    p.delete(&admin, "/v1/nodes/n1").expect(204);
    p.get(&admin, "/v1/nodes/n1").expect(404);
    beat(&third, "n1").expect(401);
    p.delete(&admin, "/v1/nodes/n1").expect(404);
    // The name is free again.
    p.register_node(&bootstrap, "n1", "https://127.0.0.1:9")
        .expect(200);
}

#[test]
fn heartbeats_renew_a_node_credential_before_it_expires() {
    // Credentials of 8 s: renewed by a heartbeat once under 2 s remain.
    let p = Plane::start_plus(&["--node-credential-ttl-secs", "8"]);
    let admin = p.token("admin");
    let bootstrap = p.offline_bootstrap_token();
    let beat = |token: &str| p.node_post(token, "/v1/nodes/n1/heartbeat", &json!({"vms": []}));
    let first = p
        .register_node(&bootstrap, "n1", "https://127.0.0.1:9")
        .expect(200)
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = beat(&first).expect(200);
    assert!(r.body.get("credential").is_none(), "fresh: {}", r.body);

    // In its last quarter, a heartbeat's answer carries the renewal.
    let mut renewed = None;
    crate::support::wait_until("a renewal", 10, || {
        renewed = beat(&first).expect(200).body["credential"]
            .as_str()
            .map(str::to_string);
        renewed.is_some()
    });
    let second = renewed.unwrap();
    assert_ne!(jti_of(&second), jti_of(&first));
    assert_eq!(claims_of(&second)["sub"], "n1");

    // Its answer lost: the node presents the old one again and gets another; the one it
    // never received is revoked.
    let third = beat(&first).expect(200).body["credential"]
        .as_str()
        .unwrap()
        .to_string();
    beat(&second).expect(401);

    // Presenting the new one retires the old one.
    let r = beat(&third).expect(200);
    assert!(r.body.get("credential").is_none(), "{}", r.body);
    beat(&first).expect(401);
    let listed = p.get(&admin, "/v1/tokens").expect(200).body;
    let live: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["sub"] == "n1" && t["revoked_at"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "{listed}");
    assert_eq!(live[0]["jti"], jti_of(&third).as_str());
    // A restarted node re-registers with it.
    p.register_node(&third, "n1", "https://127.0.0.1:9")
        .expect(200);
}

#[test]
fn a_node_down_past_its_credentials_life_comes_back_with_it() {
    let p = Plane::start_plus(&["--node-credential-ttl-secs", "8"]);
    let bootstrap = p.offline_bootstrap_token();
    let token_of = |r: crate::support::Resp| r.body["token"].as_str().unwrap().to_string();
    let first = token_of(
        p.register_node(&bootstrap, "n1", "https://127.0.0.1:9")
            .expect(200),
    );
    let second = token_of(
        p.register_node(&first, "n1", "https://127.0.0.1:9")
            .expect(200),
    );
    // No heartbeats (the node is down; a heartbeat would renew it) until its credential
    // has expired: a blob fetch says when.
    p.node_get(&second, "/v1/blobs/00").expect(404);
    crate::support::wait_until("the credential expired", 20, || {
        p.node_get(&second, "/v1/blobs/00").status == 401
    });
    p.node_post(&second, "/v1/nodes/n1/heartbeat", &json!({"vms": []}))
        .expect(401);
    // Expired, still bound and unrevoked: it re-registers (and only that).
    p.get(&second, "/v1/vms").expect(401);
    let third = token_of(
        p.register_node(&second, "n1", "https://127.0.0.1:9")
            .expect(200),
    );
    p.node_post(&third, "/v1/nodes/n1/heartbeat", &json!({"vms": []}))
        .expect(200);
    // An expired credential that was replaced is refused; so is one for another name.
    p.register_node(&second, "n1", "https://127.0.0.1:9")
        .expect(401);
    p.register_node(&first, "n1", "https://127.0.0.1:9")
        .expect(401);
    p.register_node(&third, "n2", "https://127.0.0.1:9")
        .expect(403);
}

#[test]
fn a_node_trusts_the_control_plane_only_through_the_ca_its_bootstrap_token_pins() {
    let p = Plane::start();
    let admin = p.token("admin");
    let bootstrap = p.offline_bootstrap_token();
    let pin = claims_of(&bootstrap)["ca_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pin.len(), 64, "a bootstrap token pins the CA by sha256");
    // The node-facing API is on its own listener, TLS only: on the public one this path
    // is only a node's name (`/v1/nodes/{name}`: GET, DELETE).
    let r = p
        .post(&bootstrap, "/v1/nodes/register", &json!({}))
        .expect(405);
    assert_eq!(r.headers["allow"], "GET, DELETE");
    let plain = p.internal_base().replace("https://", "http://").to_string();
    assert!(
        p.http.get(format!("{plain}/v1/ca.pem")).send().is_err(),
        "the internal API answered plain HTTP"
    );

    // A bootstrap token pinning another CA: the node agent stops before it sends it.
    let mut claims = claims_of(&bootstrap);
    claims["ca_sha256"] = json!("00".repeat(32));
    claims["jti"] = json!("wrong-pin");
    let wrong = crate::support::sign(&p.key_pem(), &claims);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("bootstrap");
    std::fs::write(&token_file, &wrong).unwrap();
    let out = crate::support::modvisor()
        .args([
            "node-agent",
            "--name",
            "pinned",
            "--driver",
            "qemu",
            "--jail",
            "off",
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--control-plane",
            &p.internal_base(),
        ])
        .arg("--bootstrap-token-file")
        .arg(&token_file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("MODVISOR_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pins"), "{stderr}");
    let nodes = p.get(&admin, "/v1/nodes").expect(200).body;
    assert_eq!(nodes, json!([]), "nothing registered");
    let events = p.get(&admin, "/v1/events").expect(200).body.to_string();
    assert!(!events.contains("node.register"), "{events}");
}
