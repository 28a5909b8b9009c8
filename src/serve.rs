//! `modvisor up`, `modvisor control-plane` and `modvisor token`.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use modvisor_control_plane::api::nodes::DEFAULT_NODE_CREDENTIAL_TTL_SECS;
use modvisor_control_plane::model::Resources;
use modvisor_control_plane::reconciler::{ReconcilerConfig, DEFAULT_FENCE_AFTER_SECS};
use modvisor_control_plane::server::DEFAULT_MAX_MODULE_BYTES;
use modvisor_control_plane::store::StoreLocation;
use modvisor_control_plane::{Config, ControlPlane};
use modvisor_node_agent::daemon::{DriverChoice, NodeConfig, NodeError};
use modvisor_node_agent::jailing::JailOptions;
use modvisor_node_agent::network::Underlay;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `modvisor up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory: sled store, signing key, tokens.
    #[arg(long, env = "MODVISOR_DATA_DIR", default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// Address of the API.
    #[arg(long, env = "MODVISOR_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Address of the internal API node agents call, over TLS (default: the port after
    /// --listen's, or a free one when that is 0).
    #[arg(long, env = "MODVISOR_INTERNAL_LISTEN")]
    internal_listen: Option<SocketAddr>,
    /// Install what this host lacks (QEMU, ...) with apt-get before starting (Debian or
    /// Ubuntu, as root). Without it, `up` stops when something is missing, before it
    /// writes anything, naming each missing piece and the command that provides it.
    #[arg(long)]
    install_missing: bool,
    /// Leave the guests running when `up` ends (Ctrl-C, SIGTERM); the next `up` on the
    /// same data directory adopts them. Without it, `up` stops the guests it started.
    #[arg(long)]
    keep_vms: bool,
    /// Lifetime of the tokens written to DATA_DIR/tokens, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    token_ttl: u64,
    /// Node agents to run in this process (0: the control plane alone).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// `kernel`: publish the guest kernel's modules into the catalog and approve the
    /// default allow-list (tcp_bbr, dummy, zram, wireguard and dependencies) for all
    /// tenants; `none`: leave the catalog alone.
    #[arg(long, value_enum, default_value_t = CatalogSeed::Kernel)]
    catalog: CatalogSeed,
    /// Hypervisor driver of the node agents.
    #[arg(long, value_enum, default_value_t = DriverArg::Auto)]
    driver: DriverArg,
    #[command(flatten)]
    reconciler: ReconcilerArgs,
    /// Seconds a request body may take to arrive in full (slower senders get a 408).
    #[arg(long, default_value_t = 30)]
    body_timeout_secs: u64,
    /// Also serve /metrics (admin or metrics tokens) on this address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Lifetime of node credentials in seconds; heartbeats renew them in their last quarter.
    #[arg(long, default_value_t = DEFAULT_NODE_CREDENTIAL_TTL_SECS, value_parser = clap::value_parser!(u64).range(8..))]
    node_credential_ttl_secs: u64,
    #[command(flatten)]
    vm_process: VmProcessArgs,
}

/// How node agents run VM processes (`up` and `node-agent`).
#[derive(Debug, Args)]
pub struct VmProcessArgs {
    /// `on`: every VM process runs jailed (its own cgroup, namespaces, pivot_root,
    /// per-VM uid, rlimits; seccomp for the kvm driver, QEMU's own sandbox for qemu).
    /// `off`: unconfined, for development only.
    #[arg(long, value_enum, default_value_t = JailSwitch::On)]
    jail: JailSwitch,
    /// First per-VM uid. Node agents sharing a host need disjoint ranges of 65536 uids;
    /// with `up --nodes N`, node i uses the i-th range from here.
    #[arg(long, default_value_t = 1_000_000)]
    jail_uid_base: u32,
    /// The cgroup under which each node agent puts `<parent>/<node name>/<vm id>`:
    /// absolute (from the root of each hierarchy, so VMs outlive a restart of the agent's
    /// own service) or relative to the agent's own cgroup (cgroup v1 only: v2 forbids
    /// controllers below a cgroup that holds processes).
    #[arg(long, default_value = "/modvisor")]
    jail_cgroup_parent: String,
    /// Memory a VM process may use beyond its guest's memory, in MiB (its cgroup limit is
    /// the sum; the OOM killer ends it there and the VM is Failed with reason OOM).
    #[arg(long, default_value_t = 256)]
    jail_memory_overhead_mib: u64,
    /// Kernel parameters appended to every guest's command line (e.g. `init_on_free=1`).
    #[arg(long)]
    guest_kernel_args: Option<String>,
    /// Tenant networks (`on`, with the qemu driver): each node keeps bridges, taps,
    /// VXLAN and nftables guards in a network namespace of its own. `off`: VMs can only
    /// be created with network `none`.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    networking: Switch,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// `--jail on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JailSwitch {
    /// Jail every VM process.
    On,
    /// Run VM processes unconfined (development only).
    Off,
}

