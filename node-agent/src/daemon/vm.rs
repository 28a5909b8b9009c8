//! One VM on this node: a worker thread owns its guest and its agent channel; the rest of
//! the node agent talks to it through commands and reads its observed state.

use super::record::{boot_id, load_key, save_key, VmRecord};
use crate::channel::AgentClient;
use crate::console::ConsoleHub;
use crate::driver::{Guest, GuestNic, GuestSpec, GuestState, HypervisorDriver};
use crate::metrics::NodeMetrics;
use crate::modprobe::{ModprobeService, ModuleOutcome, ModuleSource};
use crate::network::{NodeNetwork, TENANT_MTU};
use modvisor_modules::{TrustStore, VettingPolicy};
use modvisor_node_api::types::{
    is_module_name, EnsureVm, KernelMode, ObservedVm, Phase, PowerState, MAX_GUEST_MODULES,
    MAX_OBSERVED_REASON, MAX_PLATFORM_MODULES,
};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the rest of the node agent may ask of a VM's worker.
pub enum Command {
    /// Bring the VM to this desired state.
    Ensure(EnsureVm),
    /// Vet and load a module (with dependencies) from this source.
    Load {
        /// Module name.
        name: String,
        /// Parameters.
        params: String,
        /// Where the images come from.
        source: ModuleSource,
        /// The tenant's policy.
        policy: VettingPolicy,
        /// When the request's budget ends.
        deadline: Instant,
        /// Where the outcomes go.
        reply: Sender<Vec<ModuleOutcome>>,
    },
    /// Unload a module.
    Unload {
        /// Module name.
        name: String,
        /// Where the result goes.
        reply: Sender<Result<(), String>>,
    },
    /// Stop the guest, remove everything, end the worker.
    Delete(Sender<()>),
    /// Stop the guest and end the worker, keeping the VM's record and desired state: the
    /// node's next start boots it again (what `up` does when it ends).
    Halt(Sender<()>),
}

/// Everything a worker needs from its node.
#[derive(Clone)]
pub struct Host {
    /// The hypervisor driver.
    pub driver: Arc<dyn HypervisorDriver>,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel command line of `standard` guests.
    pub cmdline: String,
    /// The kernel command line of `operator-modules` guests.
    pub cmdline_operator_modules: String,
    /// Where VM run directories go.
    pub run_root: PathBuf,
    /// Where VM records go.
    pub records: PathBuf,
    /// Keys the guest kernel trusts.
    pub trust: Arc<TrustStore>,
    /// The node's tenant networks, if it offers them.
    pub network: Option<Arc<NodeNetwork>>,
    /// The platform modules every guest loads at boot (not the tenant's: left out of
    /// what the VM reports).
    pub platform_modules: Arc<[String]>,
    /// The node's metrics.
    pub metrics: Arc<NodeMetrics>,
}

impl Host {
    /// The kernel command line of a guest in `mode`.
    pub fn cmdline_for(&self, mode: KernelMode) -> String {
        match mode {
            KernelMode::Standard => self.cmdline.clone(),
            KernelMode::OperatorModules => self.cmdline_operator_modules.clone(),
        }
    }
}

/// The channel to a VM's guest agent while it is attached (shared with the node API for
/// `exec`, which must not wait behind the worker).
pub type SharedAgent = Arc<Mutex<Option<Arc<AgentClient>>>>;

/// The console of a VM's guest while it runs (shared with the node API).
pub type SharedConsole = Arc<Mutex<Option<Arc<ConsoleHub>>>>;

/// A handle on a VM's worker.
pub struct VmHandle {
    /// Commands to the worker.
    pub tx: Sender<Command>,
    /// The guest agent, while the guest runs and its agent answered.
    pub agent: SharedAgent,
    /// The guest's console, while the guest runs.
    pub console: SharedConsole,
    /// What the worker last observed.
    pub observed: Arc<Mutex<ObservedVm>>,
    /// The worker was told to delete the VM and has not finished: the handle stays, so no
    /// second worker starts for the same id (and jail) until this one is gone.
    pub deleting: bool,
}

/// `reason` cut to [`MAX_OBSERVED_REASON`] bytes (on a character boundary).
fn bounded_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_OBSERVED_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Starts the worker of VM `id`; `adopt` is a record left by an earlier run.
pub fn spawn(host: Host, id: String, spec: EnsureVm, adopt: Option<VmRecord>) -> VmHandle {
    let (tx, rx) = channel();
    let observed = Arc::new(Mutex::new(ObservedVm::bare(&id, Phase::Starting, None)));
    let obs = observed.clone();
    let agent = SharedAgent::default();
    let console = SharedConsole::default();
    let shared = (agent.clone(), console.clone());
    let name = format!("vm-{id}");
    let started = std::thread::Builder::new()
        .name(name)
        .spawn(move || Worker::new(host, id, spec, obs, shared).run(rx, adopt));
    if let Err(e) = started {
        // Said as it is: the VM fails with the reason, the control plane shows it.
        tracing::error!(error = %e, "cannot start a VM worker thread");
        if let Ok(mut o) = observed.lock() {
            o.phase = Phase::Failed;
            o.reason = Some(format!("the node could not start a worker thread: {e}"));
        }
    }
    VmHandle {
        tx,
        agent,
        console,
        observed,
        deleting: false,
    }
}

