//! A real etcd member (Debian's `etcd-server`) for a test: its own data directory and
//! loopback ports, stopped and removed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts etcd.
const ETCD: &str = "/usr/bin/etcd";

/// One etcd member serving on loopback.
pub struct EtcdMember {
    child: Child,
    dir: tempfile::TempDir,
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
        assert!(
            Path::new(ETCD).is_file(),
            "{ETCD} is missing: install Debian's etcd-server (`modvisor doctor --tests --install-missing` does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let client = format!("127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let client_url = format!("http://{client}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd.log");
        let child = Command::new(ETCD)
            .args(["--name", "m1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m1={peer}")])
            // Transactions of the store touch more keys than etcd's default 128 allows.
            .args(["--max-txn-ops", "10000"])
            .args(["--auto-compaction-mode", "revision"])
            .args(["--auto-compaction-retention", "100000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        let mut member = EtcdMember { child, dir, client };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(&member.client) {
            if let Ok(Some(status)) = member.child.try_wait() {
                panic!("etcd exited ({status}):\n{}", member.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd was not healthy within 30 s:\n{}",
                member.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        member
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
        if let Err(e) = self.child.kill() {
            eprintln!("stopping etcd: {e}");
        }
        if let Err(e) = self.child.wait() {
            eprintln!("waiting for etcd: {e}");
        }
    }
}
