//! Real etcd members (Debian's `etcd-server`) for a test: a single member, or a cluster of
//! three, each with its own data directory and loopback ports, stopped and removed when
//! dropped. A member of a cluster can be killed (SIGKILL) and started again on its data.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts etcd.
const ETCD: &str = "/usr/bin/etcd";

/// One etcd member serving on loopback.
pub struct EtcdMember {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    peer: String,
    initial_cluster: String,
    /// `http` or `https`, and what else its command line says (TLS files).
    scheme: &'static str,
    extra: Vec<String>,
    /// `host:port` of its client API.
    pub client: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether etcd's `/health` at `client` says it is healthy.
fn healthy(client: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(client) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_secs(2))).is_err()
        || s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).is_ok() && answer.contains("\"health\":\"true\"")
}

impl EtcdMember {
    /// Starts a single-member cluster and waits (up to 30 s) until it is healthy.
    pub fn start() -> EtcdMember {
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut member = EtcdMember::new("m1", &peer, &format!("m1={peer}"));
        member.spawn();
        member.wait_healthy();
        member
    }

    /// Starts a single member that serves its clients over TLS with `cert` and `key`
    /// (PEM files) and takes only clients with a certificate of the CA in `ca`.
    pub fn start_tls(ca: &Path, cert: &Path, key: &Path) -> EtcdMember {
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut member = EtcdMember::new("m1", &peer, &format!("m1={peer}"));
        member.scheme = "https";
        for (flag, path) in [
            ("--cert-file", cert),
            ("--key-file", key),
            ("--trusted-ca-file", ca),
        ] {
            member.extra.push(flag.into());
            member.extra.push(path.display().to_string());
        }
        member.extra.push("--client-cert-auth".into());
        member.spawn();
        // Its /health is behind TLS too: wait for the port, then for etcd to answer.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&member.client).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not listen:\n{}",
                member.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        member
    }

    fn new(name: &str, peer: &str, initial_cluster: &str) -> EtcdMember {
        assert!(
            Path::new(ETCD).is_file(),
            "{ETCD} is missing: install Debian's etcd-server (`modvisor doctor --tests --install-missing` does)"
        );
        EtcdMember {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            name: name.to_string(),
            peer: peer.to_string(),
            initial_cluster: initial_cluster.to_string(),
            scheme: "http",
            extra: Vec::new(),
            client: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// Starts its process (again, on the same data directory).
    pub fn spawn(&mut self) {
        let client_url = format!("{}://{}", self.scheme, self.client);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd.log");
        let child = Command::new(ETCD)
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", "modvisor-test"])
            // Transactions of the store touch more keys than etcd's default 128 allows.
            .args(["--max-txn-ops", "10000"])
            // History is compacted, as an operator's cluster should be (see README).
            .args(["--auto-compaction-mode", "revision"])
            .args(["--auto-compaction-retention", "100000"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
    }

    /// Waits (up to 30 s) until it says it is healthy (which needs a quorum).
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(&self.client) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd was not healthy within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills its process (SIGKILL), keeping its data.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Err(e) = c.kill() {
                eprintln!("stopping etcd: {e}");
            }
            if let Err(e) = c.wait() {
                eprintln!("waiting for etcd: {e}");
            }
        }
    }

    /// Its log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of etcd members on loopback.
pub struct EtcdCluster {
    /// Its members.
    pub members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts `n` members as one cluster and waits until each is healthy.
    pub fn start(n: usize) -> EtcdCluster {
        let peers: Vec<String> = (0..n)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{}={p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdMember> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| EtcdMember::new(&format!("m{}", i + 1), p, &initial))
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &mut members {
            m.wait_healthy();
        }
        EtcdCluster { members }
    }

    /// `host:port,host:port,...` of the members' client APIs.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}
