//! The reconciler: level-triggered, per VM, it compares what tenants asked for with what
//! nodes report and acts through the node API (reqwest, with timeouts and retries on the
//! next pass; every node request is idempotent).
//!
//! Each pass: nodes whose heartbeats stopped become NotReady and their VMs Lost; Lost VMs
//! are placed again (modules loaded again); Pending VMs are placed; placed VMs are ensured
//! on their node (power on/off); module requests are delivered or withdrawn; deletions
//! are carried out. At most one action per VM is in flight.

use crate::auth::{Role, TokenKeys};
use crate::model::{
    EnsureVm, Node, NodeLoadModule, NodeState, Phase, PowerState, RequestState, Vm,
};
use crate::store::{Datastore, Strategy, VmFilter};
use modvisor_node_api::{Deleted, NodeApi, NodeClient};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the reconciler behaves.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Time between passes.
    pub interval: Duration,
    /// A node silent for longer is NotReady.
    pub node_timeout_secs: u64,
    /// How VMs are placed.
    pub strategy: Strategy,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval: Duration::from_millis(500),
            node_timeout_secs: 6,
            strategy: Strategy::Spread,
        }
    }
}

/// Starts the reconciler on its own thread; it runs for the life of the process.
pub fn spawn(
    store: Datastore,
    keys: Arc<TokenKeys>,
    config: ReconcilerConfig,
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
                    tracing::error!(error = %e, "reconciler runtime");
                    return;
                }
            };
            let http = match reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .build()
            {
                Ok(http) => http,
                Err(e) => {
                    tracing::error!(error = %e, "reconciler HTTP client; the reconciler does not run");
                    return;
                }
            };
            let r = Reconciler {
                store,
                keys,
                http,
                busy: Arc::new(Mutex::new(HashSet::new())),
                config,
            };
            rt.block_on(r.run());
        })
        .map(drop)
}

#[derive(Clone)]
struct Reconciler {
    store: Datastore,
    keys: Arc<TokenKeys>,
    http: reqwest::Client,
    busy: Arc<Mutex<HashSet<String>>>,
    config: ReconcilerConfig,
}

impl Reconciler {
    async fn run(self) {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                loop {
                    if let Err(e) = self.pass() {
                        tracing::warn!(error = %e, "reconcile pass failed");
                    }
                    tokio::time::sleep(self.config.interval).await;
                }
            })
            .await;
    }

    /// A client of `node`'s API, calling with a fresh control-plane token.
    fn client(&self, node: &Node) -> Result<NodeClient, String> {
        let token = self
            .keys
            .issue("control-plane", Role::ControlPlane, None, 300)
            .map_err(|e| format!("cannot sign a token for node {}: {e}", node.name))?;
        Ok(NodeClient::new(&node.address, token, self.http.clone()))
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
        let (busy, id) = (self.busy.clone(), vm.to_string());
        tokio::task::spawn_local(async move {
            if let Err(e) = f.await {
                tracing::info!(vm = %id, error = %e, "reconcile action failed; retrying next pass");
            }
            if let Ok(mut b) = busy.lock() {
                b.remove(&id);
            }
        });
    }

    fn pass(&self) -> crate::Result<()> {
        for node in self.store.expire_nodes(self.config.node_timeout_secs)? {
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
            self.store.place_batch(&pending, self.config.strategy)?;
        }
        for vm in self.store.all_vms()? {
            if self.busy.lock().map(|b| b.contains(&vm.id)).unwrap_or(true) {
                continue;
            }
            let node = vm.status.node.as_ref().and_then(|n| nodes.get(n)).cloned();
            let ready = node.as_ref().is_some_and(|n| n.state == NodeState::Ready);
            if vm.deleting {
                match node {
                    Some(n) if ready => self.act(&vm.id, self.clone().delete(n, vm.id.clone())),
                    // A node that is gone is told to remove it when it heartbeats again.
                    _ => self.store.finish_delete(&vm.id)?,
                }
                continue;
            }
            match (vm.status.phase, node) {
                (Phase::Lost, _) => {
                    self.store
                        .unplace_vm(&vm.id, "its node was lost; recreating it on another node")?;
                }
                (Phase::Pending, _) => {} // placed in a batch above
                (_, Some(n)) if ready => {
                    if needs_ensure(&vm) {
                        let id = vm.id.clone();
                        self.act(&id, self.clone().ensure(n, vm));
                    } else if vm.status.phase == Phase::Running {
                        self.modules(n, &vm)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn modules(&self, node: Node, vm: &Vm) -> crate::Result<()> {
        let requests = self.store.module_requests(VmFilter::All, &vm.id)?;
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
            let body = NodeLoadModule {
                name: r.name.clone(),
                params,
                approved: self.store.approved_modules(&vm.tenant)?,
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
        }
        Ok(())
    }

    async fn ensure(self, node: Node, vm: Vm) -> Result<(), String> {
        if vm.status.phase == Phase::Scheduled {
            let _ = self.store.set_vm_phase(&vm.id, Phase::Starting, None);
        }
        let body = EnsureVm {
            tenant: vm.tenant.clone(),
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
            power_state: vm.spec.power_state,
        };
        let observed = self
            .client(&node)?
            .ensure_vm(&vm.id, &body)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .set_vm_phase(&vm.id, observed.phase, observed.reason)
            .map_err(|e| e.to_string())
    }

    async fn delete(self, node: Node, id: String) -> Result<(), String> {
        match self.client(&node)?.delete_vm(&id).await {
            Ok(Deleted::Removed | Deleted::NotThere) => {}
            Err(e) => return Err(e.to_string()),
        }
        self.store.finish_delete(&id).map_err(|e| e.to_string())
    }

    async fn load(self, node: Node, id: String, body: NodeLoadModule) -> Result<(), String> {
        let name = body.name.clone();
        let _ = self
            .store
            .set_request_state(&id, &name, RequestState::Vetting, None);
        let client = match self.client(&node) {
            Ok(c) => c,
            Err(e) => {
                let _ = self
                    .store
                    .set_request_state(&id, &name, RequestState::Pending, None);
                return Err(e);
            }
        };
        let results = match client.load_module(&id, &body).await {
            Ok(r) => r,
            Err(e) => {
                let _ = self
                    .store
                    .set_request_state(&id, &name, RequestState::Pending, None);
                return Err(e.to_string());
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
        let (state, reason) = match self.client(&node)?.unload_module(&id, &name).await {
            Ok(()) => (RequestState::Unloaded, None),
            Err(e @ modvisor_node_api::ClientError::Refused { .. }) => {
                (RequestState::Loaded, Some(format!("unload refused: {e}")))
            }
            Err(e) => return Err(e.to_string()),
        };
        // A refused unload stays Loaded but is no longer retried.
        let _ = self.store.set_request_state(&id, &name, state, reason);
        if state == RequestState::Loaded {
            let _ = self.store.keep_loaded(&id, &name);
        }
        Ok(())
    }
}

/// Whether the node must be told the VM's desired state.
fn needs_ensure(vm: &Vm) -> bool {
    matches!(
        (vm.status.phase, vm.spec.power_state),
        (Phase::Scheduled | Phase::Starting, _)
            | (Phase::Running, PowerState::Stopped)
            | (Phase::Stopped, PowerState::Running)
    )
}
