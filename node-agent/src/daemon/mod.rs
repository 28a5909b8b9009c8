//! `modvisor node-agent`: registers with the control plane, heartbeats, serves the node
//! API, and runs each VM through the hypervisor driver, re-adopting VMs after a restart.

mod api;
mod console;
mod credential;
mod error;
mod exec;
mod fetch;
mod interfaces;
mod record;
mod trust;
mod user_data;
mod vm;

use crate::driver::HypervisorDriver;
use crate::hostcaps;
use crate::jailing::{JailOptions, NodeJails};
use crate::kvm::KvmDriver;
use crate::metrics::NodeMetrics;
use crate::qemu::QemuDriver;
use modvisor_auth::TokenVerifier;
use modvisor_node_api::internal::{
    Heartbeat, NodeCredential, NodeFeature, RegisterNode, Resources,
};
use modvisor_node_api::{ClientError, ControlPlaneClient};
use record::VmRecord;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm::{Command, Host, VmHandle};

/// Which hypervisor driver to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// `kvm` with hardware virtualization, `qemu` otherwise.
    Auto,
    /// QEMU.
    Qemu,
    /// Our own VMM.
    Kvm,
}

/// How to run a node agent.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name.
    pub name: String,
    /// Control plane base URL.
    pub control_plane: String,
    /// The bootstrap token.
    pub bootstrap_token: String,
    /// Where records, blobs, the initramfs and guests' run directories live.
    pub data_dir: PathBuf,
    /// Node API address.
    pub listen: SocketAddr,
    /// Driver choice.
    pub driver: DriverChoice,
    /// Capacity offered to guests.
    pub capacity: Resources,
    /// How VM processes are jailed; `None` (`--jail off`) runs them unconfined, for
    /// development only.
    pub jail: Option<JailOptions>,
    /// Kernel parameters appended to every guest's command line.
    pub guest_kernel_args: Option<String>,
    /// The control plane's CA certificate (PEM file), if given; else the CA the bootstrap
    /// token pins, else the one saved at the last registration.
    pub control_plane_ca: Option<PathBuf>,
    /// Whether to offer tenant networks (when the driver can).
    pub networking: bool,
    /// Where the node's tenant networks meet other nodes', if anywhere.
    pub underlay: Option<crate::network::Underlay>,
    /// Stop the guests when the agent stops (`up`, which started them). A node agent
    /// service leaves them running for the next start to adopt.
    pub stop_vms_on_exit: bool,
}

/// Errors that keep a node agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A setup step failed.
    #[error("{0}")]
    Setup(String),
}

/// `cmdline` with the operator's extra guest kernel arguments, if any.
fn with_extra(cmdline: String, extra: &Option<String>) -> String {
    match extra {
        Some(extra) => format!("{cmdline} {extra}"),
        None => cmdline,
    }
}

fn setup<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> NodeError + '_ {
    move |e| NodeError::Setup(format!("{what}: {e}"))
}

/// The node's shared state.
pub struct Node {
    name: String,
    host: Host,
    vms: Mutex<HashMap<String, VmHandle>>,
    verifier: TokenVerifier,
    kernel_release: String,
    fetcher: fetch::Fetcher,
}

/// Picks the driver, saying why. `kvm` is our own VMM (`modvisor-vmm` beside this binary,
/// or `modvisor vmm`); it needs hardware virtualization to boot a Linux guest. With `jails`, every
/// guest's hypervisor runs jailed.
pub fn pick_driver(
    choice: DriverChoice,
    jails: Option<Arc<NodeJails>>,
) -> Result<Arc<dyn HypervisorDriver>, NodeError> {
    let hw = hostcaps::hardware_virtualization();
    let kvm = || -> Result<Arc<dyn HypervisorDriver>, NodeError> {
        let driver =
            KvmDriver::beside_this_executable().map_err(setup("locating the vmm binary"))?;
        tracing::info!(vmm = %driver.program().0.display(), "kvm driver");
        Ok(Arc::new(driver.with_jails(jails.clone())))
    };
    match (choice, hw) {
        (DriverChoice::Kvm, false) => Err(NodeError::Setup(format!(
            "--driver kvm needs hardware virtualization (vmx/svm), and this host has none ({}); a Linux guest cannot boot under our vmm here. Use --driver qemu",
            hostcaps::describe()
        ))),
        (DriverChoice::Kvm, true) | (DriverChoice::Auto, true) => kvm(),
        (DriverChoice::Auto, false) | (DriverChoice::Qemu, _) => {
            if choice == DriverChoice::Auto {
                tracing::info!(host = %hostcaps::describe(), "driver auto: qemu");
            }
            let driver = QemuDriver::detect().map_err(setup("qemu driver"))?;
            Ok(Arc::new(driver.with_jails(jails.clone())))
        }
    }
}