impl VmProcessArgs {
    /// The jail options of the `index`-th node agent (0-based) of this process.
    fn jail(&self, index: usize) -> Result<Option<JailOptions>> {
        if self.jail == JailSwitch::Off {
            return Ok(None);
        }
        let defaults = JailOptions::default();
        let uid_base = u32::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(defaults.uid_count))
            .and_then(|off| self.jail_uid_base.checked_add(off))
            .filter(|b| b.checked_add(defaults.uid_count).is_some())
            .context("--jail-uid-base leaves no room for the per-VM uids of every node")?;
        if uid_base < 65_536 {
            bail!("--jail-uid-base must be at least 65536, above the host's own users and nobody");
        }
        if self.jail_memory_overhead_mib > 1 << 20 {
            bail!("--jail-memory-overhead-mib must be at most 1048576 (1 TiB)");
        }
        let parent = self.jail_cgroup_parent.trim_start_matches('/');
        let valid = !parent.is_empty()
            && parent.split('/').all(|c| {
                !c.is_empty()
                    && !c.starts_with('.')
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        if !valid {
            bail!("--jail-cgroup-parent: use /-separated names of [A-Za-z0-9._-], none starting with a dot");
        }
        Ok(Some(JailOptions {
            cgroup_parent: self.jail_cgroup_parent.clone(),
            uid_base,
            memory_overhead_mib: self.jail_memory_overhead_mib,
            ..defaults
        }))
    }
}

/// How `up` fills the module catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CatalogSeed {
    /// From the guest kernel's module tree.
    Kernel,
    /// Not at all.
    None,
}

/// A hypervisor driver as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverArg {
    /// kvm with hardware virtualization, qemu otherwise.
    Auto,
    /// QEMU (KVM acceleration with hardware virtualization, TCG otherwise).
    Qemu,
    /// Our own vmm (needs hardware virtualization).
    Kvm,
}

impl DriverArg {
    fn choice(self) -> DriverChoice {
        match self {
            DriverArg::Auto => DriverChoice::Auto,
            DriverArg::Qemu => DriverChoice::Qemu,
            DriverArg::Kvm => DriverChoice::Kvm,
        }
    }
}