struct Worker {
    host: Host,
    id: String,
    spec: EnsureVm,
    observed: Arc<Mutex<ObservedVm>>,
    guest: Option<Box<dyn Guest>>,
    client: Option<Arc<AgentClient>>,
    shared: (SharedAgent, SharedConsole),
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(180);
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(30);

impl Worker {
    fn new(
        host: Host,
        id: String,
        spec: EnsureVm,
        observed: Arc<Mutex<ObservedVm>>,
        shared: (SharedAgent, SharedConsole),
    ) -> Self {
        Worker {
            host,
            id,
            spec,
            observed,
            guest: None,
            client: None,
            shared,
        }
    }

    /// Sets the attached agent (or none), for the worker and the node API alike; with
    /// none, the console closes too.
    fn set_client(&mut self, client: Option<Arc<AgentClient>>) {
        *self.shared.0.lock().unwrap_or_else(|p| p.into_inner()) = client.clone();
        if client.is_none() {
            *self.shared.1.lock().unwrap_or_else(|p| p.into_inner()) = None;
            // No guest kernel, so no boot, nothing loaded in it and no interfaces.
            if let Ok(mut o) = self.observed.lock() {
                o.boot = None;
                o.guest_modules.clear();
                o.platform_modules.clear();
                o.interfaces.clear();
                o.kernel_mode = None;
                o.module_taints.clear();
            }
        }
        self.client = client;
    }

    /// Opens the console of the guest just started or adopted (when its driver serves
    /// one).
    fn open_console(&self) {
        let Some(socket) = self.guest.as_ref().and_then(|g| g.console_socket()) else {
            return;
        };
        match ConsoleHub::start(socket) {
            Ok(hub) => {
                *self.shared.1.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(hub))
            }
            Err(e) => tracing::warn!(vm = %self.id, error = %e, "no console for the guest"),
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.host.run_root.join(&self.id)
    }

    fn set(&self, phase: Phase, reason: Option<String>) {
        if let Ok(mut o) = self.observed.lock() {
            o.phase = phase;
            o.reason = reason.map(|r| bounded_reason(&r));
        }
    }

    fn save(&self) {
        let rec = VmRecord {
            id: self.id.clone(),
            spec: self.spec.clone(),
            pid: self.guest.as_ref().and_then(|g| g.pid()),
            run_dir: self.run_dir(),
        };
        if let Err(e) = rec.save(&self.host.records) {
            tracing::warn!(vm = %self.id, error = %e, "saving the VM record");
        }
    }

