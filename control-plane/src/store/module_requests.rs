//! Tenants' module requests in the store: asking, withdrawing, the states the reconciler
//! records, and delivery again after a VM moves.

use super::keys::{decode, encode};
use super::txn::{append_denial, append_event, get_record, refuse_if_deleting, visible_vm};
use super::{transact, Datastore, Table, Txn, VmFilter};
use crate::error::{Error, Result};
use crate::model::{now, ModulePolicy, ModuleRef, ModuleRequest, RequestState, Vm};

/// Most module requests one VM keeps (ended ones are replaced in place).
pub const MAX_REQUESTS_PER_VM: usize = 256;

/// The module requests stored for a VM.
pub(super) fn requests_of(txn: &dyn Txn, vm_id: &str) -> Result<Vec<ModuleRequest>> {
    Ok(get_record(txn, Table::ModuleRequests, vm_id.as_bytes())?.unwrap_or_default())
}

/// Opens a `Pending` request for each of `modules` on `vm`, after checking that each is
/// published and approved for the VM's tenant and not already wanted. Returns the VM's
/// full request list; writes nothing.
pub(super) fn open_requests(
    txn: &dyn Txn,
    vm: &Vm,
    modules: &[ModuleRef],
    existing: &[ModuleRequest],
) -> Result<Vec<ModuleRequest>> {
    let mut all = existing.to_vec();
    for m in modules {
        let policy: ModulePolicy = get_record(txn, Table::Policies, m.name.as_bytes())?
            .ok_or_else(|| Error::not_found("module", &m.name))?;
        if !policy.allows(&vm.tenant) {
            return Err(Error::ModuleNotApproved {
                module: m.name.clone(),
                tenant: vm.tenant.clone(),
            });
        }
        if let Some(prev) = all.iter().find(|r| r.name == m.name) {
            if !prev.state.is_terminal() && prev.want_loaded {
                return Err(Error::Conflict(format!(
                    "module {} is already requested for VM {} (state {:?})",
                    m.name, vm.id, prev.state
                )));
            }
        }
        all = upsert(all, new_request(&vm.id, m))?;
    }
    Ok(all)
}

/// Marks a request as no longer wanted; one that never reached the guest ends now.
pub(super) fn withdraw(r: &mut ModuleRequest) {
    r.want_loaded = false;
    if matches!(r.state, RequestState::Pending | RequestState::Vetting) {
        r.state = RequestState::Unloaded;
        r.reason = Some("withdrawn before it was loaded".into());
    }
    r.updated_at = now();
}

fn new_request(vm_id: &str, m: &ModuleRef) -> ModuleRequest {
    let time = now();
    ModuleRequest {
        vm_id: vm_id.to_string(),
        name: m.name.clone(),
        params: m.params.clone(),
        state: RequestState::Pending,
        reason: None,
        want_loaded: true,
        requested_at: time.clone(),
        updated_at: time,
    }
}

/// `all` with `r` replacing the request of the same module, or appended.
fn upsert(mut all: Vec<ModuleRequest>, r: ModuleRequest) -> Result<Vec<ModuleRequest>> {
    match all.iter().position(|x| x.name == r.name) {
        Some(i) => all[i] = r,
        None if all.len() >= MAX_REQUESTS_PER_VM => {
            return Err(Error::Conflict(format!(
                "VM {} already has {MAX_REQUESTS_PER_VM} module requests",
                r.vm_id
            )))
        }
        None => all.push(r),
    }
    Ok(all)
}

fn find(all: &[ModuleRequest], name: &str) -> Result<ModuleRequest> {
    all.iter()
        .find(|r| r.name == name)
        .cloned()
        .ok_or_else(|| Error::Storage(format!("request for {name} vanished")))
}

/// Module requests of a VM that must be delivered again (after a move to a new node, or a
/// new boot of its guest), with `reason`.
pub(super) fn reset_requests(txn: &dyn Txn, vm_id: &str, reason: &str) -> Result<()> {
    let mut reqs: Vec<ModuleRequest> =
        get_record(txn, Table::ModuleRequests, vm_id.as_bytes())?.unwrap_or_default();
    for r in reqs.iter_mut().filter(|r| r.want_loaded) {
        if matches!(
            r.state,
            RequestState::Loaded | RequestState::Loading | RequestState::Vetting
        ) {
            r.state = RequestState::Pending;
            r.reason = Some(reason.to_string());
            r.updated_at = now();
        }
    }
    txn.insert(Table::ModuleRequests, vm_id.as_bytes(), &encode(&reqs)?)
}