/// Arguments of `modvisor node-agent`.
#[derive(Debug, Args)]
pub struct NodeAgentArgs {
    /// The control plane's internal API (TLS), e.g. https://127.0.0.1:7071; several
    /// replicas separated by commas (the agent fails over between them).
    #[arg(long, default_value = "https://127.0.0.1:7071")]
    control_plane: String,
    /// The control plane's CA certificate (PEM); by default the CA the bootstrap token
    /// pins (checked by its sha256), else the one saved at the last registration.
    #[arg(long)]
    control_plane_ca: Option<PathBuf>,
    /// File holding a bootstrap token (`modvisor token issue --role bootstrap`).
    #[arg(long)]
    bootstrap_token_file: PathBuf,
    /// Data directory: VM records, blob cache, guests' run directories.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the node API (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Node name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Hypervisor driver.
    #[arg(long, value_enum, default_value_t = DriverArg::Auto)]
    driver: DriverArg,
    /// Install what this host lacks with apt-get before starting (as `up`).
    #[arg(long)]
    install_missing: bool,
    /// vCPUs offered to guests (default: the host's CPUs times
    /// [`CPU_ALLOCATION_RATIO`], as Nova's `initial_cpu_allocation_ratio`).
    #[arg(long)]
    vcpus: Option<u64>,
    /// Memory offered to guests, MiB (default: the host's memory less 1 GiB).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// This node's address on the underlay network (`A.B.C.D/N`), where other nodes'
    /// VXLAN tunnels end; without it, the node's tenant networks reach no other node.
    #[arg(long)]
    underlay_address: Option<String>,
    /// The network namespace holding the underlay bridge (created if absent) that this
    /// node's underlay link joins.
    #[arg(long, default_value = "modvisor-underlay")]
    underlay_netns: String,
    #[command(flatten)]
    vm_process: VmProcessArgs,
}

/// The default allow-list `up` approves for every tenant (dependencies included).
pub const DEFAULT_ALLOW: [&str; 4] = ["tcp_bbr", "dummy", "zram", "wireguard"];

/// vCPUs a node offers per host CPU unless told otherwise (Nova's default is also 4):
/// an idle guest's vCPU costs little, and a guest only gets the CPU time its cgroup
/// shares with the others. Memory is not overcommitted.
pub const CPU_ALLOCATION_RATIO: u64 = 4;

fn host_capacity(vcpus: Option<u64>, memory_mib: Option<u64>) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(2 * 1024 * 1024);
    Resources {
        vcpus: vcpus.unwrap_or(cpus * CPU_ALLOCATION_RATIO),
        memory_mib: memory_mib.unwrap_or((mem_kib / 1024).saturating_sub(1024).max(256)),
    }
}

/// Arguments of `modvisor control-plane`.
#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Data directory: sled store and signing key.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// Address of the API (port 0 picks a free port; see DATA_DIR/control-plane.addr).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Address of the internal API node agents call, over TLS (default: the port after
    /// --listen's, or a free one when that is 0).
    #[arg(long, env = "MODVISOR_INTERNAL_LISTEN")]
    internal_listen: Option<SocketAddr>,
    /// Largest module upload accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MODULE_BYTES)]
    max_module_bytes: usize,
    /// HTTP worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    reconciler: ReconcilerArgs,
    /// Seconds a request body may take to arrive in full (slower senders get a 408).
    #[arg(long, default_value_t = 30)]
    body_timeout_secs: u64,
    /// Also serve /metrics (admin or metrics tokens) on this address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Lifetime of node credentials in seconds; heartbeats renew them in their last quarter.
    #[arg(long, default_value_t = DEFAULT_NODE_CREDENTIAL_TTL_SECS, value_parser = clap::value_parser!(u64).range(8..))]
    node_credential_ttl_secs: u64,
    /// A node agent /readyz waits for (registered and Ready); repeat for several.
    #[arg(long)]
    expect_node: Vec<String>,
    /// Where the state is: `sled:PATH`, or `etcd://HOST:PORT[,HOST:PORT...][/ROOT]` (a
    /// build with `--features etcd`). Default: sled in DATA_DIR/db, with the signing key
    /// and the CA in DATA_DIR; on etcd every replica reads them from the store.
    #[arg(long, env = "MODVISOR_STORE")]
    store: Option<StoreLocation>,
    /// This replica's name among those sharing the store (default: `cp-` and the
    /// listen address).
    #[arg(long)]
    replica: Option<String>,
}

