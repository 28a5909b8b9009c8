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

mod connect;
pub mod phase;

pub use connect::{ConsoleDialError, HttpNodes, NodeConnector, NodeConsole};

use crate::metrics::Metrics;
use crate::model::{
    EnsureVm, ModuleRequest, Node, NodeLoadModule, NodeState, ObservedVm, Phase, RequestState, Vm,
};
use crate::store::{Datastore, Strategy, VmFilter};
use modvisor_node_api::{Budgets, ClientError, Deleted, NodeApi};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The default fencing bound, in seconds (see [`ReconcilerConfig::fence_after_secs`]).
pub const DEFAULT_FENCE_AFTER_SECS: u64 = 30;

/// How often the leader prunes the audit trail.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Batches of events pruned at most each time (the rest waits for the next time).
const PRUNE_ROUNDS: usize = 50;

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
        }
    }
}

/// Wakes the reconciler at once (a change it should act on was stored), instead of at its
/// next interval. Wakes given while it is busy are kept: it passes again when it is done.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<tokio::sync::Notify>);

impl Wake {
    /// Asks for a pass now.
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// Starts the leader's work on its own thread: it campaigns as `replica` for leadership
/// (at once on sled; see `store::leadership`), and while it leads runs the reconciler with
/// every write fenced by its term, woken by `wake`, by changes to VMs and module requests
/// that any replica stores, and by its interval. When the term ends the reconciler stops
/// and the replica campaigns again; a new term starts a new reconciler, which gives nodes
/// a heartbeat timeout of grace before it calls any NotReady.
pub fn spawn(
    store: Datastore,
    nodes: HttpNodes,
    metrics: Metrics,
    config: ReconcilerConfig,
    wake: Wake,
    replica: String,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reconciler".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "reconciler runtime; the reconciler does not run");
                    return;
                }
            };
            let woken = wake.clone();
            let changed: crate::store::Changed = Arc::new(move || woken.now());
            if let Err(e) = store.watch_tables(
                &[crate::store::Table::Vms, crate::store::Table::ModuleRequests],
                changed,
            ) {
                tracing::warn!(error = %e, "watching the store; the reconciler runs on its interval only");
            }
            loop {
                let term = match store.campaign(&replica) {
                    Ok(t) => Arc::new(t),
                    Err(e) => {
                        tracing::warn!(error = %e, "campaigning for leadership; trying again");
                        std::thread::sleep(config.interval);
                        continue;
                    }
                };
                metrics.set_leader(true);
                let r = Reconciler::new(store.fenced(term.clone()), nodes.clone(), config.clone())
                    .with_metrics(metrics.clone())
                    .with_wake(wake.clone());
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async {
                    tokio::select! {
                        () = r.run() => {}
                        () = term.over() => {}
                    }
                });
                metrics.set_leader(false);
                tracing::warn!(%replica, "no longer the leader: the reconciler stops and campaigns again");
            }
        })
        .map(drop)
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
}

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

    /// Passes forever: `interval` apart, or at once when woken (a stored change, an action
    /// that completed). Must run inside a `LocalSet`.
    pub async fn run(self) {
        let mut pruned = std::time::Instant::now();
        loop {
            let started = std::time::Instant::now();
            if let Err(e) = self.pass() {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = std::time::Instant::now();
                if let Err(e) = self.prune_events() {
                    tracing::warn!(error = %e, "pruning the audit trail failed");
                }
            }
            if let Some(m) = &self.metrics {
                m.pass(started.elapsed());
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => {}
                () = self.wake.0.notified() => {}
            }
        }
    }

    /// Removes the events older than the retention from the audit trail (a bounded
    /// number each time).
    pub fn prune_events(&self) -> crate::Result<usize> {
        let Some(keep) = self.config.event_retention else {
            return Ok(0);
        };
        let since = time::Duration::try_from(keep).ok();
        let Some(cutoff) = since.and_then(|d| time::OffsetDateTime::now_utc().checked_sub(d))
        else {
            // Longer than time goes back: nothing is that old.
            return Ok(0);
        };
        let cutoff = cutoff
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| crate::Error::Storage(format!("the retention's cutoff: {e}")))?;
        let mut removed = 0;
        for _ in 0..PRUNE_ROUNDS {
            let n = self.store.prune_events_before(&cutoff, usize::MAX)?;
            removed += n;
            if n == 0 {
                break;
            }
        }
        if removed > 0 {
            tracing::info!(removed, %cutoff, "audit events past their retention removed");
        }
        Ok(removed)
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
        let Ok(mut busy) = self.busy.lock() else {
            return;
        };
        if !busy.insert(vm.to_string()) {
            return;
        }
        let (busy, id, wake) = (self.busy.clone(), vm.to_string(), self.wake.clone());
        tokio::task::spawn_local(async move {
            let done = f.await;
            if let Ok(mut b) = busy.lock() {
                b.remove(&id);
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
        let expired = self
            .store
            .expire_nodes(self.config.node_timeout_secs, self.started_unix)?;
        for node in expired {
            tracing::warn!(%node, "node stopped heartbeating: NotReady, its VMs Lost");
        }
        let nodes: HashMap<String, Node> = self
            .store
            .list_nodes()?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        let pending: Vec<String> = self
            .store
            .all_vms()?
            .into_iter()
            .filter(|v| v.status.phase == Phase::Pending && !v.deleting)
            .map(|v| v.id)
            .collect();
        if !pending.is_empty() {
            let decided = self.store.place_batch(&pending, self.config.strategy)?;
            if let Some(m) = &self.metrics {
                self.count_placements(m, &decided)?;
            }
        }
        let observations = self.store.observations()?;
        let reports = self.store.node_reports()?;
        let requests = self.store.all_module_requests()?;
        let vms = self.store.all_vms()?;
        if let Some(m) = &self.metrics {
            let mut by_phase = std::collections::BTreeMap::new();
            for vm in &vms {
                *by_phase
                    .entry((vm.tenant.clone(), vm.status.phase))
                    .or_insert(0u64) += 1;
            }
            m.set_vms(&by_phase);
            let now = crate::auth::unix_now();
            m.set_heartbeat_ages(
                &nodes
                    .values()
                    .map(|n| (n.name.clone(), now.saturating_sub(n.last_heartbeat_unix)))
                    .collect(),
            );
        }
        for vm in vms {
            let id = vm.id.clone();
            match self.reconcile_vm(vm, &nodes, &observations, &reports, &requests) {
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

    /// Acts on `vm`'s module `requests` (read for the whole pass): delivers the next
    /// wanted one, unloads one no longer wanted, or starts its first-boot script.
    fn modules(&self, node: Node, vm: &Vm, requests: &[ModuleRequest]) -> crate::Result<()> {
        if let Some(r) = requests
            .iter()
            .find(|r| r.want_loaded && r.state == RequestState::Pending)
        {
            let params = r
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let closure = self.store.module_closure(&r.name, &node.kernel_release)?;
            let budget = self.config.budgets.load(closure.len());
            let names: Vec<&str> = closure.iter().map(|m| m.name.as_str()).collect();
            let approved = self.store.approved_among(&vm.tenant, &names)?;
            let body = NodeLoadModule {
                name: r.name.clone(),
                params,
                closure,
                approved,
                budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
            };
            self.act(&vm.id, self.clone().load(node, vm.id.clone(), body));
        } else if let Some(r) = requests
            .iter()
            .find(|r| !r.want_loaded && r.state == RequestState::Loaded)
        {
            self.act(
                &vm.id,
                self.clone().unload(node, vm.id.clone(), r.name.clone()),
            );
        } else if let Some(script) = phase::user_data_due(vm, requests) {
            let (id, script) = (vm.id.clone(), script.to_string());
            self.act(&vm.id, self.clone().run_user_data(node, id, script));
        }
        Ok(())
    }

    /// Starts a VM's first-boot script on its node; what the node answers moves the VM's
    /// `status.user_data` on (a lost answer is asked again: the node starts a script once
    /// per boot and answers its state).
    async fn run_user_data(self, node: Node, id: String, script: String) -> Result<(), String> {
        let status = self
            .nodes
            .connect(&node)?
            .run_user_data(&id, &modvisor_node_api::RunUserData { script })
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .advance_user_data(&id, &status)
            .map_err(|e| e.to_string())
    }

    /// Asks the node to hold the VM as its spec says; what the node answers is recorded as
    /// an observation and decided on like any other.
    async fn ensure(self, node: Node, vm: Vm) -> Result<(), String> {
        if vm.status.phase == Phase::Scheduled {
            self.store
                .set_vm_phase(&vm.id, Phase::Starting, None)
                .map_err(|e| e.to_string())?;
        }
        let network = match &vm.status.network {
            Some(n) => Some(
                self.store
                    .network_attachment(&vm.tenant, n)
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let body = EnsureVm {
            tenant: vm.tenant.clone(),
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
            power_state: vm.spec.power_state,
            network,
        };
        let observed = self
            .nodes
            .connect(&node)?
            .ensure_vm(&vm.id, &body)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .record_observation(&node.name, &observed)
            .map_err(|e| e.to_string())?;
        self.decide(&vm.id).map_err(|e| e.to_string())
    }

    /// Applies the latest observation of VM `id` to its phase.
    fn decide(&self, id: &str) -> crate::Result<()> {
        let vm = self.store.get_vm(VmFilter::All, id)?;
        if let Some((phase, reason)) =
            phase::decide_phase(&vm, self.store.observation(id)?.as_ref())
        {
            self.store.set_vm_phase(id, phase, reason)?;
        }
        Ok(())
    }

    async fn delete(self, node: Node, id: String) -> Result<(), String> {
        match self.nodes.connect(&node)?.delete_vm(&id).await {
            Ok(Deleted::Removed | Deleted::NotThere) => {}
            Err(e) => return Err(e.to_string()),
        }
        self.store.finish_delete(&id).map_err(|e| e.to_string())
    }

    /// Delivers one module request. The call waits the node's budget plus the margin,
    /// so it is never retried while the node still works on it within its budget.
    async fn load(self, node: Node, id: String, body: NodeLoadModule) -> Result<(), String> {
        let name = body.name.clone();
        self.store
            .set_request_state(&id, &name, RequestState::Vetting, None)
            .map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let results = match self.nodes.connect(&node) {
            Ok(api) => api.load_module(&id, &body).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Some(m) = &self.metrics {
            let (outcome, reason) = match &results {
                Err(_) => ("undelivered", "none"),
                Ok(r) => match r.iter().find(|r| r.state != RequestState::Loaded) {
                    None => ("loaded", "none"),
                    Some(bad) => (
                        if bad.state == RequestState::Rejected {
                            "rejected"
                        } else {
                            "failed"
                        },
                        bad.rejection.as_ref().map_or("none", |x| x.kind()),
                    ),
                },
            };
            m.module_outcome(outcome, reason, started.elapsed());
        }
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                self.store
                    .set_request_state(&id, &name, RequestState::Pending, None)
                    .map_err(|e| e.to_string())?;
                return Err(e);
            }
        };
        let (state, reason) = match results.iter().find(|r| r.state != RequestState::Loaded) {
            None => (RequestState::Loaded, None),
            Some(r) => (r.state, r.reason.clone()),
        };
        self.store
            .set_request_state(&id, &name, state, reason)
            .map_err(|e| e.to_string())
    }

    async fn unload(self, node: Node, id: String, name: String) -> Result<(), String> {
        let (state, reason) = match self.nodes.connect(&node)?.unload_module(&id, &name).await {
            Ok(()) => (RequestState::Unloaded, None),
            Err(e @ ClientError::Refused { .. }) => {
                (RequestState::Loaded, Some(format!("unload refused: {e}")))
            }
            Err(e) => return Err(e.to_string()),
        };
        self.store
            .set_request_state(&id, &name, state, reason)
            .map_err(|e| e.to_string())?;
        if state == RequestState::Loaded {
            // A refused unload stays Loaded and is no longer retried.
            self.store
                .keep_loaded(&id, &name)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