impl Datastore {
    /// Records a request to load a module into a VM. A module not approved for the VM's
    /// tenant is stored as `Rejected` (and audited) and answered with `ModuleNotApproved`.
    pub fn request_module(
        &self,
        actor: &str,
        filter: VmFilter,
        vm_id: &str,
        module: &ModuleRef,
    ) -> Result<ModuleRequest> {
        let (request, refusal) = transact(&*self.kv, |txn| {
            let vm = visible_vm(txn, filter, vm_id)?;
            refuse_if_deleting(&vm)?;
            let existing = requests_of(txn, vm_id)?;
            let resource = format!("vms/{vm_id}/modules/{}", module.name);
            match open_requests(txn, &vm, std::slice::from_ref(module), &existing) {
                Ok(all) => {
                    txn.insert(Table::ModuleRequests, vm_id.as_bytes(), &encode(&all)?)?;
                    append_event(txn, actor, Some(&vm.tenant), "module.request", &resource)?;
                    let r = find(&all, &module.name)?;
                    Ok((r, None))
                }
                Err(refusal @ Error::ModuleNotApproved { .. }) => {
                    let reason = refusal.to_string();
                    let rejected = ModuleRequest {
                        state: RequestState::Rejected,
                        reason: Some(reason.clone()),
                        want_loaded: false,
                        ..new_request(vm_id, module)
                    };
                    let all = upsert(existing, rejected.clone())?;
                    txn.insert(Table::ModuleRequests, vm_id.as_bytes(), &encode(&all)?)?;
                    append_denial(
                        txn,
                        actor,
                        Some(&vm.tenant),
                        "module.request",
                        &resource,
                        &reason,
                    )?;
                    Ok((rejected, Some(refusal)))
                }
                Err(e) => Err(e),
            }
        })?;
        match refusal {
            Some(e) => Err(e),
            None => Ok(request),
        }
    }

    /// Every VM's module requests, by VM id (one scan: what a reconciler pass reads
    /// instead of each VM's on its own).
    pub fn all_module_requests(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<ModuleRequest>>> {
        self.kv
            .scan(Table::ModuleRequests, b"", None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&k).into_owned(), decode(&v)?)))
            .collect()
    }

    /// The module requests of VMs `ids`, by VM id (those that have any).
    pub fn module_requests_of(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<ModuleRequest>>> {
        self.records_by_key(Table::ModuleRequests, ids)
    }

    /// The module requests of a VM.
    pub fn module_requests(&self, filter: VmFilter, vm_id: &str) -> Result<Vec<ModuleRequest>> {
        self.get_vm(filter, vm_id)?;
        Ok(self
            .kv
            .get(Table::ModuleRequests, vm_id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default())
    }

    /// Asks for a module to be unloaded from a VM. One never loaded ends as `Unloaded` now;
    /// one loaded (or loading) is unloaded by the VM's node.
    pub fn unload_module(
        &self,
        actor: &str,
        filter: VmFilter,
        vm_id: &str,
        name: &str,
    ) -> Result<ModuleRequest> {
        transact(&*self.kv, |txn| {
            let vm = visible_vm(txn, filter, vm_id)?;
            refuse_if_deleting(&vm)?;
            let mut all = requests_of(txn, vm_id)?;
            let r = all
                .iter_mut()
                .find(|r| r.name == name)
                .ok_or_else(|| Error::not_found("module request", format!("{vm_id}/{name}")))?;
            withdraw(r);
            let out = r.clone();
            txn.insert(Table::ModuleRequests, vm_id.as_bytes(), &encode(&all)?)?;
            let resource = format!("vms/{vm_id}/modules/{name}");
            append_event(txn, actor, Some(&vm.tenant), "module.unload", &resource)?;
            Ok(out)
        })
    }

    /// Marks a module request as wanted again (after its node refused to unload it).
    pub fn keep_loaded(&self, vm_id: &str, name: &str) -> Result<()> {
        transact(&*self.kv, |txn| {
            let mut all = requests_of(txn, vm_id)?;
            if let Some(r) = all.iter_mut().find(|r| r.name == name) {
                r.want_loaded = true;
            }
            txn.insert(Table::ModuleRequests, vm_id.as_bytes(), &encode(&all)?)
        })
    }

    /// Records a module request's new state (from the reconciler).
    pub fn set_request_state(
        &self,
        vm_id: &str,
        name: &str,
        state: RequestState,
        reason: Option<String>,
    ) -> Result<()> {
        transact(&*self.kv, |txn| {
            let mut reqs: Vec<ModuleRequest> =
                get_record(txn, Table::ModuleRequests, vm_id.as_bytes())?.unwrap_or_default();
            let Some(r) = reqs.iter_mut().find(|r| r.name == name) else {
                return Ok(());
            };
            let newly_rejected = state == RequestState::Rejected && r.state != state;
            r.state = state;
            r.reason = reason.clone();
            r.updated_at = now();
            txn.insert(Table::ModuleRequests, vm_id.as_bytes(), &encode(&reqs)?)?;
            if newly_rejected {
                // A refusal by the node's vetting is audited like one at request time.
                let vm = visible_vm(txn, VmFilter::All, vm_id)?;
                append_denial(
                    txn,
                    "system:reconciler",
                    Some(&vm.tenant),
                    "module.load",
                    &format!("vms/{vm_id}/modules/{name}"),
                    reason
                        .as_deref()
                        .unwrap_or("rejected by the node's vetting"),
                )?;
            }
            Ok(())
        })
    }
}
