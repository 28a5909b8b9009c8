//! `bench scheduler`'s second half: what the leader's reconciler costs once its fleet is
//! settled, and how soon it places one new VM, over the store the first half filled. The
//! nodes are simulated (the `NodeApi` trait in memory: the bench measures the control
//! plane, not guests) and send no heartbeats (the node timeout is set past the run), so
//! what is measured is the reconciler and its store alone. The peer, in the same run: one
//! full pass over the same fleet, which is what every tick cost before the reconciler
//! followed changes (two ticks a second).

use anyhow::{bail, Result};
use modvisor_control_plane::metrics::Metrics;
use modvisor_control_plane::model::{Node, Phase};
use modvisor_control_plane::reconciler::{
    watch_changes, NodeConnector, Reconciler, ReconcilerConfig, Wake,
};
use modvisor_control_plane::store::{Datastore, VmFilter};
use modvisor_node_api::sim::{SimBehaviour, SimulatedNode};
use std::time::{Duration, Instant};

/// Every node is the same simulated node (it keeps VMs by id).
#[derive(Clone)]
struct SimFleet(SimulatedNode);

impl NodeConnector for SimFleet {
    type Api = SimulatedNode;

    fn connect(&self, _node: &Node) -> Result<SimulatedNode, String> {
        Ok(self.0.clone())
    }
}

/// What the second half measured.
pub struct IdleFigures {
    /// VMs in the store.
    pub vms: usize,
    /// How long the fleet took to settle (every VM Running).
    pub settle: Duration,
    /// One full pass over the settled fleet (the peer).
    pub full_pass: Duration,
    /// The window idle CPU was measured over (no full pass in it).
    pub window: Duration,
    /// The reconciler's resync: one full pass each.
    pub resync: Duration,
    /// CPU the process used in it.
    pub idle_cpu: Duration,
    /// CPU each thread used in it (by thread name, most first).
    pub threads: Vec<(String, Duration)>,
    /// Reconciler passes in it, and their total time.
    pub passes: (u64, Duration),
    /// From a new VM's create to its placement.
    pub placed: Duration,
    /// From a new VM's create to Running (on a simulated node).
    pub running: Duration,
}

impl IdleFigures {
    /// Prints the figures, the peer beside them.
    pub fn print(&self) {
        let between = self.idle_cpu.as_secs_f64() / self.window.as_secs_f64() * 100.0;
        let resyncs = self.full_pass.as_secs_f64() / self.resync.as_secs_f64() * 100.0;
        let idle = between + resyncs;
        // Before: a full pass each tick, two ticks a second.
        let before = (2.0 * self.full_pass.as_secs_f64() * 100.0).min(100.0);
        println!(
            "idle leader, {} VMs settled (in {:.1} s), simulated nodes, no heartbeats:",
            self.vms,
            self.settle.as_secs_f64()
        );
        println!(
            "  CPU: {idle:.2}% of a core (target < 2%): {between:.2}% over {:.0} s of passes over changes, and {resyncs:.2}% for a full pass each resync ({:.0} s)",
            self.window.as_secs_f64(),
            self.resync.as_secs_f64()
        );
        let threads: Vec<String> = self
            .threads
            .iter()
            .take(4)
            .map(|(name, cpu)| {
                format!(
                    "{name} {:.2}%",
                    cpu.as_secs_f64() / self.window.as_secs_f64() * 100.0
                )
            })
            .collect();
        println!("  by thread: {}", threads.join(", "));
        println!(
            "  {} passes in the window, {:.2} ms each on average",
            self.passes.0,
            self.passes.1.as_secs_f64() * 1000.0 / self.passes.0.max(1) as f64
        );
        println!(
            "  peer: a full pass every tick (before): {:.1} ms a pass, {before:.1}% of a core at 2 ticks/s; ratio {:.3}",
            self.full_pass.as_secs_f64() * 1000.0,
            idle / before.max(f64::MIN_POSITIVE)
        );
        println!(
            "  one new VM: placed {:.1} ms after its create, Running after {:.1} ms",
            self.placed.as_secs_f64() * 1000.0,
            self.running.as_secs_f64() * 1000.0
        );
    }
}

/// How many reconciler passes `metrics` counted, and their total time.
fn passes(metrics: &Metrics) -> Result<(u64, Duration)> {
    let text = metrics.render()?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    };
    let count = value("modvisor_reconciler_pass_duration_seconds_count").unwrap_or(0.0);
    let sum = value("modvisor_reconciler_pass_duration_seconds_sum").unwrap_or(0.0);
    Ok((count as u64, Duration::from_secs_f64(sum)))
}

/// CPU time this process has used.
fn cpu_used() -> Result<Duration> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let (user, system) = (usage.user_time(), usage.system_time());
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    Ok(micros(user) + micros(system))
}

