//! Typed operations on the module catalog (content-addressed blobs, versions, policies)
//! and on tenants' module requests.

use super::datastore::{append_denial, append_event, get_record, visible_vm};
use super::keys::{decode, encode, pair, prefix};
use super::{transact, Datastore, Table, Txn, VmFilter};
use crate::error::{Error, Result};
use crate::model::{
    now, CatalogModule, ModulePolicy, ModuleRef, ModuleRequest, ModuleVersion, RequestState, Vm,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Most module requests one VM keeps (ended ones are replaced in place).
pub const MAX_REQUESTS_PER_VM: usize = 256;

/// The policy a newly published module gets: published, not approved.
fn unapproved() -> ModulePolicy {
    ModulePolicy {
        approved: false,
        tenants: Vec::new(),
    }
}

impl Datastore {
    /// Publishes `bytes` as module `name` for `kernel_release`, stored by sha256. A module
    /// published for the first time is not approved for anyone.
    pub fn publish_module(
        &self,
        actor: &str,
        name: &str,
        kernel_release: &str,
        bytes: &[u8],
        modinfo: BTreeMap<String, String>,
    ) -> Result<ModuleVersion> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let version = ModuleVersion {
            name: name.to_string(),
            kernel_release: kernel_release.to_string(),
            sha256: sha256.clone(),
            size: bytes.len() as u64,
            modinfo,
            published_at: now(),
        };
        transact(&*self.kv, |txn| {
            if txn.get(Table::Blobs, sha256.as_bytes())?.is_none() {
                txn.insert(Table::Blobs, sha256.as_bytes(), bytes)?;
            }
            let key = pair(name, kernel_release.as_bytes());
            txn.insert(Table::Modules, &key, &encode(&version)?)?;
            if txn.get(Table::Policies, name.as_bytes())?.is_none() {
                txn.insert(Table::Policies, name.as_bytes(), &encode(&unapproved())?)?;
            }
            let resource = format!("modules/{name}/{kernel_release}");
            append_event(txn, actor, None, "module.publish", &resource)?;
            Ok(version.clone())
        })
    }

    /// Sets the policy of a published module.
    pub fn set_policy(
        &self,
        actor: &str,
        name: &str,
        policy: &ModulePolicy,
    ) -> Result<ModulePolicy> {
        transact(&*self.kv, |txn| {
            if txn.get(Table::Policies, name.as_bytes())?.is_none() {
                return Err(Error::not_found("module", name));
            }
            txn.insert(Table::Policies, name.as_bytes(), &encode(policy)?)?;
            append_event(
                txn,
                actor,
                None,
                "module.set_policy",
                &format!("modules/{name}"),
            )?;
            Ok(policy.clone())
        })
    }

    /// The catalog as `tenant` sees it (only what it may request), or whole with policies
    /// for admins (`None`).
    pub fn module_catalog(&self, tenant: Option<&str>) -> Result<Vec<CatalogModule>> {
        let mut out = Vec::new();
        for (k, v) in self.kv.scan(Table::Policies, b"", None, usize::MAX)? {
            let name = String::from_utf8_lossy(&k).into_owned();
            let policy: ModulePolicy = decode(&v)?;
            if let Some(t) = tenant {
                if !policy.allows(t) {
                    continue;
                }
            }
            let versions = self
                .kv
                .scan(Table::Modules, &prefix(&name), None, usize::MAX)?
                .iter()
                .map(|(_, v)| decode(v))
                .collect::<Result<Vec<ModuleVersion>>>()?;
            out.push(CatalogModule {
                name,
                versions,
                policy: tenant.is_none().then_some(policy),
            });
        }
        Ok(out)
    }

    /// The bytes stored under `sha256`.
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        self.kv.get(Table::Blobs, sha256.as_bytes())
    }

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
}

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

impl Datastore {
    /// The modules `tenant` may have loaded (approved for it), by name.
    pub fn approved_modules(&self, tenant: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (k, v) in self.kv.scan(Table::Policies, b"", None, usize::MAX)? {
            let policy: ModulePolicy = decode(&v)?;
            if policy.allows(tenant) {
                out.push(String::from_utf8_lossy(&k).into_owned());
            }
        }
        Ok(out)
    }

    /// Name -> sha256 of every module published for `kernel_release`.
    pub fn published_for(&self, kernel_release: &str) -> Result<BTreeMap<String, String>> {
        let mut modules = BTreeMap::new();
        for (_, v) in self.kv.scan(Table::Modules, b"", None, usize::MAX)? {
            let m: ModuleVersion = decode(&v)?;
            if m.kernel_release == kernel_release {
                modules.insert(m.name, m.sha256);
            }
        }
        Ok(modules)
    }

    /// The dependency closure of module `root` for `kernel_release`, each pinned: `root`
    /// first, then what it depends on (by the `depends` of each version's `.modinfo`), as
    /// far as the catalog has them; a dependency it lacks is left for vetting to report.
    pub fn module_closure(
        &self,
        root: &str,
        kernel_release: &str,
    ) -> Result<Vec<crate::model::PinnedModule>> {
        use modvisor_modules::normalize_name;
        let mut versions: BTreeMap<String, ModuleVersion> = BTreeMap::new();
        for (_, v) in self.kv.scan(Table::Modules, b"", None, usize::MAX)? {
            let m: ModuleVersion = decode(&v)?;
            if m.kernel_release == kernel_release {
                versions.insert(normalize_name(&m.name), m);
            }
        }
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = std::collections::VecDeque::from([normalize_name(root)]);
        while let Some(name) = todo.pop_front() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(m) = versions.get(&name) else {
                continue;
            };
            if let Some(deps) = m.modinfo.get("depends") {
                todo.extend(
                    deps.split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .map(normalize_name),
                );
            }
            out.push(crate::model::PinnedModule {
                name: m.name.clone(),
                sha256: m.sha256.clone(),
            });
        }
        Ok(out)
    }

    /// Whether any module version is published for `kernel_release`.
    pub fn has_modules_for(&self, kernel_release: &str) -> Result<bool> {
        for (_, v) in self.kv.scan(Table::Modules, b"", None, usize::MAX)? {
            let m: ModuleVersion = decode(&v)?;
            if m.kernel_release == kernel_release {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Datastore {
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
}