    fn run(mut self, rx: Receiver<Command>, adopt: Option<VmRecord>) {
        if let Some(rec) = adopt {
            if let Some(g) = rec
                .pid
                .and_then(|pid| self.host.driver.adopt(&self.id, pid, &rec.run_dir))
            {
                tracing::info!(vm = %self.id, "re-adopted a running guest");
                if let (Some(a), Some(net)) = (&self.spec.network, &self.host.network) {
                    if let Err(e) = net.readopt(&self.id, a) {
                        tracing::warn!(vm = %self.id, error = %e, "restoring the guest's network guard");
                    }
                }
                self.guest = Some(g);
                self.open_console();
                self.connect();
            }
        }
        self.converge();
        let mut last_list = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Command::Ensure(spec)) => {
                    self.spec = spec;
                    self.save();
                    self.converge();
                }
                Ok(Command::Load {
                    name,
                    params,
                    source,
                    policy,
                    deadline,
                    reply,
                }) => {
                    let started = Instant::now();
                    let out =
                        match self.client.as_deref() {
                            Some(c) => ModprobeService::new(&source, &self.host.trust)
                                .modprobe_until(c, &name, &params, &policy, Some(deadline)),
                            None => vec![ModuleOutcome::Failed {
                                name,
                                errno: 0,
                                reason: "the guest is not running".into(),
                            }],
                        };
                    self.host.metrics.module_load(&out, started.elapsed());
                    if reply.send(out).is_err() {
                        tracing::warn!(vm = %self.id, "a load ended after its caller stopped waiting");
                    }
                    self.refresh_guest();
                }
                Ok(Command::Unload { name, reply }) => {
                    let r = match self.client.as_deref() {
                        Some(c) => c.unload(&name, CHANNEL_TIMEOUT).map_err(|e| e.to_string()),
                        None => Err("the guest is not running".into()),
                    };
                    if reply.send(r).is_err() {
                        tracing::warn!(vm = %self.id, "an unload ended after its caller stopped waiting");
                    }
                    self.refresh_guest();
                }
                Ok(Command::Halt(done)) => {
                    self.stop_guest();
                    self.set(
                        Phase::Stopped,
                        Some("its node agent stopped, and its guests with it".into()),
                    );
                    self.save();
                    if done.send(()).is_err() {
                        tracing::debug!(vm = %self.id, "halted after its caller stopped waiting");
                    }
                    return;
                }
                Ok(Command::Delete(done)) => {
                    self.stop_guest();
                    match std::fs::remove_dir_all(self.run_dir()) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(vm = %self.id, error = %e, "removing the VM's run directory")
                        }
                    }
                    VmRecord::remove(&self.host.records, &self.id);
                    if done.send(()).is_err() {
                        tracing::debug!(vm = %self.id, "deleted after its caller stopped waiting");
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.watch();
                    if last_list.elapsed() > Duration::from_secs(5) {
                        self.refresh_guest();
                        last_list = Instant::now();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Brings the guest to the desired power state.
    fn converge(&mut self) {
        match self.spec.power_state {
            PowerState::Running if self.guest.is_none() => self.boot(),
            PowerState::Stopped if self.guest.is_some() => {
                self.stop_guest();
                self.set(Phase::Stopped, None);
                self.save();
            }
            PowerState::Stopped => self.set(Phase::Stopped, None),
            PowerState::Running => {}
        }
    }

    fn boot(&mut self) {
        self.set(Phase::Starting, None);
        // A new boot: its agent has run no first-boot script.
        if let Ok(mut o) = self.observed.lock() {
            o.user_data = None;
        }
        let base = self.host.cmdline_for(self.spec.kernel_mode);
        let (nic, cmdline) = match self.nic() {
            Ok(Some((nic, arg))) => (Some(nic), format!("{base} {arg}")),
            Ok(None) => (None, base),
            Err(reason) => {
                self.set(Phase::Failed, Some(reason));
                return;
            }
        };
        let spec = GuestSpec {
            id: self.id.clone(),
            vcpus: self.spec.vcpus,
            memory_mib: self.spec.memory_mib,
            kernel: self.host.kernel.clone(),
            initrd: self.host.initrd.clone(),
            cmdline,
            run_dir: self.run_dir(),
            nic,
            // The node's initramfs carries virtio_console.
            virtio_channel: true,
        };
        // A new key for every boot, kept (0600) beside the jail, never inside it: the
        // hypervisor needs no key, and an agent restarted later must find it.
        let fresh = crate::channel::new_key()
            .and_then(|k| save_key(&self.run_dir(), &k))
            .and_then(|()| crate::channel_choice::forget_choice(&self.run_dir()));
        if let Err(e) = fresh {
            self.set(
                Phase::Failed,
                Some(format!("no channel key for the guest: {e}")),
            );
            return;
        }
        match self.host.driver.start(&spec) {
            Ok(g) => {
                self.guest = Some(g);
                self.save();
                self.open_console();
                self.connect();
            }
            Err(e) => self.set(Phase::Failed, Some(e.to_string())),
        }
    }

    fn connect(&mut self) {
        let Some(g) = self.guest.as_ref() else { return };
        let result = load_key(&self.run_dir())
            .map_err(crate::channel::ChannelError::Io)
            .and_then(|key| {
                crate::channel_choice::attach_agent(
                    &self.run_dir(),
                    g.as_ref(),
                    &key,
                    HELLO_TIMEOUT,
                )
                .map(|attached| (attached, boot_id(&key)))
            });
        match result {
            Ok(((c, hello), boot)) => {
                tracing::info!(vm = %self.id, kernel = %hello.kernel_release, "guest agent answered");
                c.count_errors_in(self.host.metrics.channel_errors.clone());
                self.set_client(Some(Arc::new(c)));
                if let Ok(mut o) = self.observed.lock() {
                    o.boot = Some(boot);
                    o.kernel_mode = Some(self.spec.kernel_mode);
                }
                self.set(Phase::Running, None);
                self.refresh_guest();
            }
            Err(e) => {
                let reason = self
                    .ended_reason(Duration::from_secs(2))
                    .unwrap_or_else(|| format!("the guest agent did not answer: {e}"));
                self.stop_guest();
                self.set(Phase::Failed, Some(reason));
            }
        }
    }

    /// Why the guest's hypervisor ended, if it ends `within` (a channel that broke is
    /// often the first sign of a hypervisor that died: OOM, crash, guest power-off).
    fn ended_reason(&mut self, within: Duration) -> Option<String> {
        let g = self.guest.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            match g.status() {
                GuestState::Crashed { reason } => return Some(reason),
                GuestState::Exited => {
                    return Some("the guest powered off before its agent answered".into())
                }
                GuestState::Running if Instant::now() >= deadline => return None,
                GuestState::Running => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn stop_guest(&mut self) {
        if let (Some(c), Some(_)) = (self.client.as_deref(), self.guest.as_ref()) {
            // A guest that does not answer is stopped from outside below.
            if let Err(e) = c.poweroff(Duration::from_secs(5)) {
                tracing::info!(vm = %self.id, error = %e, "the guest did not take a poweroff; stopping its hypervisor");
            }
        }
        self.set_client(None);
        if let Some(mut g) = self.guest.take() {
            g.stop(Duration::from_secs(5));
        }
        self.release_nic();
    }

    /// The guest's interface for a boot: a fresh tap on its tenant network, and the
    /// kernel parameter that tells the guest its address (none without a network).
    fn nic(&self) -> Result<Option<(GuestNic, String)>, String> {
        let Some(a) = &self.spec.network else {
            return Ok(None);
        };
        let net = self.host.network.as_ref().ok_or(
            "this node offers no tenant networks (its driver has no networking, or it runs with --networking off)",
        )?;
        let tap = net
            .attach(&self.id, a)
            .map_err(|e| format!("tenant network: {e}"))?;
        let config = modvisor_guest_protocol::net::NetConfig {
            mac: a.mac.clone(),
            ip: a.ip,
            prefix: a.prefix,
            mtu: TENANT_MTU,
        };
        let nic = GuestNic {
            mac: a.mac.clone(),
            tap: Arc::new(tap),
        };
        Ok(Some((nic, config.to_kernel_arg())))
    }

    /// Removes the guest's tap and guard (and its network's bridge when it was the last
    /// VM here on it).
    fn release_nic(&self) {
        if let (Some(a), Some(net)) = (&self.spec.network, &self.host.network) {
            if let Err(e) = net.detach(&self.id, a.vni) {
                tracing::warn!(vm = %self.id, error = %e, "removing the guest's network interface");
            }
        }
    }

    /// Notices a guest that ended on its own.
    fn watch(&mut self) {
        let Some(g) = self.guest.as_mut() else { return };
        match g.status() {
            GuestState::Running => {}
            GuestState::Exited => {
                self.guest = None;
                self.set_client(None);
                self.release_nic();
                self.set(Phase::Stopped, Some("the guest powered off".into()));
                self.save();
            }
            GuestState::Crashed { reason } => {
                self.guest = None;
                self.set_client(None);
                self.release_nic();
                self.set(Phase::Failed, Some(reason));
                self.save();
            }
        }
    }

    /// Asks the guest what it has loaded and which interfaces it has (both bounded
    /// before they reach a heartbeat: a hostile guest must not make its node's heartbeats,
    /// every tenant's liveness, refused).
    fn refresh_guest(&mut self) {
        let Some(c) = self.client.as_deref() else {
            return;
        };
        if let Ok(list) = c.list(CHANNEL_TIMEOUT) {
            let (platform, requested): (Vec<_>, Vec<_>) = list
                .into_iter()
                .filter(|m| is_module_name(&m.name))
                .partition(|m| self.host.platform_modules.contains(&m.name));
            let requested: Vec<_> = requested.into_iter().take(MAX_GUEST_MODULES).collect();
            // Taints are a few capital letters; anything else from a guest is dropped.
            let taints = requested
                .iter()
                .filter(|m| {
                    (1..=8).contains(&m.taint.len())
                        && m.taint.bytes().all(|b| b.is_ascii_uppercase())
                })
                .map(|m| (m.name.clone(), m.taint.clone()))
                .collect();
            if let Ok(mut o) = self.observed.lock() {
                o.guest_modules = requested.into_iter().map(|m| m.name).collect();
                o.platform_modules = platform
                    .into_iter()
                    .map(|m| m.name)
                    .take(MAX_PLATFORM_MODULES)
                    .collect();
                o.module_taints = taints;
            }
        }
        match c.interfaces(CHANNEL_TIMEOUT) {
            Ok(reply) => {
                let shown = super::interfaces::shown(reply);
                if let Ok(mut o) = self.observed.lock() {
                    o.interfaces = shown;
                }
            }
            Err(e) => tracing::debug!(vm = %self.id, error = %e, "listing the guest's interfaces"),
        }
        // A first-boot script that runs is followed until it ends.
        let running = self.observed.lock().is_ok_and(|o| {
            o.user_data
                .as_ref()
                .is_some_and(|u| u.state == modvisor_node_api::UserDataState::Running)
        });
        if running {
            if let Ok(reply) = c.user_data(CHANNEL_TIMEOUT) {
                if let Ok(mut o) = self.observed.lock() {
                    o.user_data = Some(super::user_data::status_of(&reply));
                }
            }
        }
    }
}
