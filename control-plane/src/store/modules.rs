//! The module catalog in the store: content-addressed blobs, versions per kernel release,
//! policies, and the pinned dependency closure a load needs.

use super::keys::{decode, encode, pair, prefix};
use super::txn::{append_event, get_record, write_event};
use super::{transact, Datastore, Table, Txn};
use crate::error::{Error, Result};
use crate::model::{now, CatalogModule, ModulePolicy, ModuleVersion, Outcome};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The policy a newly published module gets: published, not approved.
fn unapproved() -> ModulePolicy {
    ModulePolicy {
        approved: false,
        tenants: Vec::new(),
        signers: vec![crate::model::KERNEL_SIGNER.into()],
        licenses: Vec::new(),
    }
}

/// Writes a published module's policy and audits it, inside a transaction.
fn write_policy(
    txn: &dyn Txn,
    actor: &str,
    name: &str,
    policy: &ModulePolicy,
) -> Result<ModulePolicy> {
    let Some(old) = get_record::<ModulePolicy>(txn, Table::Policies, name.as_bytes())? else {
        return Err(Error::not_found("module", name));
    };
    // A policy for a tenant that does not exist approves nothing anyone asked for; it is
    // refused rather than kept for a tenant created later.
    for (i, t) in policy.tenants.iter().enumerate() {
        if t != "*" && txn.get(Table::Tenants, t.as_bytes())?.is_none() {
            return Err(Error::invalid(
                format!("tenants[{i}]"),
                format!("no tenant {t}"),
            ));
        }
    }
    super::trust::note_signers(txn, name, &old, policy)?;
    txn.insert(Table::Policies, name.as_bytes(), &encode(policy)?)?;
    append_event(
        txn,
        actor,
        None,
        "module.set_policy",
        &format!("modules/{name}"),
    )?;
    Ok(policy.clone())
}