/// Starts the node agent: prepares guests, registers, re-adopts VMs, heartbeats, and
/// serves the node API until the process ends.
pub async fn run(config: NodeConfig) -> Result<(), NodeError> {
    // Setup blocks (files, processes, a blocking HTTP client): keep it off the runtime.
    let stop_vms = config.stop_vms_on_exit;
    let (node, listener, tls) = actix_web::web::block(move || prepare(config))
        .await
        .map_err(setup("node agent setup"))??;
    let served = api::serve(node.clone(), listener, tls).await;
    if stop_vms {
        let halted = actix_web::web::block(move || node.halt_all(HALT_WITHIN))
            .await
            .map_err(setup("stopping the guests"))?;
        tracing::info!(halted, "guests stopped with the node agent");
    }
    served.map_err(setup("node API"))
}

/// How long an agent that stops waits for its guests to stop.
const HALT_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// What a started node serves: its state, its listener and its TLS identity.
type Prepared = (Arc<Node>, std::net::TcpListener, rustls::ServerConfig);

fn prepare(config: NodeConfig) -> Result<Prepared, NodeError> {
    let records = config.data_dir.join("vms");
    std::fs::create_dir_all(&records).map_err(setup("records"))?;
    let saved = VmRecord::load_all(&records);
    let jails = match &config.jail {
        Some(options) => {
            let jails = NodeJails::new(&config.data_dir, &config.name, options);
            let keep: Vec<String> = saved.iter().map(|r| r.id.clone()).collect();
            let line = jails.prepare_host(&keep).map_err(setup("jail"))?;
            tracing::info!("{line}");
            Some(Arc::new(jails))
        }
        None => {
            tracing::warn!(
                "jail off: VM processes run unconfined as the agent's user (development only)"
            );
            None
        }
    };
    let driver = pick_driver(config.driver, jails)?;
    tracing::info!(driver = driver.name(), accel = %driver.acceleration(), "hypervisor driver");
    let network = match (config.networking, driver.networking()) {
        (true, true) => {
            let n = crate::network::NodeNetwork::open(
                &config.name,
                &config.data_dir,
                config.underlay.clone(),
            )
            .map_err(setup(
                "tenant networks (iproute2 and nftables; --networking off to run without)",
            ))?;
            let keep: Vec<String> = saved.iter().map(|r| r.id.clone()).collect();
            for removed in n.sweep(&keep).map_err(setup("tenant networks: sweep"))? {
                tracing::info!(%removed, "removed what an earlier run left in the node's namespace");
            }
            tracing::info!(netns = %n.netns().0, underlay = ?n.underlay_address(), "tenant networks");
            Some(Arc::new(n))
        }
        (true, false) => {
            tracing::warn!(
                driver = driver.name(),
                "this driver offers no networking: VMs on tenant networks are not placed here"
            );
            None
        }
        (false, _) => None,
    };
    let kernel = modvisor_guest::kernel::resolve(|m| tracing::info!("{m}"))
        .map_err(setup("guest kernel"))?;
    std::fs::create_dir_all(&config.data_dir).map_err(setup("data dir"))?;
    let initrd = config.data_dir.join("initramfs.gz");
    let userland = modvisor_guest::userland::resolve(|m| tracing::info!("{m}"))
        .map_err(setup("guest userland"))?;
    let trust = modvisor_modules::TrustStore::from_kernel_image(
        &std::fs::read(&kernel.vmlinuz).map_err(setup("guest kernel"))?,
    )
    .map_err(setup("keys of the guest kernel"))?;
    let platform = crate::platform::platform_modules(&kernel, &trust)
        .map_err(setup("the guest kernel's platform modules"))?;
    let extra: Vec<(&str, &[u8])> = platform
        .iter()
        .map(|m| (m.path.as_str(), m.bytes.as_slice()))
        .collect();
    let image = modvisor_guest::build_initramfs(&userland, &extra).map_err(setup("initramfs"))?;
    std::fs::write(&initrd, image).map_err(setup("initramfs"))?;
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(setup("node API listener"))?;
    let addr = listener.local_addr().map_err(setup("node API listener"))?;
    let ca_pem = trust::control_plane_ca(&config)?;
    let control_plane =
        ControlPlaneClient::new(&config.control_plane, &ca_pem, Duration::from_secs(30))
            .map_err(setup("control plane client"))?;
    // The key the node API serves TLS with never leaves this process: the control plane
    // signs a certificate for it from a request.
    let (tls_key, csr_pem) = trust::node_key(&config.name)?;
    let reg = RegisterNode {
        name: config.name.clone(),
        address: format!("https://{addr}"),
        capacity: config.capacity,
        driver: driver.name().to_string(),
        hardware_virtualization: hostcaps::hardware_virtualization(),
        kernel_release: kernel.release.clone(),
        features: match network {
            Some(_) => vec![NodeFeature::Networking],
            None => Vec::new(),
        },
        underlay_address: network
            .as_ref()
            .and_then(|n| n.underlay_address())
            .map(|a| a.to_string()),
        csr_pem,
    };
    let own = credential::load(&config.data_dir, &config.name).map_err(setup("credential"))?;
    let cred = register(
        &control_plane,
        own.as_ref().map(|s| s.token.as_str()),
        &config.bootstrap_token,
        &reg,
    )?;
    let current = Arc::new(credential::CurrentCredential::new(
        &config.data_dir,
        &config.name,
        String::new(),
    ));
    current
        .renew(cred.token.clone())
        .map_err(setup("credential"))?;
    tracing::info!(node = %cred.node.name, address = %cred.node.address, "registered with the control plane");
    // Only tokens addressed to this node by name: one the control plane signed for
    // another node is refused here.
    let verifier = TokenVerifier::for_audience(
        &cred.control_plane_public_key,
        &modvisor_auth::node_audience(&config.name),
    )
    .map_err(setup("control plane key"))?;
    let host = Host {
        driver,
        kernel: kernel.vmlinuz.clone(),
        initrd,
        cmdline: with_extra(
            modvisor_guest::cmdline::default_cmdline(),
            &config.guest_kernel_args,
        ),
        cmdline_operator_modules: with_extra(
            modvisor_guest::cmdline::operator_modules_cmdline(),
            &config.guest_kernel_args,
        ),
        run_root: config.data_dir.join("run"),
        records: records.clone(),
        trust: Arc::new(trust),
        network,
        platform_modules: platform.iter().map(|m| m.name.clone()).collect(),
        metrics: Arc::new(NodeMetrics::new().map_err(setup("metrics"))?),
    };
    let node = Arc::new(Node {
        name: config.name.clone(),
        host: host.clone(),
        vms: Mutex::new(HashMap::new()),
        verifier,
        kernel_release: kernel.release.clone(),
        fetcher: fetch::Fetcher {
            control_plane: control_plane.clone(),
            credential: current.clone(),
            blobs: config.data_dir.join("blobs"),
        },
    });
    for rec in saved {
        tracing::info!(vm = %rec.id, "re-adopting");
        let h = vm::spawn(
            host.clone(),
            rec.id.clone(),
            rec.spec.clone(),
            Some(rec.clone()),
        );
        if let Ok(mut vms) = node.vms.lock() {
            vms.insert(rec.id.clone(), h);
        }
    }
    spawn_heartbeats(node.clone(), control_plane, current)?;
    trust::save_ca(&config.data_dir, &cred.ca_pem)?;
    let tls = modvisor_node_api::tls::server_config(&cred.certificate_pem, &tls_key)
        .map_err(setup("the node's certificate"))?;
    Ok((node, listener, tls))
}

