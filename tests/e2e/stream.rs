//! `GET /v1/stream`: each caller sees, live, the changes it may see (its VMs, their
//! module requests, its audit trail; nodes for admins), and nothing of another tenant.

use crate::support::Plane;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A live stream as `(event, data)` pairs, read on a thread of its own.
fn open(p: &Plane, token: &str, query: &str) -> Receiver<(String, Value)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/v1/stream{query}", p.base))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut kind = String::new();
        for line in BufReader::new(resp).lines().map_while(Result::ok) {
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let data = serde_json::from_str(d).expect("data is JSON");
                if tx.send((kind.clone(), data)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Waits (up to 30 s) for an event that `want` accepts; everything seen on the way.
fn until(
    rx: &Receiver<(String, Value)>,
    what: &str,
    want: impl Fn(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((k, d)) => {
                let done = want(&k, &d);
                seen.push((k, d));
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("no {what} on the stream ({e}); saw {seen:?}"),
        }
    }
}

#[test]
fn a_stream_shows_each_caller_its_own_changes_live() {
    let p = Plane::start();
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));
    let before = p.create_vm(&a, "before");
    let sa = open(&p, &a, "");
    let sb = open(&p, &b, "");
    let sadmin = open(&p, &admin, "");
    // At the start: the VMs there are, with their requests; nodes for the admin.
    until(&sa, "A's existing VM", |k, d| {
        k == "vm" && d["id"] == before.as_str()
    });
    until(&sadmin, "the nodes", |k, _| k == "nodes");

    // A creates a VM: A's stream shows it and its audit event; the admin's too.
    let created = p.create_vm(&a, "live");
    // (The VM and its event are stored together: the event comes first, in the same look.)
    let seen = until(&sa, "A's new VM", |k, d| {
        k == "vm" && d["id"] == created.as_str()
    });
    assert!(
        seen.iter().any(|(k, d)| k == "audit"
            && d["action"] == "vm.create"
            && d["resource"] == format!("vms/{created}")),
        "{seen:?}"
    );
    until(&sadmin, "the admin sees A's VM", |k, d| {
        k == "vm" && d["id"] == created.as_str()
    });
    p.delete(&a, &format!("/v1/vms/{created}")).expect(204);
    until(&sa, "the deletion", |k, d| {
        k == "vm_deleted" && d["id"] == created.as_str()
    });

    // One created and deleted between two looks: its deletion still comes.
    let brief = p.create_vm(&a, "brief");
    p.delete(&a, &format!("/v1/vms/{brief}")).expect(204);
    until(&sa, "the brief VM's deletion", |k, d| {
        k == "vm_deleted" && d["id"] == brief.as_str()
    });

    // B's stream never carried anything of A's.
    p.create_vm(&b, "bs");
    let seen = until(&sb, "B's own vm.create", |k, d| {
        k == "audit" && d["action"] == "vm.create"
    });
    for (k, d) in &seen {
        assert_ne!(d["tenant"], "tenant-a", "{k}: {d}");
        assert!(
            d.get("vm_id").is_none_or(|v| v != before.as_str()),
            "{k}: {d}"
        );
    }

    // after_seq replays the trail from there.
    let replay = open(&p, &a, "?after_seq=0");
    until(&replay, "the replayed creation of `before`", |k, d| {
        k == "audit" && d["resource"] == format!("vms/{before}")
    });
}
