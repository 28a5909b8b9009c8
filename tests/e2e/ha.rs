//! Several control planes on etcd (cargo feature `etcd`): three etcd members, three
//! `modvisor control-plane` replicas on them and one node agent that knows all three,
//! with QEMU guests. One leads (scheduler and reconciler); any serves the API.
//!
//! In one run, sharing the booted cluster: a quota race across replicas is exact; a
//! leader paused past its lease (SIGSTOP) is replaced and, resumed, leads no more; a
//! leader killed (-9) during a load of creates spread over the replicas is replaced
//! within the lease's bound (measured and printed), and every create that was answered
//! 201 exists and runs; the node agent fails over when its replica dies; one etcd member
//! down changes nothing, two make writes fail fast with a 503 problem (reads say why),
//! and with them back everything works again without a restart.

use crate::agents::NodeAgent;
use crate::etcd_member::EtcdCluster;
use crate::etcd_store::{start_with, token};
use crate::host::HostCleanup;
use crate::support::wait_for;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// One control-plane replica.
struct Replica {
    name: String,
    child: Option<Child>,
    base: String,
    internal: String,
}

impl Replica {
    fn start(root: &Path, name: &str, store: &str) -> Replica {
        let data = root.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let (child, base) = start_with(
            &data,
            store,
            &[
                "--internal-listen",
                "127.0.0.1:0",
                "--replica",
                name,
                "--node-timeout-secs",
                "6",
            ],
        );
        let internal = std::fs::read_to_string(data.join("control-plane-internal.addr")).unwrap();
        Replica {
            name: name.into(),
            child: Some(child),
            base,
            internal: format!("https://{}", internal.trim()),
        }
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process must run again to die of SIGKILL's reaping.
            self.signal("-CONT");
        }
        self.kill9();
    }
}

