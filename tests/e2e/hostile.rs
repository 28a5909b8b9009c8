//! Requests nobody should send: the server answers each with a 4xx (never a 5xx), and
//! keeps serving.

use crate::support::Plane;
use reqwest::Method;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn raw(p: &Plane, bytes: &[u8]) -> String {
    let addr = p.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn hostile_requests_get_4xx_and_the_server_survives() {
    let mut p = Plane::start();
    let a = p.token("tenant-a");
    let paths = [
        "/v1/vms/%00",
        "/v1/vms/..%2F..%2Fetc%2Fpasswd",
        "/v1/vms/%ff%fe",
        &format!("/v1/vms/{}", "x".repeat(10_000)),
        "/v1/vms?limit=99999999999999999999",
        "/v1/vms?limit=-1",
        "/v1/vms?page_token=AAAA",
        "/v1/events?page_token=////",
        "/v1/tenants/%2e%2e",
        "/v1/admin/modules/x?kernel_release=",
        "/v1//vms",
        "/v1/vms/x/modules/%00",
    ];
    for path in paths {
        for m in [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
        ] {
            let r = p.call(
                m.clone(),
                Some(&a),
                path,
                Some(&serde_json::json!({"x": 1})),
                &[],
            );
            assert!(
                (400..500).contains(&r.status) || r.status == 200,
                "{m} {path}: {}",
                r.status
            );
        }
    }
    // A path that exists, with a method it does not take: 405 naming the methods it
    // takes; a path that does not exist: 404.
    for (m, path, allowed) in [
        (Method::PATCH, "/v1/vms/some-vm", "GET, PUT, DELETE"),
        (Method::DELETE, "/v1/vms", "GET, POST"),
        (Method::POST, "/v1/vms/some-vm/modules/tcp_bbr", "DELETE"),
    ] {
        let r = p.call(m.clone(), Some(&a), path, None, &[]);
        assert_eq!(r.status, 405, "{m} {path}: {}", r.body);
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.problem_slug(), "method-not-allowed");
        assert_eq!(
            r.headers.get("allow").and_then(|v| v.to_str().ok()),
            Some(allowed),
            "{m} {path}"
        );
    }
    let r = p.call(Method::GET, Some(&a), "/v1/nothing-here", None, &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.problem_slug(), "not-found");
    // Every answer carries its request's id: the caller's when sane, else a new one.
    let id_of = |headers: &[(&str, &str)]| {
        let r = p.call(Method::GET, Some(&a), "/v1/vms", None, headers);
        r.headers["x-request-id"].to_str().unwrap().to_string()
    };
    assert_eq!(id_of(&[("x-request-id", "trace-42.a:b")]), "trace-42.a:b");
    let fresh = id_of(&[]);
    assert_eq!(fresh.len(), 36, "{fresh}");
    assert_ne!(fresh, id_of(&[]));
    let odd = id_of(&[("x-request-id", "no spaces please")]);
    assert_eq!(odd.len(), 36, "{odd}");
    // A problem names its request in its body too.
    let r = p.call(
        Method::GET,
        Some("garbage"),
        "/v1/vms",
        None,
        &[("x-request-id", "trace-43")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.body["request_id"], "trace-43", "{}", r.body);
    let r = p.call(Method::GET, Some(&a), "/v1/vms/nope", None, &[]);
    assert_eq!(
        r.body["request_id"].as_str(),
        r.headers["x-request-id"].to_str().ok(),
        "{}",
        r.body
    );
    // Deeply nested and odd JSON.
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = p
        .http
        .post(format!("{}/v1/vms", p.base))
        .bearer_auth(&a)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .unwrap();
    assert!((400..500).contains(&r.status().as_u16()));
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = p
        .http
        .post(format!("{}/v1/vms", p.base))
        .bearer_auth(&a)
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = p
        .http
        .post(format!("{}/v1/vms", p.base))
        .bearer_auth(&a)
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe, 0x7b, 0x7d])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Broken HTTP on the wire.
    raw(&p, b"GARBAGE\r\n\r\n");
    raw(
        &p,
        b"GET /v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    );
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    raw(&p, big_header.as_bytes());
    raw(
        &p,
        b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{",
    );
    raw(
        &p,
        b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    // A body that claims to be small but is not.
    let resp = raw(
        &p,
        format!(
            "POST /v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            80_000,
            "a".repeat(80_000)
        )
        .as_bytes(),
    );
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "{}",
        resp.lines().next().unwrap_or("")
    );

    assert!(p.alive(), "the server must survive");
    p.get(&a, "/v1/vms").expect(200);

    // Metrics are for admins (and metrics tokens): anonymous 401, a tenant 403.
    let anonymous = p.http.get(format!("{}/metrics", p.base)).send().unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    p.get(&a, "/metrics").expect(403);
    // They saw all of this, by route pattern (never by raw path) and status.
    let m = p
        .http
        .get(format!("{}/metrics", p.base))
        .bearer_auth(p.token("admin"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains("modvisor_http_requests_total{method=\"GET\",route=\"/v1/vms\",status=\"200\"}"),
        "{m}"
    );
    assert!(m.contains("modvisor_http_request_duration_seconds_bucket"));
    assert!(m.contains("# TYPE modvisor_reconciler_pass_duration_seconds histogram"));
    assert!(!m.contains("passwd"), "raw paths must not become labels");
}

/// A node token, through the real registration (bootstrap token from the CLI).
fn node_token(p: &Plane, name: &str) -> String {
    let bootstrap = p.offline_bootstrap_token();
    let r = p
        .register_node(&bootstrap, name, "https://127.0.0.1:9")
        .expect(200);
    r.body["token"].as_str().unwrap().to_string()
}

#[test]
fn a_large_heartbeat_is_taken_and_a_hostile_guests_list_is_refused_clearly() {
    let p = Plane::start();
    let token = node_token(&p, "big-node");
    let modules: Vec<String> = (0..512).map(|i| format!("module_{i:0>40}")).collect();
    let vms: Vec<serde_json::Value> = (0..60)
        .map(|i| {
            serde_json::json!({"id": format!("vm-{i}"), "phase": "Running", "reason": null,
                               "guest_modules": modules})
        })
        .collect();
    let body = serde_json::json!({ "vms": vms });
    assert!(
        body.to_string().len() > 1 << 20,
        "well over the 64 KiB of tenants' bodies"
    );
    let r = p
        .node_post(&token, "/v1/nodes/big-node/heartbeat", &body)
        .expect(200);
    assert_eq!(
        r.body["remove"].as_array().unwrap().len(),
        60,
        "unknown VMs are removed"
    );

    let mut too_many = modules.clone();
    too_many.push("one_more".into());
    let hostile = serde_json::json!({"vms": [{"id": "vm-0", "phase": "Running", "reason": null, "guest_modules": too_many}]});
    let r = p
        .node_post(&token, "/v1/nodes/big-node/heartbeat", &hostile)
        .expect(400);
    assert_eq!(r.body["field"], "vms[0].guest_modules");
    let forged = serde_json::json!({"vms": [{"id": "vm-0", "phase": "Running", "reason": null, "guest_modules": ["x\nadmin"]}]});
    p.node_post(&token, "/v1/nodes/big-node/heartbeat", &forged)
        .expect(400);
}

#[test]
fn a_body_that_trickles_in_is_cut_off_with_a_408() {
    let p = Plane::start_plus(&["--body-timeout-secs", "1"]);
    let token = p.token("tenant-a");
    let addr = p.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // And the server serves on.
    p.get(&token, "/v1/vms").expect(200);
}

#[test]
fn metrics_can_also_be_served_on_their_own_address_with_the_same_tokens() {
    let p = Plane::start_plus(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = std::fs::read_to_string(p.data_dir().join("metrics.addr")).unwrap();
    let url = |path: &str| format!("http://{}{path}", addr.trim());
    assert_ne!(url(""), p.base, "a separate listener");
    let get = |path: &str, token: Option<String>| {
        let mut r = p.http.get(url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap()
    };
    assert_eq!(get("/metrics", None).status().as_u16(), 401);
    assert_eq!(
        get("/metrics", Some(p.token("tenant-a"))).status().as_u16(),
        403
    );
    let m = get("/metrics", Some(p.token("admin"))).text().unwrap();
    assert!(
        m.contains("modvisor_auth_failures_total{reason=\"missing\"} 1"),
        "{m}"
    );
    // Only metrics there: the API is not.
    assert_eq!(
        get("/v1/vms", Some(p.token("tenant-a"))).status().as_u16(),
        404
    );
}