impl Datastore {
    /// Publishes `bytes` as module `name` for `kernel_release`, stored by sha256. A module
    /// published for the first time is not approved for anyone. `forced` says why the
    /// publish went ahead against a check (it is then audited as `module.publish_forced`
    /// with that detail).
    pub fn publish_module(
        &self,
        actor: &str,
        name: &str,
        kernel_release: &str,
        bytes: &[u8],
        modinfo: BTreeMap<String, String>,
        forced: Option<&str>,
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
        let stored = self.has_blob(&sha256)?;
        let in_txn = !stored && super::blobs::fits_one_chunk(bytes);
        if !stored && !in_txn {
            self.write_chunks(&sha256, bytes)?;
        }
        transact(&*self.kv, |txn| {
            if in_txn {
                super::blobs::write_single_chunk(txn, &sha256, bytes)?;
            }
            let key = pair(name, kernel_release.as_bytes());
            txn.insert(Table::Modules, &key, &encode(&version)?)?;
            if txn.get(Table::Policies, name.as_bytes())?.is_none() {
                txn.insert(Table::Policies, name.as_bytes(), &encode(&unapproved())?)?;
            }
            let resource = format!("modules/{name}/{kernel_release}");
            match forced {
                None => append_event(txn, actor, None, "module.publish", &resource)?,
                Some(why) => write_event(
                    txn,
                    actor,
                    None,
                    "module.publish_forced",
                    &resource,
                    Outcome::Success,
                    Some(why),
                )?,
            }
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
        transact(&*self.kv, |txn| write_policy(txn, actor, name, policy))
    }

    /// The policy of module `name`.
    pub fn policy(&self, name: &str) -> Result<ModulePolicy> {
        self.kv
            .get(Table::Policies, name.as_bytes())?
            .map(|v| decode(&v))
            .transpose()?
            .ok_or_else(|| Error::not_found("module", name))
    }

    /// Whether `tenant` may run VMs in `operator-modules` kernel mode: some module
    /// approved for it may be signed by an operator certificate.
    pub fn operator_modules_allowed(&self, tenant: &str) -> Result<bool> {
        for (_, v) in self.kv.scan(Table::Policies, b"", None, usize::MAX)? {
            let policy: ModulePolicy = decode(&v)?;
            if policy.allows(tenant) && policy.operator_signed() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The parameters module `name` declares (each `parmtype` of its `.modinfo`, in any
    /// published version); `None` when it was never published.
    pub fn declared_params(
        &self,
        name: &str,
    ) -> Result<Option<std::collections::BTreeSet<String>>> {
        let versions = self
            .kv
            .scan(Table::Modules, &prefix(name), None, usize::MAX)?;
        if versions.is_empty() {
            return Ok(None);
        }
        let mut declared = std::collections::BTreeSet::new();
        for (_, v) in versions {
            let m: ModuleVersion = decode(&v)?;
            // `parmtype` entries are `name:type`, joined with commas (types have none).
            if let Some(types) = m.modinfo.get("parmtype") {
                declared.extend(
                    types
                        .split(',')
                        .filter_map(|t| t.split_once(':').map(|(n, _)| n.trim().to_string())),
                );
            }
        }
        Ok(Some(declared))
    }

    /// Sets `policy` for `name` as a default, once per store: a later start never seeds
    /// it again, so an admin's revocation or restriction stands. Returns whether it was
    /// set now.
    pub fn seed_policy(&self, name: &str, policy: &ModulePolicy) -> Result<bool> {
        let marker = format!("seeded-policy/{name}");
        transact(&*self.kv, |txn| {
            if txn.get(Table::Meta, marker.as_bytes())?.is_some() {
                return Ok(false);
            }
            write_policy(txn, "system:seed", name, policy)?;
            txn.insert(Table::Meta, marker.as_bytes(), b"")?;
            Ok(true)
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

    /// Which of `names` are approved for `tenant` (one lookup each).
    pub fn approved_among(&self, tenant: &str, names: &[&str]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for name in names {
            if let Some(v) = self.kv.get(Table::Policies, name.as_bytes())? {
                if decode::<ModulePolicy>(&v)?.allows(tenant) {
                    out.push(name.to_string());
                }
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
        // Modules are published under their normalized names: one lookup per module of
        // the closure, not a pass over the catalog (a kernel's is a thousand modules).
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = std::collections::VecDeque::from([normalize_name(root)]);
        while let Some(name) = todo.pop_front() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let key = pair(&name, kernel_release.as_bytes());
            let Some(m) = self
                .kv
                .get(Table::Modules, &key)?
                .map(|v| decode::<ModuleVersion>(&v))
                .transpose()?
            else {
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
            let policy = match self.kv.get(Table::Policies, name.as_bytes())? {
                Some(p) => decode::<ModulePolicy>(&p)?,
                None => unapproved(),
            };
            out.push(crate::model::PinnedModule {
                name: m.name.clone(),
                sha256: m.sha256.clone(),
                signers: policy.signers,
                licenses: policy.licenses,
            });
        }
        Ok(out)
    }

    /// The operator certificates the `closure`'s signers name (each once, by name).
    pub fn signer_certificates(
        &self,
        closure: &[crate::model::PinnedModule],
    ) -> Result<Vec<crate::model::SignerCertificate>> {
        let names: std::collections::BTreeSet<&str> = closure
            .iter()
            .flat_map(|m| m.signers.iter().map(String::as_str))
            .filter(|s| *s != crate::model::KERNEL_SIGNER)
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // A policy cannot name a certificate the store lacks (its removal is refused
            // while one does); if one is gone all the same, vetting refuses the module.
            match self.get_trusted(name) {
                Ok(t) => out.push(crate::model::SignerCertificate {
                    name: t.name,
                    certificate_pem: t.certificate_pem,
                }),
                Err(Error::NotFound { .. }) => {
                    tracing::warn!(signer = %name, "a policy names a certificate the trust store lacks")
                }
                Err(e) => return Err(e),
            }
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
