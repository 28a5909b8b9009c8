//! Every bad-token variant is 401 problem+json; roles reach only their endpoints.

use crate::support::{sign, Plane};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(role: &str, tenant: Option<&str>) -> Value {
    let mut c = json!({
        "sub": "test", "role": role, "aud": "modvisor",
        "iat": now(), "exp": now() + 600, "jti": "t-1"
    });
    if let Some(t) = tenant {
        c["tenant"] = json!(t);
    }
    c
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[track_caller]
fn assert_401(p: &Plane, token: Option<&str>, why: &str) {
    let r = p.call(reqwest::Method::GET, token, "/v1/vms", None, &[]);
    assert_eq!(r.status, 401, "{why}: {}", r.body);
    assert_eq!(r.content_type(), "application/problem+json", "{why}");
    assert_eq!(r.problem_slug(), "unauthenticated", "{why}");
    assert!(r.headers.get("www-authenticate").is_some(), "{why}");
    // The problem says why in words; no library's error names (`ExpiredSignature`,
    // `InvalidToken`, ...) reach the caller.
    let detail = r.body["detail"].as_str().unwrap_or_default();
    for name in [
        "ExpiredSignature",
        "ImmatureSignature",
        "InvalidToken",
        "InvalidSignature",
        "InvalidAudience",
        "InvalidAlgorithm",
        "MissingRequiredClaim",
        "Base64",
        "Json(",
        "Utf8",
    ] {
        assert!(!detail.contains(name), "{why}: {detail}");
    }
}

#[test]
fn every_bad_token_is_401() {
    let p = Plane::start();
    let pem = p.key_pem();
    let good = sign(&pem, &claims("tenant", Some("tenant-a")));
    p.get(&good, "/v1/vms").expect(200);

    assert_401(&p, None, "missing token");
    assert_401(&p, Some("garbage"), "not a JWT");
    assert_401(&p, Some(""), "empty token");

    // alg: none, with an empty signature.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("admin", None))
    );
    assert_401(&p, Some(&none), "alg none");

    // HS256 keyed with the public key (the classic algorithm-confusion attack).
    let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap();
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims("admin", None),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    assert_401(&p, Some(&hs), "HS256 with the public key");

    let mut expired = claims("tenant", Some("tenant-a"));
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    assert_401(&p, Some(&sign(&pem, &expired)), "expired");
    let r = p.call(
        reqwest::Method::GET,
        Some(&sign(&pem, &expired)),
        "/v1/vms",
        None,
        &[],
    );
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("the token has expired"),
        "{}",
        r.body
    );

    let mut aud = claims("tenant", Some("tenant-a"));
    aud["aud"] = json!("someone-else");
    assert_401(&p, Some(&sign(&pem, &aud)), "wrong audience");

    let mut no_exp = claims("tenant", Some("tenant-a"));
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_401(&p, Some(&sign(&pem, &no_exp)), "no exp");

    assert_401(&p, Some(&sign(&pem, &claims("root", None))), "unknown role");
    assert_401(
        &p,
        Some(&sign(&pem, &claims("tenant", None))),
        "tenant token without tenant",
    );
    assert_401(
        &p,
        Some(&sign(&pem, &claims("tenant", Some("tenant-zz")))),
        "tenant that does not exist",
    );

    // Tampered payload: tenant-a's signature over tenant-b's claims.
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims("tenant", Some("tenant-b"))),
        parts[2]
    );
    assert_401(&p, Some(&forged), "tampered payload");

    // Tampered signature.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert_401(&p, Some(&bad_sig), "tampered signature");

    // Signed by a key that is not the control plane's.
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let other_pem = other.to_pkcs8_pem(Default::default()).unwrap();
    assert_401(
        &p,
        Some(&sign(&other_pem, &claims("admin", None))),
        "foreign key",
    );

    // Not a Bearer scheme.
    let r = p.call(
        reqwest::Method::GET,
        None,
        "/v1/vms",
        None,
        &[("authorization", &format!("Basic {good}"))],
    );
    assert_eq!(r.status, 401);
}

#[test]
fn roles_reach_only_their_endpoints() {
    let p = Plane::start();
    let pem = p.key_pem();
    let node = sign(&pem, &claims("node", None));
    let a = p.token("tenant-a");
    let admin = p.token("admin");

    // Node tokens reach no tenant or admin endpoint.
    for path in [
        "/v1/vms",
        "/v1/tenants",
        "/v1/modules",
        "/v1/events",
        "/v1/tenants/tenant-a",
    ] {
        assert_eq!(
            p.get(&node, path).expect(403).problem_slug(),
            "forbidden",
            "{path}"
        );
    }
    p.post(
        &node,
        "/v1/vms",
        &json!({"name": "x", "vcpus": 1, "memory_mib": 128}),
    )
    .expect(403);

    // Tenants reach no admin endpoint.
    p.get(&a, "/v1/tenants").expect(403);
    p.post(&a, "/v1/tenants", &json!({"name": "evil"}))
        .expect(403);
    p.put(
        &a,
        "/v1/tenants/tenant-a/quota",
        &json!({"max_vms": 1000, "max_vcpus": 1000, "max_memory_mib": 100000}),
    )
    .expect(403);
    p.put(
        &a,
        "/v1/admin/modules/dummy/policy",
        &json!({"approved": true, "tenants": ["*"]}),
    )
    .expect(403);

    // Admins manage tenants but create no VMs of their own.
    p.get(&admin, "/v1/tenants").expect(200);
    p.post(
        &admin,
        "/v1/vms",
        &json!({"name": "x", "vcpus": 1, "memory_mib": 128}),
    )
    .expect(403);
    // A tenant may read its own tenant record only.
    p.get(&a, "/v1/tenants/tenant-a").expect(200);
    p.get(&a, "/v1/tenants/tenant-b").expect(404);
}