/// An HTTP answer: status and JSON body (Null when none).
fn call(
    http: &Client,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut req = match method {
        "POST" => http.post(url),
        "DELETE" => http.delete(url),
        _ => http.get(url),
    }
    .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.text().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The replicas that say (on /metrics) they lead now.
fn leaders(http: &Client, replicas: &[Replica], admin: &str) -> Vec<usize> {
    (0..replicas.len())
        .filter(|i| {
            let r = &replicas[*i];
            r.alive()
                && http
                    .get(format!("{}/metrics", r.base))
                    .bearer_auth(admin)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .and_then(|a| a.text())
                    .is_ok_and(|t| t.lines().any(|l| l == "modvisor_leader 1"))
        })
        .collect()
}

/// Waits until exactly one replica other than `not` leads; which one, and how long it took.
fn new_leader(
    http: &Client,
    replicas: &[Replica],
    admin: &str,
    not: Option<usize>,
) -> (usize, Duration) {
    let started = Instant::now();
    let leader = wait_for("one new leader", 30, || {
        match leaders(http, replicas, admin)[..] {
            [one] if Some(one) != not => Some(json!(one)),
            _ => None,
        }
    });
    (leader.as_u64().unwrap() as usize, started.elapsed())
}

/// A VM spec that the node need not boot.
fn parked(name: &str) -> Value {
    json!({"name": name, "vcpus": 1, "memory_mib": 128, "power_state": "stopped", "network": "none"})
}

#[test]
fn three_control_planes_on_three_etcd_members_fail_over_without_losing_anything() {
    modvisor_node_api::tls::install_provider();
    let mut etcd = EtcdCluster::start(3);
    let store = format!("etcd://{}/ha", etcd.endpoints());
    let dir = tempfile::tempdir().unwrap();
    let cgroup_parent = format!("modvisor-e2e-ha-{}", std::process::id());
    let _cleanup = HostCleanup {
        dir: dir.path().to_path_buf(),
        cgroup_parent: cgroup_parent.clone(),
    };
    let mut replicas: Vec<Replica> = ["cp-1", "cp-2", "cp-3"]
        .iter()
        .map(|n| Replica::start(dir.path(), n, &store))
        .collect();
    let http = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let admin = token(&store, &["--role", "admin"]);
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let url = |i: usize, path: &str| format!("{}{path}", bases[i]);
    let internal: Vec<String> = replicas.iter().map(|r| r.internal.clone()).collect();
    let bootstrap = token(&store, &["--role", "bootstrap", "--ttl", "600"]);
    let mut node = NodeAgent::start_on(
        "node-1",
        4_200_000,
        &cgroup_parent,
        &internal.join(","),
        &bootstrap,
        &dir.path().join("nodes"),
    );
    // Any replica sees what another wrote: the node registered with one of them.
    for (i, replica) in replicas.iter().enumerate() {
        wait_for(&format!("node-1 Ready on {}", replica.name), 120, || {
            let (_, nodes) = call(&http, "GET", &url(i, "/v1/nodes"), &admin, None).ok()?;
            (nodes[0]["state"] == "Ready").then_some(Value::Null)
        });
    }
    let (first, _) = new_leader(&http, &replicas, &admin, None);
    eprintln!("ha: {} leads", replicas[first].name);

    // The last slots of a quota, raced for through all three replicas: exact.
    let (status, _) = call(&http, "POST", &url(0, "/v1/tenants"), &admin, Some(&json!({"name": "racer", "quota": {"max_vms": 3, "max_vcpus": 32, "max_memory_mib": 32768}}))).unwrap();
    assert_eq!(status, 201);
    let racer = token(&store, &["--role", "tenant", "--tenant", "racer"]);
    let outcomes: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..9)
            .map(|i| {
                let (http, racer, base) = (&http, &racer, replicas[i % 3].base.clone());
                s.spawn(move || {
                    call(
                        http,
                        "POST",
                        &format!("{base}/v1/vms"),
                        racer,
                        Some(&parked(&format!("race-{i}"))),
                    )
                    .unwrap()
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|s| **s == 201).count(),
        3,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|s| **s == 409).count(),
        6,
        "{outcomes:?}"
    );
    let (_, tenant) = call(&http, "GET", &url(2, "/v1/tenants/racer"), &admin, None).unwrap();
    assert_eq!(tenant["usage"]["vms"], 3, "{tenant}");
    // They leave the node's capacity to the load below.
    let (_, listed) = call(&http, "GET", &url(1, "/v1/vms"), &racer, None).unwrap();
    for v in listed["items"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        let (status, _) = call(
            &http,
            "DELETE",
            &url(2, &format!("/v1/vms/{id}")),
            &racer,
            None,
        )
        .unwrap();
        assert!(status == 202 || status == 204, "DELETE {id}: {status}");
    }
    wait_for("the racer's VMs gone", 60, || {
        let (_, listed) = call(&http, "GET", &url(0, "/v1/vms"), &racer, None).ok()?;
        listed["items"]
            .as_array()?
            .is_empty()
            .then_some(Value::Null)
    });

    // The leader paused past its lease: another leads; resumed, it leads no more.
    replicas[first].signal("-STOP");
    let (second, took) = new_leader(&http, &replicas, &admin, Some(first));
    eprintln!(
        "ha: {} paused; {} leads after {took:?}",
        replicas[first].name, replicas[second].name
    );
    replicas[first].signal("-CONT");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        leaders(&http, &replicas, &admin),
        vec![second],
        "two leaders after SIGCONT"
    );

    // A load of creates spread over the replicas while the leader is killed (-9).
    let (status, _) = call(
        &http,
        "POST",
        &url(first, "/v1/tenants"),
        &admin,
        Some(&json!({"name": "load"})),
    )
    .unwrap();
    assert_eq!(status, 201);
    let load = token(&store, &["--role", "tenant", "--tenant", "load"]);
    let mut acked = Vec::new();
    let mut killed_at = None;
    for i in 0..4 {
        if i == 2 {
            replicas[second].kill9();
            killed_at = Some(Instant::now());
        }
        // Through each live replica in turn; one that gives no answer is skipped.
        let body =
            json!({"name": format!("load-{i}"), "vcpus": 1, "memory_mib": 192, "network": "none"});
        let answered = (0..3)
            .map(|k| (i + k) % 3)
            .filter(|r| replicas[*r].alive())
            .find_map(|r| call(&http, "POST", &url(r, "/v1/vms"), &load, Some(&body)).ok());
        match answered {
            Some((201, vm)) => acked.push(vm["id"].as_str().unwrap().to_string()),
            other => panic!("create load-{i}: {other:?}"),
        }
    }
    let (third, _) = new_leader(&http, &replicas, &admin, Some(second));
    let failover = killed_at.unwrap().elapsed();
    eprintln!(
        "ha: {} killed; {} leads {failover:?} after the kill (lease TTL {:?})",
        replicas[second].name,
        replicas[third].name,
        modvisor_control_plane::store::LEASE_TTL
    );
    for id in &acked {
        wait_for(&format!("VM {id} Running"), 240, || {
            let (_, v) = call(
                &http,
                "GET",
                &url(third, &format!("/v1/vms/{id}")),
                &load,
                None,
            )
            .ok()?;
            // The reason last: a CI log keeps a failure's last lines.
            if v["status"]["phase"] == "Failed" {
                panic!("VM {id} Failed: {v}\nreason: {}", v["status"]["reason"]);
            }
            (v["status"]["phase"] == "Running").then_some(Value::Null)
        });
    }

    // The node agent's replicas die until one is left: its heartbeats still arrive.
    for (i, replica) in replicas.iter_mut().enumerate() {
        if i != third {
            replica.kill9();
        }
    }
    let beat = |after: i64| {
        wait_for("a heartbeat through the last replica", 30, || {
            let (_, nodes) = call(&http, "GET", &url(third, "/v1/nodes"), &admin, None).ok()?;
            let at = nodes[0]["last_heartbeat_unix"].as_i64()?;
            (at > after && nodes[0]["state"] == "Ready").then_some(json!(at))
        })
    };
    let seen = beat(0).as_i64().unwrap();
    beat(seen + 1);

    // etcd: one member down changes nothing; two make writes fail fast with a 503 problem
    // and reads say why; with them back, writes work again without a restart.
    etcd.members[0].kill9();
    let vm = |n: &str| Some(parked(n));
    let (status, _) = call(
        &http,
        "POST",
        &url(third, "/v1/vms"),
        &load,
        vm("with-two").as_ref(),
    )
    .unwrap();
    assert_eq!(status, 201);
    etcd.members[1].kill9();
    let started = Instant::now();
    let (status, problem) = call(
        &http,
        "POST",
        &url(third, "/v1/vms"),
        &load,
        vm("with-one").as_ref(),
    )
    .unwrap();
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:modvisor:problem:storage", "{problem}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let (status, problem) = call(&http, "GET", &url(third, "/v1/vms"), &load, None).unwrap();
    assert_eq!(status, 503, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("etcd"),
        "{problem}"
    );
    let (status, ready) = call(&http, "GET", &url(third, "/readyz"), &admin, None).unwrap();
    assert_eq!(status, 503, "{ready}");
    etcd.members[0].spawn();
    etcd.members[1].spawn();
    etcd.members[0].wait_healthy();
    wait_for("writes again", 60, || {
        let (status, _) = call(
            &http,
            "POST",
            &url(third, "/v1/vms"),
            &load,
            vm("back").as_ref(),
        )
        .ok()?;
        (status == 201).then_some(Value::Null)
    });
    node.kill9();
}
