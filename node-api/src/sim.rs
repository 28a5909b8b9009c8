//! A simulated node: the same [`NodeApi`], held in memory, no processes, no guests. For
//! fast tests of the control plane's decisions (omicron's simulated sled agent); the real
//! node agent is tested end to end with real guests, never replaced by this.

use crate::client::ClientError;
use crate::exec::{ExecRequest, ExecResult};
use crate::types::{
    EnsureVm, NodeLoadModule, NodeModuleResult, ObservedVm, Phase, PowerState, RequestState,
};
use crate::user_data::{RunUserData, UserDataState, UserDataStatus};
use crate::{Deleted, NodeApi};
use modvisor_modules::Rejection;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How the simulated node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimBehaviour {
    /// How long a VM takes to boot.
    pub boot: Duration,
    /// How long loading one module takes.
    pub load_per_module: Duration,
}

impl Default for SimBehaviour {
    fn default() -> Self {
        SimBehaviour {
            boot: Duration::from_millis(5),
            load_per_module: Duration::from_millis(1),
        }
    }
}

/// What the simulated node was asked to do, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Ensure calls.
    pub ensures: usize,
    /// Load requests begun.
    pub loads_started: usize,
    /// The most load requests in flight at once for one VM.
    pub max_concurrent_loads: usize,
    /// Delete calls.
    pub deletes: usize,
    /// First-boot scripts started (a retried request for a started one is not counted).
    pub user_data_runs: usize,
}

#[derive(Debug, Default)]
struct SimState {
    vms: BTreeMap<String, ObservedVm>,
    loads_in_flight: BTreeMap<String, usize>,
    stats: SimStats,
}

/// An in-memory node. Clones share one state (the same node).
#[derive(Debug, Clone, Default)]
pub struct SimulatedNode {
    state: Arc<Mutex<SimState>>,
    behaviour: SimBehaviour,
}

fn not_found(id: &str) -> ClientError {
    ClientError::Refused {
        url: format!("sim:/v1/vms/{id}"),
        status: 404,
        problem: None,
        detail: format!("vm {id} not found"),
    }
}