fn runtime() -> Result<actix_web::rt::SystemRunner> {
    Ok(actix_web::rt::System::new())
}

/// How the leader reconciles (`up` and `control-plane`).
#[derive(Debug, Args)]
pub struct ReconcilerArgs {
    /// Seconds without heartbeats before a node is NotReady.
    #[arg(long, default_value_t = 6)]
    node_timeout_secs: u64,
    /// Seconds a NotReady node must have been silent before its VMs are recreated on
    /// another node (the fencing bound; until then they wait for it to come back).
    #[arg(long, default_value_t = DEFAULT_FENCE_AFTER_SECS)]
    fence_after_secs: u64,
    /// Days the audit trail keeps an event (older ones are removed by the leader, about
    /// once a minute); 0 keeps every event.
    #[arg(long, default_value_t = 90)]
    event_retention_days: u64,
}

impl ReconcilerArgs {
    fn config(&self) -> ReconcilerConfig {
        ReconcilerConfig {
            node_timeout_secs: self.node_timeout_secs,
            fence_after_secs: self.fence_after_secs,
            event_retention: (self.event_retention_days > 0).then(|| {
                std::time::Duration::from_secs(self.event_retention_days.saturating_mul(86_400))
            }),
            ..ReconcilerConfig::default()
        }
    }
}

/// `modvisor up`: the control plane with default tenants and their tokens, the module
/// catalog seeded from the guest kernel, and node agents in the same process.
pub fn up(args: UpArgs) -> Result<()> {
    crate::doctor::preflight(
        &crate::doctor::Needs {
            driver: (args.nodes > 0).then_some(args.driver),
            jail: args.vm_process.jail == JailSwitch::On,
            kernel: args.nodes > 0 || args.catalog == CatalogSeed::Kernel,
            tests: false,
        },
        args.install_missing,
    )?;
    let cp = ControlPlane::open(Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
        workers: None,
        body_timeout: std::time::Duration::from_secs(args.body_timeout_secs),
        reconciler: args.reconciler.config(),
        metrics_listen: args.metrics_listen,
        internal_listen: internal_listen(args.listen, args.internal_listen),
        node_credential_ttl_secs: args.node_credential_ttl_secs,
        expect_nodes: up_node_names(args.nodes),
        store: None,
        replica: format!("cp-{}", args.listen),
    })
    .with_context(|| format!("opening {}", args.data_dir.display()))?;
    let tokens = cp.bootstrap(args.token_ttl)?;
    if args.catalog == CatalogSeed::Kernel {
        let kernel =
            modvisor_guest::kernel::resolve(|m| eprintln!("{m}")).context("guest kernel")?;
        let n = cp.seed_catalog(&kernel.release, &kernel.all_modules(), &DEFAULT_ALLOW)?;
        eprintln!(
            "catalog: {n} modules of {} published; default allow-list approved for all tenants",
            kernel.release
        );
    }
    let bootstrap = cp.bootstrap_token(3600)?;
    let data_dir = args.data_dir.clone();
    let nodes = args.nodes;
    let driver = args.driver.choice();
    let jails = (0..nodes)
        .map(|i| args.vm_process.jail(i))
        .collect::<Result<Vec<_>>>()?;
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let store = cp.store().clone();
    let system = runtime()?;
    system.block_on(async move {
        let server = cp.serve(move |addr| {
            if tx.send(addr).is_err() {
                tracing::error!("nothing waits for the control plane's address");
            }
        });
        let agents = async move {
            let Ok(addr) = rx.recv() else { return Ok(()) };
            eprintln!("control plane listening on http://{addr}; starting {nodes} node agent(s)");
            // Written before the public address was: the TLS API nodes call.
            let internal = std::fs::read_to_string(
                args.data_dir
                    .join(modvisor_control_plane::server::INTERNAL_ADDR_FILE),
            )
            .map_err(|e| NodeError::Setup(format!("the internal API's address: {e}")))?;
            let mut runs = Vec::new();
            for (i, jail) in (1..=nodes).zip(jails) {
                let config = NodeConfig {
                    name: format!("node-{i}"),
                    control_plane: format!("https://{}", internal.trim()),
                    bootstrap_token: bootstrap.clone(),
                    data_dir: args.data_dir.join("nodes").join(format!("node-{i}")),
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    driver,
                    capacity: host_capacity(None, None),
                    jail,
                    guest_kernel_args: args.vm_process.guest_kernel_args.clone(),
                    // The bootstrap token pins the CA.
                    control_plane_ca: None,
                    networking: args.vm_process.networking == Switch::On,
                    underlay: up_underlay(&args.data_dir, i)?,
                    stop_vms_on_exit: !args.keep_vms,
                };
                runs.push(modvisor_node_agent::daemon::run(config));
            }
            // Up is said only once the control plane and every node agent are ready.
            let announce = async move {
                wait_until_ready(&store, &up_node_names(nodes)).await;
                print_up(addr, &data_dir, &tokens, nodes);
                std::future::pending::<()>().await;
            };
            tokio::select! {
                ended = futures_util::future::try_join_all(runs) => ended.map(drop),
                () = announce => Ok(()),
            }
        };
        // A node agent that fails ends `up` at once, saying why (not at Ctrl-C).
        let agents = async move { agents.await.map_err(|e| anyhow::anyhow!("node agent: {e}")) };
        let server = async move { server.await.map_err(anyhow::Error::from) };
        futures_util::future::try_join(server, agents)
            .await
            .map(drop)
    })?;
    Ok(())
}

