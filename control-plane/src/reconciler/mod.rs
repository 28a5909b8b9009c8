//! The reconciler: level-triggered, per VM, it compares what tenants asked for with what
//! nodes observe and acts through the node API ([`NodeApi`], typed, with budgets shared
//! with the nodes; every node request is idempotent and retried on a later pass).
//!
//! Each pass: nodes whose heartbeats stopped become NotReady and their VMs Lost; Lost VMs
//! are placed again (modules loaded again); Pending VMs are placed; each VM's phase is
//! decided from its node's latest observation ([`phase::decide_phase`], the only place
//! that turns observations into phases); placed VMs are ensured on their node (power
//! on/off); module requests are delivered or withdrawn; deletions are carried out. At most
//! one action per VM is in flight, and an action waits at least its node-side budget.
//!
//! A full pass reads every VM; the leader runs one at the start of its term and at each
//! resync, and in between passes over what changed ([`fleet`]: an index of the fleet in
//! memory, kept by the store's watch), so an idle fleet costs next to nothing.

mod actions;
mod connect;
pub mod fleet;
mod incremental;
mod leader;
pub mod phase;

pub use connect::{ConsoleDialError, HttpNodes, NodeConnector, NodeConsole};
pub use leader::{spawn, watch_changes, Wake};

use crate::metrics::Metrics;
use crate::model::{ModuleRequest, Node, NodeState, ObservedVm, Phase, Vm};
use crate::store::{Datastore, Strategy, VmFilter};
use fleet::{Changes, FleetIndex};
use modvisor_node_api::Budgets;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The default fencing bound, in seconds (see [`ReconcilerConfig::fence_after_secs`]).
pub const DEFAULT_FENCE_AFTER_SECS: u64 = 30;

/// How the reconciler behaves.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Time between passes.
    pub interval: Duration,
    /// A node silent for longer is NotReady.
    pub node_timeout_secs: u64,
    /// How VMs are placed.
    pub strategy: Strategy,
    /// How long node calls may take (shared with the nodes).
    pub budgets: Budgets,
    /// How long a NotReady node must have been silent before its VMs are recreated
    /// elsewhere (the fencing bound). Until then they stay Lost on it and come back if it
    /// does; after it, a copy the node still runs is stopped when the node returns.
    pub fence_after_secs: u64,
    /// How long the audit trail keeps an event (`None`: for ever).
    pub event_retention: Option<Duration>,
    /// Time between full passes while the store's watch reports changes (passes in
    /// between read only what changed).
    pub resync: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval: Duration::from_millis(500),
            node_timeout_secs: 6,
            strategy: Strategy::Spread,
            budgets: Budgets::default(),
            fence_after_secs: DEFAULT_FENCE_AFTER_SECS,
            event_retention: None,
            resync: Duration::from_secs(600),
        }
    }
}

/// The reconciler over nodes reached through `C`.
#[derive(Clone)]
pub struct Reconciler<C> {
    store: Datastore,
    nodes: C,
    busy: Arc<Mutex<HashSet<String>>>,
    config: ReconcilerConfig,
    /// When this reconciler started (seconds since the epoch): nodes' silence counts
    /// from here at the earliest.
    started_unix: u64,
    /// VMs missing from their node's heartbeat: the report number where each was first
    /// missed (two reports in a row make an absence).
    absent: Arc<Mutex<HashMap<String, u64>>>,
    /// Where each pass publishes the VMs by phase, when serving metrics.
    metrics: Option<Metrics>,
    /// Wakes it between intervals.
    wake: Wake,
    /// What changed since the last pass (fed by the store's watch); none: every pass is
    /// a full one.
    changes: Option<Arc<Mutex<Changes>>>,
    /// Every VM's tenant, phase and node, as the last passes read them.
    fleet: Arc<Mutex<FleetIndex>>,
    /// The nodes as the last pass saw them.
    nodes_read: Arc<Mutex<NodesRead>>,
    /// The VMs by phase as last published to the metrics.
    published: Arc<Mutex<Published>>,
    /// Until when (unix seconds) a pass with nothing changed has nothing to do (see
    /// `note_quiet_until`); `None` before the first pass.
    quiet_until: Arc<Mutex<Option<u64>>>,
}

/// See [`Reconciler::nodes_read`].
type NodesRead = Option<Arc<HashMap<String, Node>>>;

/// See [`Reconciler::published`].
type Published = Option<std::collections::BTreeMap<(String, Phase), u64>>;

