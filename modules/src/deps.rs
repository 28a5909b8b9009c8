//! Dependency resolution: from `depends=` across a catalog to a load order, and vetting of
//! a module together with everything it needs.

use std::collections::{BTreeMap, HashMap};

use crate::module::{normalize_name, KernelModule};
use crate::policy::{vet, VettedModule, VettingPolicy};
use crate::rejection::Rejection;
use crate::trust::TrustStore;

/// One catalog entry: a parsed module and the SHA-256 the catalog pins for it.
#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry<'a> {
    /// The parsed module.
    pub module: &'a KernelModule,
    /// The pinned SHA-256 (hex), if the catalog has one.
    pub sha256_pin: Option<&'a str>,
    /// Who may sign this module, when the catalog says so (an operator's module accepts
    /// its operator's certificate); `None`: the trust store the caller vets with.
    pub trust: Option<&'a TrustStore>,
    /// Licenses accepted for this module beyond the policy's (its own policy's
    /// allowance, e.g. `Proprietary`).
    pub licenses: &'a [String],
}

/// Where dependencies are looked up. Implemented by the caller over its own storage.
pub trait ModuleCatalog {
    /// The module called `name` (already normalized: `_`, never `-`), if the catalog has
    /// it.
    fn lookup(&self, name: &str) -> Option<CatalogEntry<'_>>;
}

/// A catalog held in memory, keyed by normalized module name.
#[derive(Debug, Clone, Default)]
pub struct MemoryCatalog {
    entries: BTreeMap<String, (KernelModule, Option<String>)>,
}

impl MemoryCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a module under its normalized name, with an optional pin.
    pub fn insert(&mut self, module: KernelModule, sha256_pin: Option<String>) {
        self.entries
            .insert(normalize_name(module.name()), (module, sha256_pin));
    }

    /// Number of modules.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The modules, by name.
    pub fn modules(&self) -> impl Iterator<Item = &KernelModule> {
        self.entries.values().map(|(m, _)| m)
    }
}

impl ModuleCatalog for MemoryCatalog {
    fn lookup(&self, name: &str) -> Option<CatalogEntry<'_>> {
        self.entries.get(name).map(|(module, pin)| CatalogEntry {
            trust: None,
            licenses: &[],
            module,
            sha256_pin: pin.as_deref(),
        })
    }
}

/// Looks `name` up and checks the entry really is that module.
fn find<'c>(
    catalog: &'c dyn ModuleCatalog,
    name: &str,
) -> Result<Option<CatalogEntry<'c>>, Rejection> {
    let Some(entry) = catalog.lookup(name) else {
        return Ok(None);
    };
    let actual = normalize_name(entry.module.name());
    if actual != name {
        return Err(Rejection::Malformed {
            module: name.to_string(),
            reason: format!("the catalog entry for {name} holds module {actual}"),
        });
    }
    Ok(Some(entry))
}

enum Mark {
    Visiting,
    Done,
}

/// The order to load `root` and everything it depends on: dependencies first, each once,
/// `root` last. Deterministic: dependencies are visited in sorted order. A dependency the
/// catalog lacks is [`Rejection::MissingDependency`] naming the module that needs it; a
/// cycle is [`Rejection::DependencyCycle`].
pub fn load_order(root: &str, catalog: &dyn ModuleCatalog) -> Result<Vec<String>, Rejection> {
    let root = normalize_name(root);
    let root_entry = find(catalog, &root)?.ok_or_else(|| Rejection::NotInCatalog {
        module: root.clone(),
    })?;
    let mut marks: HashMap<String, Mark> = HashMap::new();
    let mut order = Vec::new();
    // Iterative depth-first search: (name, its dependencies, next to visit).
    let mut stack: Vec<(String, Vec<String>, usize)> = Vec::new();
    marks.insert(root.clone(), Mark::Visiting);
    stack.push((root.clone(), root_entry.module.dependencies(), 0));
    while let Some((name, deps, next)) = stack.last_mut() {
        let Some(dep) = deps.get(*next).cloned() else {
            marks.insert(name.clone(), Mark::Done);
            order.push(name.clone());
            stack.pop();
            continue;
        };
        *next += 1;
        let needed_by = name.clone();
        match marks.get(&dep) {
            Some(Mark::Done) => continue,
            Some(Mark::Visiting) => {
                let from = stack.iter().position(|(n, _, _)| *n == dep).unwrap_or(0);
                let mut cycle: Vec<String> =
                    stack[from..].iter().map(|(n, _, _)| n.clone()).collect();
                cycle.push(dep);
                return Err(Rejection::DependencyCycle {
                    module: root,
                    cycle,
                });
            }
            None => {}
        }
        let entry = find(catalog, &dep)?.ok_or_else(|| Rejection::MissingDependency {
            module: needed_by,
            dependency: dep.clone(),
        })?;
        marks.insert(dep.clone(), Mark::Visiting);
        stack.push((dep, entry.module.dependencies(), 0));
    }
    Ok(order)
}

/// Vets `root` and its whole dependency closure with the same policy and trust store,
/// returning the modules in load order, or the first rejection. A dependency's rejection
/// is wrapped in [`Rejection::DependencyRejected`] naming `root`.
///
/// Every dependency must itself pass the policy, including being approved for the
/// tenant.
pub fn vet_closure(
    root: &str,
    catalog: &dyn ModuleCatalog,
    policy: &VettingPolicy,
    trust: &TrustStore,
) -> Result<Vec<VettedModule>, Rejection> {
    let root = normalize_name(root);
    let order = load_order(&root, catalog)?;
    let mut vetted = Vec::with_capacity(order.len());
    for name in &order {
        let entry = find(catalog, name)?.ok_or_else(|| Rejection::NotInCatalog {
            module: name.clone(),
        })?;
        let widened;
        let policy = if entry.licenses.is_empty() {
            policy
        } else {
            widened = policy.with_licenses(entry.licenses);
            &widened
        };
        match vet(
            entry.module,
            entry.sha256_pin,
            policy,
            entry.trust.unwrap_or(trust),
        ) {
            Ok(v) => vetted.push(v),
            Err(reason) if *name == root => return Err(reason),
            Err(reason) => {
                return Err(Rejection::DependencyRejected {
                    module: root,
                    dependency: name.clone(),
                    reason: Box::new(reason),
                })
            }
        }
    }
    Ok(vetted)
}