/// The names of the node agents `up` starts.
fn up_node_names(nodes: usize) -> Vec<String> {
    (1..=nodes).map(|i| format!("node-{i}")).collect()
}

/// Waits until [`modvisor_control_plane::readiness::check`] holds for `expected`, saying
/// every 30 s what it still waits for.
async fn wait_until_ready(store: &modvisor_control_plane::store::Datastore, expected: &[String]) {
    let started = std::time::Instant::now();
    let mut said = std::time::Duration::ZERO;
    loop {
        let readiness = modvisor_control_plane::readiness::check(store, expected);
        if readiness.ready {
            return;
        }
        let waited = started.elapsed();
        if waited >= said + std::time::Duration::from_secs(30) {
            said = waited;
            eprintln!(
                "still waiting after {} s: {}",
                waited.as_secs(),
                readiness.waiting_for.join("; ")
            );
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn print_up(
    addr: SocketAddr,
    data_dir: &std::path::Path,
    tokens: &[(String, PathBuf)],
    nodes: usize,
) {
    let api = format!("http://{addr}");
    println!(
        "modvisor is up (control plane, sled store in {}, {nodes} node agent(s))",
        data_dir.display()
    );
    println!("  API:        {api}/v1");
    println!("  OpenAPI:    {api}/openapi.json");
    println!("  Metrics:    {api}/metrics  (admin or metrics token)");
    println!("  Dashboard:  {api}/  (paste a token)");
    for (who, path) in tokens {
        println!("  token {who:<9} {}", path.display());
    }
    let a = tokens
        .iter()
        .find(|(w, _)| w == "tenant-a")
        .map(|(_, p)| p.display().to_string())
        .unwrap_or_default();
    println!("Try, as tenant A:");
    println!(
        "  curl -s -H \"Authorization: Bearer $(cat {a})\" -H 'Content-Type: application/json' \\\n       -d '{{\"name\":\"web-1\",\"vcpus\":1,\"memory_mib\":256,\"modules\":[{{\"name\":\"tcp_bbr\"}}]}}' {api}/v1/vms"
    );
    println!("  MODVISOR_API={api} MODVISOR_TOKEN_FILE={a} modvisor vm list");
    println!("Stop with Ctrl-C (it stops the guests too, unless `up` ran with --keep-vms).");
}

/// The underlay of `up`'s `i`-th node (1-based): a namespace of this `up`'s own (named
/// for its data directory) holding the bridge, and the node's address 198.18.0.i/24
/// (RFC 2544's benchmarking range, which nothing routes).
fn up_underlay(data_dir: &std::path::Path, i: usize) -> Result<Option<Underlay>, NodeError> {
    let netns = modvisor_node_agent::network::up_underlay_namespace(data_dir);
    let host = u8::try_from(i)
        .ok()
        .filter(|h| (1..=254).contains(h))
        .ok_or_else(|| NodeError::Setup(format!("up runs at most 254 nodes, not {i}")))?;
    Underlay::parse(&netns, &format!("198.18.0.{host}/24"))
        .map(Some)
        .map_err(NodeError::Setup)
}

/// `modvisor node-agent`.
pub fn node_agent(args: NodeAgentArgs) -> Result<()> {
    crate::doctor::preflight(
        &crate::doctor::Needs {
            driver: Some(args.driver),
            jail: args.vm_process.jail == JailSwitch::On,
            kernel: true,
            tests: false,
        },
        args.install_missing,
    )?;
    let token = std::fs::read_to_string(&args.bootstrap_token_file)
        .with_context(|| format!("reading {}", args.bootstrap_token_file.display()))?
        .trim()
        .to_string();
    let name = match args.name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "node".into()),
    };
    modvisor_control_plane::validate::resource_name("--name", &name)?;
    let config = NodeConfig {
        name,
        control_plane: args.control_plane,
        bootstrap_token: token,
        data_dir: args.data_dir,
        listen: args.listen,
        driver: args.driver.choice(),
        capacity: host_capacity(args.vcpus, args.memory_mib),
        jail: args.vm_process.jail(0)?,
        guest_kernel_args: args.vm_process.guest_kernel_args,
        control_plane_ca: args.control_plane_ca,
        networking: args.vm_process.networking == Switch::On,
        underlay: args
            .underlay_address
            .as_deref()
            .map(|a| Underlay::parse(&args.underlay_netns, a))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--underlay-address: {e}"))?,
        // A node agent service's guests outlive it, for its next start to adopt.
        stop_vms_on_exit: false,
    };
    runtime()?
        .block_on(modvisor_node_agent::daemon::run(config))
        .map_err(anyhow::Error::from)
}

/// The internal API's address: as given, else the port after `listen`'s (a free one when
/// `listen`'s is 0).
fn internal_listen(listen: SocketAddr, given: Option<SocketAddr>) -> SocketAddr {
    given.unwrap_or_else(|| {
        let mut addr = listen;
        if listen.port() != 0 {
            addr.set_port(listen.port().saturating_add(1));
        }
        addr
    })
}

/// `modvisor control-plane`.
pub fn control_plane(args: ControlPlaneArgs) -> Result<()> {
    if args.max_module_bytes == 0 {
        bail!("--max-module-bytes must be positive");
    }
    let cp = ControlPlane::open(Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        max_module_bytes: args.max_module_bytes,
        workers: args.workers,
        body_timeout: std::time::Duration::from_secs(args.body_timeout_secs),
        reconciler: args.reconciler.config(),
        metrics_listen: args.metrics_listen,
        internal_listen: internal_listen(args.listen, args.internal_listen),
        node_credential_ttl_secs: args.node_credential_ttl_secs,
        expect_nodes: args.expect_node.clone(),
        store: args.store.clone(),
        replica: args
            .replica
            .clone()
            .unwrap_or_else(|| format!("cp-{}", args.listen)),
    })
    .with_context(|| format!("opening {}", args.data_dir.display()))?;
    runtime()?.block_on(cp.serve(|addr| {
        tracing::info!(%addr, "control plane listening");
    }))?;
    Ok(())
}
