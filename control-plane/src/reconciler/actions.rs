//! What the reconciler asks of nodes (each call idempotent, retried on a later pass),
//! and how it records what they answer.

use super::{phase, NodeConnector, Reconciler};
use crate::model::{EnsureVm, ModuleRequest, Node, NodeLoadModule, Phase, RequestState, Vm};
use crate::store::VmFilter;
use modvisor_node_api::{ClientError, Deleted, NodeApi};

impl<C: NodeConnector> Reconciler<C> {
    /// Acts on `vm`'s module `requests` (read for the whole pass): delivers the next
    /// wanted one, unloads one no longer wanted, or starts its first-boot script.
    pub(super) fn modules(
        &self,
        node: Node,
        vm: &Vm,
        requests: &[ModuleRequest],
    ) -> crate::Result<()> {
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
            let certificates = self.store.signer_certificates(&closure)?;
            let body = NodeLoadModule {
                name: r.name.clone(),
                params,
                closure,
                approved,
                certificates,
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
    pub(super) async fn ensure(self, node: Node, vm: Vm) -> Result<(), String> {
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
            kernel_mode: vm.spec.kernel_mode,
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
    pub(super) fn decide(&self, id: &str) -> crate::Result<()> {
        let vm = self.store.get_vm(VmFilter::All, id)?;
        if let Some((phase, reason)) =
            phase::decide_phase(&vm, self.store.observation(id)?.as_ref())
        {
            self.store.set_vm_phase(id, phase, reason)?;
        }
        Ok(())
    }

    pub(super) async fn delete(self, node: Node, id: String) -> Result<(), String> {
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
