//! `modvisor up` with one node agent, as a child process of a benchmark, in a temporary
//! data directory: its tenant and admin clients, VMs brought to Running and removed.

use anyhow::{bail, Context, Result};
use modvisor_control_plane_api::types::{KernelMode, Phase, PowerState, VmSpec};
use modvisor_control_plane_api::ApiClient;
use std::process::Child;
use std::time::{Duration, Instant};

/// A running `modvisor up --nodes N`; killed when dropped, its nodes' network namespaces
/// removed.
pub struct UpWithNode {
    child: Child,
    dir: tempfile::TempDir,
    nodes: usize,
    /// Its API's base URL.
    pub base: String,
    /// A client as `tenant-a`.
    pub tenant: ApiClient,
    /// A client as the admin.
    pub admin: ApiClient,
    /// The cgroup parent of its jails.
    cgroup_parent: String,
}

impl Drop for UpWithNode {
    fn drop(&mut self) {
        // Ctrl-C, as a person would: `up` stops the guests it started (within its 30 s
        // bound); only one that does not end is killed.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT) {
            eprintln!("interrupting the bench's modvisor up: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!("the bench's modvisor up did not end within 60 s of SIGINT; killing it");
            if let Err(e) = self.child.kill().and_then(|()| self.child.wait().map(drop)) {
                eprintln!("stopping the bench's modvisor up: {e}");
            }
        }
        use modvisor_node_agent::network;
        for i in 1..=self.nodes {
            let name = format!("node-{i}");
            let data = self.dir.path().join("nodes").join(&name);
            if let Err(e) = network::remove_namespace(&name, &data) {
                eprintln!("removing {name}'s network namespace: {e}");
            }
        }
        let underlay = network::up_underlay_namespace(self.dir.path());
        if let Err(e) = network::cmd::Netns(underlay).remove() {
            eprintln!("removing the underlay namespace: {e}");
        }
        // The bench's cgroup parents, as far as they are empty.
        match modvisor_jailer::Cgroups::detect() {
            Ok(cgroups) => {
                for i in 1..=self.nodes {
                    cgroups.remove_parent(&format!("{}/node-{i}", self.cgroup_parent));
                }
            }
            Err(e) => eprintln!("finding cgroups to tidy: {e}"),
        }
    }
}

impl UpWithNode {
    /// Starts it (this process's own binary; with `catalog`, the guest kernel's modules
    /// published and the default allow-list approved) and waits until its node has
    /// registered.
    pub fn start(catalog: bool) -> Result<Self> {
        Self::start_nodes(catalog, 1)
    }

    /// [`UpWithNode::start`] with `nodes` node agents, waiting until all have registered.
    pub fn start_nodes(catalog: bool, nodes: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe().context("locating the modvisor binary")?;
        // Jails of the bench's own (cgroups and per-VM uids), never those of an `up` that
        // runs on this host beside it: its node agents sweep what is not theirs.
        let me = std::process::id();
        let cgroup_parent = format!("/modvisor-bench-{me}");
        let uid_base = 10_000_000 + (me % 1000) * 8 * 65_536;
        let log = std::fs::File::create(dir.path().join("up.log"))?;
        let child = std::process::Command::new(exe)
            .args(["up", "--nodes", &nodes.to_string(), "--catalog"])
            .arg(if catalog { "kernel" } else { "none" })
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--jail-cgroup-parent", &cgroup_parent])
            .args(["--jail-uid-base", &uid_base.to_string()])
            .env("MODVISOR_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting modvisor up")?;
        let addr_file = dir.path().join("control-plane.addr");
        let deadline = Instant::now() + Duration::from_secs(120);
        let base = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                break format!("http://{}", a.trim());
            }
            if Instant::now() > deadline {
                bail!("modvisor up did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let timeout = Duration::from_secs(30);
        let token = std::fs::read_to_string(dir.path().join("tokens/tenant-a.jwt"))?;
        let tenant = ApiClient::new(&base, &token, timeout)?;
        let admin = std::fs::read_to_string(dir.path().join("tokens/admin.jwt"))?;
        let admin = ApiClient::new(&base, &admin, timeout)?;
        let mut up = UpWithNode {
            child,
            dir,
            nodes,
            base,
            tenant,
            admin,
            cgroup_parent,
        };
        loop {
            match up.admin.list_nodes() {
                Ok(listed) if listed.len() >= nodes => return Ok(up),
                Ok(_) if Instant::now() > deadline => bail!("no node registered"),
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                // An `up` that is ending has closed its listener already: it says why in
                // its log, which is shown whether or not it ended.
                Err(e) => bail!("{e}; {}", up.ending()),
            }
        }
    }

    /// How `up` is doing after its API stopped answering: its exit status once it ended
    /// (waited for up to 10 s: an `up` that stops halts its node agents first), and the
    /// end of its log.
    fn ending(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break format!("it ended ({status})"),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => break "it still runs".to_string(),
                Err(e) => break format!("its status is unknown: {e}"),
            }
        };
        let log = match std::fs::read_to_string(self.dir.path().join("up.log")) {
            Ok(log) => log,
            Err(e) => format!("(its log is unreadable: {e})"),
        };
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        format!(
            "the bench's modvisor up: {status}; its log ends: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )
    }

    /// Creates a one-vCPU, 256 MiB VM named `name` and waits until it runs; its id and the
    /// seconds from create to Running.
    pub fn running_vm(&self, name: &str) -> Result<(String, f64)> {
        self.running_vm_in(name, KernelMode::Standard)
    }

    /// [`UpWithNode::running_vm`], its guest kernel booted in `kernel_mode`.
    pub fn running_vm_in(&self, name: &str, kernel_mode: KernelMode) -> Result<(String, f64)> {
        let start = Instant::now();
        let spec = VmSpec {
            name: name.into(),
            kernel_mode,
            vcpus: 1,
            memory_mib: 256,
            modules: Vec::new(),
            power_state: PowerState::Running,
            user_data: None,
            network: None,
        };
        let id = self.tenant.create_vm(&spec)?.id;
        loop {
            let vm = self.tenant.get_vm(&id)?.value;
            match vm.status.phase {
                Phase::Running => return Ok((id, start.elapsed().as_secs_f64())),
                Phase::Failed => bail!("the VM failed: {}", vm.status.reason.unwrap_or_default()),
                _ => {}
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("the VM did not reach Running");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Deletes VM `id` and waits (up to a minute) until it is gone, so that its QEMU does
    /// not outlive the bench (a node agent leaves running VMs behind on purpose, for
    /// adoption).
    pub fn remove_vm(&self, id: &str) {
        if let Err(e) = self.tenant.delete_vm(id) {
            eprintln!("deleting the bench VM {id}: {e}");
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.tenant.get_vm(id) {
                Err(e) if e.status() == Some(404) => return,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        eprintln!("the bench VM {id} was not gone after a minute");
    }
}

/// How the node's QEMU runs guests on this host: `kvm` or `tcg`.
pub fn qemu_accel() -> &'static str {
    if modvisor_node_agent::hostcaps::hardware_virtualization() {
        "kvm"
    } else {
        "tcg"
    }
}
