//! `bench scheduler`'s second half: what the leader's reconciler costs once its fleet is
//! settled, and how soon it places one new VM, over the store the first half filled. The
//! nodes are simulated (the `NodeApi` trait in memory: the bench measures the control
//! plane, not guests) and send no heartbeats (the node timeout is set past the run), so
//! what is measured is the reconciler and its store alone. The peer, in the same run: one
//! full pass over the same fleet, which is what every tick cost before the reconciler
//! followed changes (two ticks a second).

use anyhow::{bail, Result};
use modvisor_control_plane::model::{Node, Phase};
use modvisor_control_plane::reconciler::fleet::{Changes, WATCHED};
use modvisor_control_plane::reconciler::{NodeConnector, Reconciler, ReconcilerConfig, Wake};
use modvisor_control_plane::store::{Changed, Datastore, VmFilter};
use modvisor_node_api::sim::{SimBehaviour, SimulatedNode};
use std::sync::{Arc, Mutex};
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
    /// The window idle CPU was measured over (one resync).
    pub window: Duration,
    /// CPU the process used in it.
    pub idle_cpu: Duration,
    /// From a new VM's create to its placement.
    pub placed: Duration,
    /// From a new VM's create to Running (on a simulated node).
    pub running: Duration,
}

impl IdleFigures {
    /// Prints the figures, the peer beside them.
    pub fn print(&self) {
        let idle = self.idle_cpu.as_secs_f64() / self.window.as_secs_f64() * 100.0;
        // Before: a full pass each tick, two ticks a second.
        let before = (2.0 * self.full_pass.as_secs_f64() * 100.0).min(100.0);
        println!(
            "idle leader, {} VMs settled (in {:.1} s), simulated nodes, no heartbeats:",
            self.vms,
            self.settle.as_secs_f64()
        );
        println!(
            "  CPU over one resync window ({:.0} s, one full pass in it): {idle:.2}% of a core; target < 2%",
            self.window.as_secs_f64()
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

/// CPU time this process has used.
fn cpu_used() -> Result<Duration> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let (user, system) = (usage.user_time(), usage.system_time());
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    Ok(micros(user) + micros(system))
}

/// Runs the leader's reconciler over `store` until its fleet is settled, then measures
/// (see the module). `resync` is the reconciler's; the idle window is one of it.
pub fn measure(store: &Datastore, resync: Duration) -> Result<IdleFigures> {
    let config = ReconcilerConfig {
        // No heartbeats here: nodes must not time out during the run.
        node_timeout_secs: 365 * 24 * 3600,
        resync,
        ..ReconcilerConfig::default()
    };
    let sim = SimFleet(SimulatedNode::new(SimBehaviour {
        boot: Duration::ZERO,
        load_per_module: Duration::ZERO,
    }));
    let (wake, changes) = (Wake::default(), Arc::new(Mutex::new(Changes::default())));
    let (noted, woken) = (changes.clone(), wake.clone());
    let changed: Changed = Arc::new(move |c| {
        if let Ok(mut n) = noted.lock() {
            n.note(c);
        }
        woken.now();
    });
    store.watch_tables(&WATCHED, changed)?;
    let leader = Reconciler::new(store.clone(), sim.clone(), config.clone())
        .with_wake(wake)
        .with_changes(changes);
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

    let started = Instant::now();
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

    // Idle: one resync window, from just after a full pass.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, t0) = (cpu_used()?, Instant::now());
    std::thread::sleep(resync);
    let (idle_cpu, window) = (cpu_used()? - cpu0, t0.elapsed());

    // The peer: one full pass over the same fleet, on a reconciler of its own that
    // acts on nothing (the fleet is settled).
    let peer = Reconciler::new(store.clone(), sim, config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let t = Instant::now();
    tokio::task::LocalSet::new().block_on(&rt, async { peer.pass() })?;
    let full_pass = t.elapsed();

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
        idle_cpu,
        placed: placed.unwrap_or(running),
        running,
    })
}