impl<C: NodeConnector> Reconciler<C> {
    /// A reconciler of `store` acting on nodes through `nodes`.
    pub fn new(store: Datastore, nodes: C, config: ReconcilerConfig) -> Self {
        Reconciler {
            store,
            nodes,
            busy: Arc::new(Mutex::new(HashSet::new())),
            config,
            started_unix: modvisor_auth::unix_now(),
            absent: Arc::new(Mutex::new(HashMap::new())),
            metrics: None,
            wake: Wake::default(),
            changes: None,
            fleet: Arc::new(Mutex::new(FleetIndex::default())),
            nodes_read: Arc::new(Mutex::new(None)),
            published: Arc::new(Mutex::new(None)),
            quiet_until: Arc::new(Mutex::new(None)),
        }
    }

    /// The same reconciler, publishing the VMs by phase to `metrics` after each pass.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The same reconciler, woken by `wake` between its intervals.
    pub fn with_wake(mut self, wake: Wake) -> Self {
        self.wake = wake;
        self
    }

    /// The same reconciler, told by `changes` what changed since its last pass (what the
    /// store's watch of [`fleet::WATCHED`] notes): between resyncs, it passes over only
    /// that.
    pub fn with_changes(mut self, changes: Arc<Mutex<Changes>>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Whether no action is in flight.
    pub fn is_idle(&self) -> bool {
        self.busy.lock().map(|b| b.is_empty()).unwrap_or(false)
    }

    /// Whether an action for VM `id` is in flight.
    fn is_busy(&self, id: &str) -> bool {
        // A poisoned set means an action panicked: treat the VM as busy, act no more.
        self.busy.lock().map(|b| b.contains(id)).unwrap_or(true)
    }

    /// Acts on a VM that its Ready node has left out of two heartbeats in a row: one that
    /// was Running or Stopped there is Failed with the reason (its node lost it); one that
    /// was Lost while the node was away is recreated elsewhere. True when it acted.
    fn missing_from_its_node(
        &self,
        vm: &Vm,
        nodes: &HashMap<String, Node>,
        reports: &HashMap<String, crate::store::NodeReport>,
    ) -> crate::Result<bool> {
        let held = matches!(
            vm.status.phase,
            Phase::Running | Phase::Stopped | Phase::Lost
        );
        let node = vm.status.node.as_deref().and_then(|n| nodes.get(n));
        let report = node
            .filter(|n| n.state == NodeState::Ready)
            .and_then(|n| reports.get(&n.name));
        let (Some(node), Some(report)) = (node, report) else {
            return Ok(false);
        };
        let Ok(mut absent) = self.absent.lock() else {
            return Ok(false);
        };
        if vm.deleting || !held || report.vms.binary_search(&vm.id).is_ok() {
            absent.remove(&vm.id);
            return Ok(false);
        }
        let first = *absent.entry(vm.id.clone()).or_insert(report.seq);
        if report.seq <= first {
            return Ok(false);
        }
        absent.remove(&vm.id);
        drop(absent);
        if vm.status.phase == Phase::Lost {
            self.store.unplace_vm(
                &vm.id,
                &format!("node {} came back without it; recreating it", node.name),
            )?;
        } else {
            let gone = ObservedVm::bare(
                &vm.id,
                Phase::Failed,
                Some(format!(
                    "node {} no longer reports this VM (its agent lost it)",
                    node.name
                )),
            );
            self.store.record_observation(&node.name, &gone)?;
            self.decide(&vm.id)?;
        }
        Ok(true)
    }

    /// Whether a lost VM's node has been silent for longer than the fencing bound (or is
    /// gone), so the VM may be recreated elsewhere.
    fn fenced(&self, node: Option<&Node>) -> bool {
        let Some(n) = node else {
            return true;
        };
        let since = n.last_heartbeat_unix.max(self.started_unix);
        n.state != NodeState::Ready
            && modvisor_auth::unix_now().saturating_sub(since) > self.config.fence_after_secs
    }

    /// Runs `f` for `vm` unless an action for it is already in flight.
    fn act<F>(&self, vm: &str, f: F)
    where
        F: std::future::Future<Output = Result<(), String>> + 'static,
    {
        // Calls to nodes are not fenced by the store: a leader whose term is over (paused
        // past its lease, say) makes none.
        if let Err(e) = self.store.check_term() {
            tracing::warn!(%vm, error = %e, "not acting: no longer the leader");
            return;
        }
        let Ok(mut busy) = self.busy.lock() else {
            return;
        };
        if !busy.insert(vm.to_string()) {
            return;
        }
        let (busy, id, wake) = (self.busy.clone(), vm.to_string(), self.wake.clone());
        let changes = self.changes.clone();
        tokio::task::spawn_local(async move {
            let done = f.await;
            if let Ok(mut b) = busy.lock() {
                b.remove(&id);
            }
            // Its VM is looked at again by the next pass, whatever the outcome (a failed
            // action is retried then).
            if let Some(c) = &changes {
                match c.lock() {
                    Ok(mut c) => {
                        c.vms.insert(id.clone());
                    }
                    Err(_) => tracing::error!("the reconciler's change set is poisoned"),
                }
            }
            match done {
                // What follows it (a module after a boot) need not wait for the interval.
                Ok(()) => wake.now(),
                Err(e) => {
                    tracing::info!(vm = %id, error = %e, "reconcile action failed; retrying next pass")
                }
            }
        });
    }

    /// One pass over every node and VM. Must run inside a `LocalSet` (actions are local
    /// tasks).
    pub fn pass(&self) -> crate::Result<()> {
        let nodes = self.nodes_after_expiry()?;
        let pending: Vec<String> = self
            .store
            .all_vms()?
            .into_iter()
            .filter(|v| v.status.phase == Phase::Pending && !v.deleting)
            .map(|v| v.id)
            .collect();
        self.place(&pending)?;
        let observations = self.store.observations()?;
        let reports = self.store.node_reports()?;
        let requests = self.store.all_module_requests()?;
        let vms = self.store.all_vms()?;
        *lock(&self.fleet)? = FleetIndex::of(&vms);
        *lock(&self.nodes_read)? = Some(Arc::new(nodes.clone()));
        self.publish(&nodes, Heartbeats::All)?;
        self.reconcile_each(vms, &nodes, &observations, &reports, &requests)?;
        self.note_quiet_until(&nodes)
    }

    /// Marks nodes silent past the timeout NotReady (their VMs Lost), then lists them all.
    fn nodes_after_expiry(&self) -> crate::Result<HashMap<String, Node>> {
        let (expired, nodes) = self
            .store
            .expire_and_list_nodes(self.config.node_timeout_secs, self.started_unix)?;
        for node in expired {
            tracing::warn!(%node, "node stopped heartbeating: NotReady, its VMs Lost");
        }
        Ok(nodes.into_iter().map(|n| (n.name.clone(), n)).collect())
    }

    /// Places the Pending VMs `ids` (in batches the store can take), counting decisions.
    fn place(&self, ids: &[String]) -> crate::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let decided = self.store.place_batch(ids, self.config.strategy)?;
        if let Some(m) = &self.metrics {
            self.count_placements(m, &decided)?;
        }
        Ok(())
    }