/// CPU each thread of this process has used, by name (threads of one name summed).
fn cpu_by_thread() -> Result<std::collections::BTreeMap<String, Duration>> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .ok_or_else(|| anyhow::anyhow!("sysconf(CLK_TCK) gave no tick rate"))?;
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        // A thread that ended meanwhile has no files left: it is not counted.
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read_to_string(dir.join("comm")),
        ) else {
            continue;
        };
        // Fields after the command (which may hold spaces) start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat; 12 and 13 after the command.
        let used = Duration::from_millis((field(11) + field(12)) * 1000 / ticks);
        *out.entry(comm.trim().to_string()).or_insert(Duration::ZERO) += used;
    }
    Ok(out)
}

/// Runs the leader's reconciler (its default resync) over `store` until its fleet is
/// settled, then measures (see the module) idle CPU over `window`.
pub fn measure(store: &Datastore, window: Duration) -> Result<IdleFigures> {
    let config = ReconcilerConfig {
        // No heartbeats here: nodes must not time out during the run.
        node_timeout_secs: 365 * 24 * 3600,
        ..ReconcilerConfig::default()
    };
    if window + Duration::from_secs(60) >= config.resync {
        bail!(
            "the idle window must be a minute shorter than the resync ({} s)",
            config.resync.as_secs()
        );
    }
    let sim = SimFleet(SimulatedNode::new(SimBehaviour {
        boot: Duration::ZERO,
        load_per_module: Duration::ZERO,
    }));
    let wake = Wake::default();
    let changes = watch_changes(store, &wake)?;
    let metrics = Metrics::new()?;
    let leader = Reconciler::new(store.clone(), sim.clone(), config.clone())
        .with_wake(wake)
        .with_changes(changes)
        .with_metrics(metrics.clone());
    std::thread::Builder::new()
        .name("bench-leader".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => tokio::task::LocalSet::new().block_on(&rt, leader.run()),
                Err(e) => eprintln!("bench: the leader's runtime: {e}"),
            }
        })?;

    let (started, leading) = (Instant::now(), Instant::now());
    let vms = loop {
        let all = store.all_vms()?;
        let settled = all
            .iter()
            .filter(|v| v.status.phase == Phase::Running)
            .count();
        if settled == all.len() {
            break all.len();
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!(
                "the fleet did not settle within an hour: {settled} of {} Running",
                all.len()
            );
        }
        eprintln!("settling: {settled} of {} VMs Running", all.len());
        std::thread::sleep(Duration::from_secs(2));
    };
    let settle = started.elapsed();

    // The peer: one full pass over the same fleet, on a reconciler of its own that
    // acts on nothing (the fleet is settled).
    let peer = Reconciler::new(store.clone(), sim, config.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let t = Instant::now();
    tokio::task::LocalSet::new().block_on(&rt, async { peer.pass() })?;
    let full_pass = t.elapsed();

    // Idle: passes over changes only, in a window clear of the leader's resyncs (whose
    // full pass is added from the peer's figure).
    let settle_margin = full_pass * 3 + Duration::from_secs(1);
    let into_resync =
        Duration::from_nanos((leading.elapsed().as_nanos() % config.resync.as_nanos()) as u64);
    if into_resync + settle_margin + window >= config.resync {
        std::thread::sleep(config.resync - into_resync + settle_margin);
    } else {
        std::thread::sleep(Duration::from_secs(1));
    }
    let (cpu0, t0, passes0) = (cpu_used()?, Instant::now(), passes(&metrics)?);
    let threads0 = cpu_by_thread()?;
    std::thread::sleep(window);
    let (idle_cpu, window) = (cpu_used()? - cpu0, t0.elapsed());
    let mut threads: Vec<(String, Duration)> = cpu_by_thread()?
        .into_iter()
        .map(|(name, used)| {
            let before = threads0.get(&name).copied().unwrap_or(Duration::ZERO);
            (name, used.saturating_sub(before))
        })
        .collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.1));
    let passes1 = passes(&metrics)?;
    let passes = (
        passes1.0.saturating_sub(passes0.0),
        passes1.1.saturating_sub(passes0.1),
    );

    // One new VM.
    let t = Instant::now();
    let id = store
        .create_vm("bench", "t0", &crate::scheduler::bench_vm("one-more"))?
        .id;
    let mut placed = None;
    let running = loop {
        let vm = store.get_vm(VmFilter::All, &id)?;
        if placed.is_none() && vm.status.node.is_some() {
            placed = Some(t.elapsed());
        }
        if vm.status.phase == Phase::Running {
            break t.elapsed();
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!(
                "the new VM is not Running after 60 s: {:?}",
                vm.status.phase
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    Ok(IdleFigures {
        vms,
        settle,
        full_pass,
        window,
        resync: config.resync,
        idle_cpu,
        threads,
        passes,
        placed: placed.unwrap_or(running),
        running,
    })
}
