//! Node agents in processes of their own (as on separate hosts), for the tests of a
//! cluster and of an agent's restart.

use crate::support::{modvisor, Plane};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// A node agent in a process of its own, registered with `plane` by a bootstrap token.
pub struct NodeAgent {
    /// This test's cgroup parent for its jails.
    pub cgroup_parent: String,
    /// Its name.
    pub name: String,
    /// Its data directory.
    pub dir: PathBuf,
    uid_base: u32,
    child: Option<Child>,
}

impl NodeAgent {
    /// Starts node agent `name` (per-VM uids from `uid_base`, jails under `cgroup_parent`)
    /// with its data in `root/name`.
    pub fn start(
        name: &str,
        uid_base: u32,
        cgroup_parent: &str,
        plane: &Plane,
        root: &Path,
    ) -> NodeAgent {
        let dir = root.join(name);
        let mut a = NodeAgent {
            cgroup_parent: cgroup_parent.to_string(),
            name: name.into(),
            dir,
            uid_base,
            child: None,
        };
        a.spawn(plane);
        a
    }

    /// Starts node agent `name` as [`NodeAgent::start`] does, with the internal API of
    /// every control-plane replica in `control_planes` (comma-separated) and a bootstrap
    /// token given.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn start_on(
        name: &str,
        uid_base: u32,
        cgroup_parent: &str,
        control_planes: &str,
        bootstrap_token: &str,
        root: &Path,
    ) -> NodeAgent {
        let mut a = NodeAgent {
            cgroup_parent: cgroup_parent.to_string(),
            name: name.into(),
            dir: root.join(name),
            uid_base,
            child: None,
        };
        a.launch(control_planes, bootstrap_token);
        a
    }

    /// Starts (again) its process.
    pub fn spawn(&mut self, plane: &Plane) {
        let out = modvisor()
            .args([
                "token",
                "issue",
                "--role",
                "bootstrap",
                "--ttl",
                "600",
                "--data-dir",
            ])
            .arg(plane.data_dir())
            .output()
            .unwrap();
        assert!(out.status.success());
        self.launch(
            &plane.internal_base(),
            String::from_utf8_lossy(&out.stdout).trim(),
        );
    }

    /// Starts its process with `bootstrap_token`, joining `control_planes`.
    fn launch(&mut self, control_planes: &str, bootstrap_token: &str) {
        let token = self.dir.with_extension("bootstrap");
        std::fs::create_dir_all(&self.dir).unwrap();
        std::fs::write(&token, bootstrap_token).unwrap();
        let child = modvisor()
            .args([
                "node-agent",
                "--name",
                &self.name,
                "--driver",
                "qemu",
                "--vcpus",
                "4",
                "--memory-mib",
                "2048",
            ])
            .args(["--control-plane", control_planes])
            .args(["--jail-cgroup-parent", &self.cgroup_parent])
            .args(["--jail-uid-base", &self.uid_base.to_string()])
            .args(["--underlay-netns", &self.underlay_netns()])
            .args(["--underlay-address", &self.underlay_address()])
            .arg("--bootstrap-token-file")
            .arg(&token)
            .arg("--data-dir")
            .arg(&self.dir)
            .env("MODVISOR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The underlay namespace of this test's agents (named for their common root, so
    /// that the test's cleanup finds it).
    pub fn underlay_netns(&self) -> String {
        let root = self.dir.parent().unwrap_or(&self.dir);
        format!(
            "mvul-{}",
            modvisor_node_agent::network::names::short_hash(root.as_os_str().as_encoded_bytes())
        )
    }

    /// Its underlay address: 198.18.0.N/24 with N from its uid range (distinct among the
    /// agents of one test, whose ranges are disjoint).
    pub fn underlay_address(&self) -> String {
        format!("198.18.0.{}/24", (self.uid_base / 100_000) % 200 + 1)
    }

    /// Its network namespace (bridges, taps, guards).
    pub fn netns(&self) -> String {
        modvisor_node_agent::network::namespace_of(&self.name, &self.dir)
    }

    /// Kills its process (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Err(e) = c.kill().and_then(|()| c.wait().map(drop)) {
                eprintln!("killing node agent {}: {e}", self.name);
            }
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.kill9();
    }
}