    /// Publishes the VMs by phase (from the index) when they changed, and the last
    /// heartbeat of the nodes `heartbeats` names (their ages are computed when scraped).
    fn publish(
        &self,
        nodes: &HashMap<String, Node>,
        heartbeats: Heartbeats<'_>,
    ) -> crate::Result<()> {
        let Some(m) = &self.metrics else {
            return Ok(());
        };
        let mut published = lock(&self.published)?;
        let fleet = lock(&self.fleet)?;
        if published.as_ref() != Some(fleet.by_phase()) {
            m.set_vms(fleet.by_phase());
            *published = Some(fleet.by_phase().clone());
        }
        let last = |n: &Node| n.last_heartbeat_unix;
        match heartbeats {
            Heartbeats::All => {
                m.set_heartbeats(nodes.iter().map(|(k, n)| (k.clone(), last(n))).collect())
            }
            Heartbeats::Of(names) => {
                for name in names {
                    m.set_heartbeat(name, nodes.get(name).map(last));
                }
            }
        }
        Ok(())
    }

    /// Each VM's part of a pass, over what the pass read.
    fn reconcile_each(
        &self,
        vms: Vec<Vm>,
        nodes: &HashMap<String, Node>,
        observations: &HashMap<String, crate::store::Observation>,
        reports: &HashMap<String, crate::store::NodeReport>,
        requests: &HashMap<String, Vec<ModuleRequest>>,
    ) -> crate::Result<()> {
        for vm in vms {
            let id = vm.id.clone();
            match self.reconcile_vm(vm, nodes, observations, reports, requests) {
                Ok(()) => {}
                // Deleted since this pass listed it (through this replica or another).
                Err(crate::Error::NotFound { .. }) => {
                    tracing::debug!(vm = %id, "gone during the pass");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One VM's part of a pass.
    fn reconcile_vm(
        &self,
        mut vm: Vm,
        nodes: &HashMap<String, Node>,
        observations: &HashMap<String, crate::store::Observation>,
        reports: &HashMap<String, crate::store::NodeReport>,
        requests: &HashMap<String, Vec<ModuleRequest>>,
    ) -> crate::Result<()> {
        if self.is_busy(&vm.id) || self.missing_from_its_node(&vm, nodes, reports)? {
            return Ok(());
        }
        if let Some((phase, reason)) = phase::decide_phase(&vm, observations.get(&vm.id)) {
            self.store.set_vm_phase(&vm.id, phase, reason.clone())?;
            vm.status.phase = phase;
            vm.status.reason = reason;
        }
        let node = vm.status.node.as_ref().and_then(|n| nodes.get(n)).cloned();
        let ready = node.as_ref().is_some_and(|n| n.state == NodeState::Ready);
        if vm.deleting {
            match node {
                Some(n) if ready => self.act(&vm.id, self.clone().delete(n, vm.id.clone())),
                // A node that is gone is told to remove it when it heartbeats again.
                _ => self.store.finish_delete(&vm.id)?,
            }
            return Ok(());
        }
        match (vm.status.phase, node) {
            (Phase::Lost, node) if self.fenced(node.as_ref()) => {
                self.store
                    .unplace_vm(&vm.id, "its node was lost; recreating it on another node")?;
            }
            (Phase::Lost, _) => {} // waiting for its node until the fencing bound
            (Phase::Pending, _) => {} // placed in a batch above
            (_, Some(n)) if ready => {
                if phase::needs_ensure(&vm) {
                    let id = vm.id.clone();
                    self.act(&id, self.clone().ensure(n, vm));
                } else if vm.status.phase == Phase::Running {
                    let none = Vec::new();
                    self.modules(n, &vm, requests.get(&vm.id).unwrap_or(&none))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Counts placement decisions, and how long each placed VM was Pending.
    fn count_placements(
        &self,
        metrics: &Metrics,
        decided: &[(String, crate::store::Placement)],
    ) -> crate::Result<()> {
        let now = time::OffsetDateTime::now_utc();
        for (id, placement) in decided {
            let pending = match placement {
                crate::store::Placement::Unschedulable(_) => None,
                crate::store::Placement::Placed(_) => {
                    let vm = match self.store.get_vm(VmFilter::All, id) {
                        Ok(vm) => vm,
                        // Deleted since it was placed: counted, without its wait.
                        Err(crate::Error::NotFound { .. }) => {
                            metrics.placement(true, None);
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    time::OffsetDateTime::parse(
                        &vm.created_at,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .ok()
                    .and_then(|created| std::time::Duration::try_from(now - created).ok())
                }
            };
            metrics.placement(
                matches!(placement, crate::store::Placement::Placed(_)),
                pending,
            );
        }
        Ok(())
    }
}

/// Which nodes' heartbeats a pass publishes.
enum Heartbeats<'a> {
    /// Every node's (the pass read them all).
    All,
    /// Those of the nodes named (the pass read their records).
    Of(&'a [String]),
}

/// Locks one of the reconciler's shared tables; a poisoned one (an action panicked while
/// holding it) fails the pass, said as it is.
fn lock<T>(m: &Mutex<T>) -> crate::Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| crate::Error::Poisoned("a table of the reconciler's"))
}

/// A VM for the unit tests of the reconciler's decisions.
#[cfg(test)]
pub(crate) fn test_vm(id: &str, phase: Phase, node: Option<&str>) -> Vm {
    use crate::model::{PowerState, VmSpec, VmStatus};
    Vm {
        id: id.into(),
        tenant: "t".into(),
        spec: VmSpec {
            name: "web".into(),
            kernel_mode: Default::default(),
            vcpus: 1,
            memory_mib: 128,
            modules: Vec::new(),
            power_state: PowerState::Running,
            user_data: None,
            network: None,
        },
        status: VmStatus::new(phase, node.map(str::to_string), None),
        generation: 1,
        deleting: false,
        created_at: String::new(),
        updated_at: String::new(),
    }
}