/// Registers with the node's own saved credential if it has one, else (or if the control
/// plane no longer knows that credential: 401 or 404) with the bootstrap token.
fn register(
    control_plane: &ControlPlaneClient,
    saved: Option<&str>,
    bootstrap: &str,
    reg: &RegisterNode,
) -> Result<NodeCredential, NodeError> {
    if let Some(own) = saved {
        match register_with(control_plane, own, reg) {
            Err(RegisterError::Refused(status, detail)) if status == 401 || status == 404 => {
                tracing::warn!(%detail, "the control plane does not know this node's saved credential; registering with the bootstrap token");
            }
            other => return other.map_err(|e| NodeError::Setup(e.to_string())),
        }
    }
    register_with(control_plane, bootstrap, reg).map_err(|e| NodeError::Setup(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("the control plane refused the registration: {1}")]
    Refused(u16, String),
    #[error("the control plane's answer to the registration is unreadable: {0}")]
    Unreadable(String),
    #[error("the control plane is not the one this node trusts: {0}")]
    Untrusted(String),
    #[error("cannot reach the control plane at {0}: {1}")]
    Unreachable(String, String),
}

fn register_with(
    control_plane: &ControlPlaneClient,
    token: &str,
    reg: &RegisterNode,
) -> Result<NodeCredential, RegisterError> {
    let mut last = String::new();
    for _ in 0..30 {
        match control_plane.register(token, reg) {
            Ok(cred) => return Ok(cred),
            Err(ClientError::Refused { status, detail, .. }) => {
                return Err(RegisterError::Refused(status, detail));
            }
            Err(e @ ClientError::Unreadable { .. }) => {
                return Err(RegisterError::Unreadable(e.to_string()));
            }
            Err(e @ ClientError::Untrusted { .. }) => {
                return Err(RegisterError::Untrusted(e.to_string()));
            }
            Err(e @ ClientError::Unreachable { .. }) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(RegisterError::Unreachable(
        control_plane.base().to_string(),
        last,
    ))
}

fn spawn_heartbeats(
    node: Arc<Node>,
    control_plane: ControlPlaneClient,
    credential: Arc<credential::CurrentCredential>,
) -> Result<(), NodeError> {
    let beat = move || loop {
        let vms = match node.vms.lock() {
            Ok(v) => v
                .values()
                .filter_map(|h| h.observed.lock().ok().map(|o| o.clone()))
                .collect(),
            Err(_) => {
                tracing::error!("the VM table is poisoned; heartbeats stop");
                return;
            }
        };
        let answer = control_plane.heartbeat(&credential.token(), &node.name, &Heartbeat { vms });
        node.host.metrics.heartbeat(answer.is_ok());
        match answer {
            Ok(reply) => {
                if let Some(renewed) = reply.credential {
                    // Unsaved, it is not presented: the control plane renews again next time.
                    match credential.renew(renewed) {
                        Ok(()) => tracing::info!("node credential renewed"),
                        Err(e) => tracing::warn!(error = %e, "cannot keep the renewed credential"),
                    }
                }
                if let Some(network) = &node.host.network {
                    if let Err(e) = network.set_peers(&reply.underlay_peers) {
                        tracing::warn!(error = %e, "updating the tenant networks' peers");
                    }
                }
                for id in reply.remove {
                    let gone_or_going = node
                        .vms
                        .lock()
                        .map(|v| v.get(&id).is_none_or(|h| h.deleting))
                        .unwrap_or(true);
                    if gone_or_going {
                        continue;
                    }
                    // Stopping a guest takes seconds: not on the heartbeat's thread.
                    let node = node.clone();
                    let removal = std::thread::Builder::new()
                        .name("vm-remove".into())
                        .spawn(move || {
                            if node.delete(&id) {
                                tracing::info!(vm = %id, "the control plane no longer wants it here: removed");
                            }
                        });
                    if let Err(e) = removal {
                        tracing::warn!(error = %e, "cannot start a removal; the next heartbeat retries");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(beat)
        .map(drop)
        .map_err(setup("heartbeat thread"))
}

impl Node {
    /// Whether this node holds VM `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.vms.lock().is_ok_and(|v| v.contains_key(id))
    }

    /// `f` of VM `id`'s handle, under the VM table's lock (not found: 404).
    fn with_vm<T>(
        &self,
        id: &str,
        f: impl FnOnce(&vm::VmHandle) -> Result<T, error::ApiError>,
    ) -> Result<T, error::ApiError> {
        let vms = self
            .vms
            .lock()
            .map_err(|_| error::ApiError::Internal("the VM table is poisoned".into()))?;
        f(vms
            .get(id)
            .ok_or_else(|| error::ApiError::NotFound(id.to_string()))?)
    }

    /// The agent of VM `id` while its guest runs and the agent answered (a conflict
    /// otherwise), and what the node observes of the VM.
    pub fn attached_agent(
        &self,
        id: &str,
    ) -> Result<
        (
            Arc<crate::channel::AgentClient>,
            Arc<Mutex<modvisor_node_api::ObservedVm>>,
        ),
        error::ApiError,
    > {
        self.with_vm(id, |handle| {
            let agent = handle
                .agent
                .lock()
                .map_err(|_| error::ApiError::Internal("the VM's agent slot is poisoned".into()))?
                .as_ref()
                .map(Arc::clone)
                .ok_or_else(|| {
                    error::ApiError::Conflict(format!(
                        "VM {id} is not running (or its agent has not answered yet)"
                    ))
                })?;
            Ok((agent, handle.observed.clone()))
        })
    }

    /// The console of VM `id` while its guest runs (and its driver serves one).
    pub fn console_of(
        &self,
        id: &str,
    ) -> Result<Option<Arc<crate::console::ConsoleHub>>, error::ApiError> {
        self.with_vm(id, |handle| {
            let console = handle.console.lock().map_err(|_| {
                error::ApiError::Internal("the VM's console slot is poisoned".into())
            })?;
            Ok(console.clone())
        })
    }

    /// Stops and removes a VM, waiting until its worker is done; false if it is not here.
    /// A VM another caller is already removing counts as removed (without waiting).
    pub fn delete(&self, id: &str) -> bool {
        let rx = {
            let Ok(mut vms) = self.vms.lock() else {
                return false;
            };
            let Some(h) = vms.get_mut(id) else {
                return false;
            };
            if h.deleting {
                return true;
            }
            h.deleting = true;
            let (tx, rx) = std::sync::mpsc::channel();
            if h.tx.send(Command::Delete(tx)).is_err() {
                vms.remove(id);
                return true;
            }
            rx
        };
        // The worker may be waiting for a guest's first hello (minutes under TCG); it
        // answers, or drops the sender when it ends (either way it is done).
        if rx.recv().is_err() {
            tracing::debug!(vm = %id, "its worker ended without answering the delete");
        }
        if let Ok(mut vms) = self.vms.lock() {
            vms.remove(id);
        }
        true
    }

    /// Stops every guest (records and desired states kept), waiting up to `within` in
    /// all; how many stopped in time.
    pub fn halt_all(&self, within: std::time::Duration) -> usize {
        let waiting: Vec<(String, std::sync::mpsc::Receiver<()>)> = match self.vms.lock() {
            Ok(vms) => vms
                .iter()
                .filter_map(|(id, h)| {
                    let (tx, rx) = std::sync::mpsc::channel();
                    h.tx.send(Command::Halt(tx)).ok().map(|()| (id.clone(), rx))
                })
                .collect(),
            Err(_) => {
                tracing::error!("the VM table is poisoned; guests left running");
                return 0;
            }
        };
        let deadline = std::time::Instant::now() + within;
        let mut halted = 0;
        for (id, rx) in waiting {
            match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(()) => halted += 1,
                Err(e) => tracing::warn!(vm = %id, error = %e, "a guest did not stop in time"),
            }
        }
        halted
    }
}