impl SimulatedNode {
    /// A node that behaves as `behaviour` says.
    pub fn new(behaviour: SimBehaviour) -> Self {
        SimulatedNode {
            state: Arc::default(),
            behaviour,
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A test thread that panicked while holding it has failed already; go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What it was asked to do so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// What it holds of VM `id`.
    pub fn vm(&self, id: &str) -> Option<ObservedVm> {
        self.lock().vms.get(id).cloned()
    }

    /// Every VM it holds, as a heartbeat reports them.
    pub fn observed(&self) -> Vec<ObservedVm> {
        self.lock().vms.values().cloned().collect()
    }

    /// Forgets VM `id` (as an agent that lost it): its heartbeats no longer list it.
    pub fn lose(&self, id: &str) {
        self.lock().vms.remove(id);
    }

    /// Makes VM `id` fail (as a guest that crashed), as its next observation says.
    pub fn crash(&self, id: &str, reason: &str) {
        if let Some(vm) = self.lock().vms.get_mut(id) {
            vm.phase = Phase::Failed;
            vm.reason = Some(reason.to_string());
            vm.boot = None;
            vm.guest_modules.clear();
        }
    }
}

impl NodeApi for SimulatedNode {
    async fn ensure_vm(&self, id: &str, spec: &EnsureVm) -> Result<ObservedVm, ClientError> {
        let boot = {
            let mut s = self.lock();
            s.stats.ensures += 1;
            let vm = s
                .vms
                .entry(id.to_string())
                .or_insert_with(|| ObservedVm::bare(id, Phase::Stopped, None));
            spec.power_state == PowerState::Running && vm.phase != Phase::Running
        };
        if boot {
            tokio::time::sleep(self.behaviour.boot).await;
        }
        let mut s = self.lock();
        let ensures = s.stats.ensures;
        let vm = s.vms.get_mut(id).ok_or_else(|| not_found(id))?;
        match spec.power_state {
            PowerState::Running => {
                if vm.phase != Phase::Running {
                    // A fresh kernel.
                    vm.boot = Some(format!("sim-boot-{ensures}"));
                }
                vm.phase = Phase::Running;
                vm.reason = None;
            }
            PowerState::Stopped => {
                vm.phase = Phase::Stopped;
                vm.reason = None;
                vm.boot = None;
                vm.guest_modules.clear();
                // The next boot's agent has run nothing.
                vm.user_data = None;
            }
        }
        Ok(vm.clone())
    }

    async fn get_vm(&self, id: &str) -> Result<ObservedVm, ClientError> {
        self.vm(id).ok_or_else(|| not_found(id))
    }

    async fn delete_vm(&self, id: &str) -> Result<Deleted, ClientError> {
        let mut s = self.lock();
        s.stats.deletes += 1;
        Ok(match s.vms.remove(id) {
            Some(_) => Deleted::Removed,
            None => Deleted::NotThere,
        })
    }

    /// Loads the closure in order, `load_per_module` each, within the request's budget: a
    /// module whose turn comes after the budget is spent fails, as a real node answers.
    async fn load_module(
        &self,
        id: &str,
        request: &NodeLoadModule,
    ) -> Result<Vec<NodeModuleResult>, ClientError> {
        {
            let mut s = self.lock();
            if !s.vms.contains_key(id) {
                return Err(not_found(id));
            }
            s.stats.loads_started += 1;
            let in_flight = s.loads_in_flight.entry(id.to_string()).or_default();
            *in_flight += 1;
            let now = *in_flight;
            s.stats.max_concurrent_loads = s.stats.max_concurrent_loads.max(now);
        }
        let deadline = Instant::now() + Duration::from_millis(request.budget_ms);
        let mut results = Vec::new();
        // Dependencies first: the closure lists the root first.
        for m in request.closure.iter().rev() {
            if !request.approved.contains(&m.name) {
                results.push(NodeModuleResult {
                    name: m.name.clone(),
                    state: RequestState::Rejected,
                    reason: Some(format!("module {} is not approved for this tenant", m.name)),
                    rejection: Some(Rejection::NotApproved {
                        module: m.name.clone(),
                    }),
                    errno: None,
                });
                break;
            }
            if Instant::now() + self.behaviour.load_per_module > deadline {
                tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
                results.push(NodeModuleResult {
                    name: m.name.clone(),
                    state: RequestState::Failed,
                    reason: Some(format!(
                        "the node's budget of {} ms for this load ran out",
                        request.budget_ms
                    )),
                    rejection: None,
                    errno: None,
                });
                break;
            }
            tokio::time::sleep(self.behaviour.load_per_module).await;
            let mut s = self.lock();
            if let Some(vm) = s.vms.get_mut(id) {
                if !vm.guest_modules.contains(&m.name) {
                    vm.guest_modules.push(m.name.clone());
                }
            }
            results.push(NodeModuleResult {
                name: m.name.clone(),
                state: RequestState::Loaded,
                reason: None,
                rejection: None,
                errno: None,
            });
        }
        let mut s = self.lock();
        if let Some(n) = s.loads_in_flight.get_mut(id) {
            *n = n.saturating_sub(1);
        }
        Ok(results)
    }

    async fn unload_module(&self, id: &str, name: &str) -> Result<(), ClientError> {
        let mut s = self.lock();
        let vm = s.vms.get_mut(id).ok_or_else(|| not_found(id))?;
        match vm.guest_modules.iter().position(|m| m == name) {
            Some(i) => {
                vm.guest_modules.remove(i);
                Ok(())
            }
            None => Err(ClientError::Refused {
                url: format!("sim:/v1/vms/{id}/modules/{name}"),
                status: 409,
                problem: None,
                detail: format!("{name} is not loaded"),
            }),
        }
    }

    /// Starts the script once per boot of a running VM; it succeeds at once.
    async fn run_user_data(
        &self,
        id: &str,
        _: &RunUserData,
    ) -> Result<UserDataStatus, ClientError> {
        let mut s = self.lock();
        let vm = s.vms.get_mut(id).ok_or_else(|| not_found(id))?;
        if vm.phase != Phase::Running {
            return Err(ClientError::Refused {
                url: format!("sim:/v1/vms/{id}/user-data"),
                status: 409,
                problem: None,
                detail: "the VM is not running".into(),
            });
        }
        if let Some(status) = &vm.user_data {
            return Ok(status.clone());
        }
        let done = UserDataStatus {
            state: UserDataState::Succeeded,
            exit_code: Some(0),
            duration_ms: Some(1),
            reason: None,
        };
        vm.user_data = Some(done.clone());
        s.stats.user_data_runs += 1;
        Ok(done)
    }

    /// A simulated node has no console: refused, said so.
    async fn console_tail(&self, id: &str, _: usize) -> Result<String, ClientError> {
        self.lock().vms.get(id).ok_or_else(|| not_found(id))?;
        Err(ClientError::Refused {
            url: format!("sim:/v1/vms/{id}/console"),
            status: 501,
            problem: None,
            detail: "a simulated node has no console".into(),
        })
    }

    /// A simulated node's metrics: its VMs.
    async fn metrics(&self) -> Result<String, ClientError> {
        let n = self.lock().vms.len();
        Ok(format!(
            "# TYPE modvisor_node_vms gauge\nmodvisor_node_vms{{phase=\"simulated\"}} {n}\n"
        ))
    }

    /// A simulated node has no guest to run anything in: refused, said so.
    async fn exec(&self, id: &str, _: &ExecRequest) -> Result<ExecResult, ClientError> {
        self.lock().vms.get(id).ok_or_else(|| not_found(id))?;
        Err(ClientError::Refused {
            url: format!("sim:/v1/vms/{id}/exec"),
            status: 501,
            problem: None,
            detail: "a simulated node runs no commands".into(),
        })
    }
}
