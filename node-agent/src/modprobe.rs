//! The vetted modprobe service: a module request becomes a module loaded in one guest's
//! kernel only after the module and its whole dependency closure pass vetting.
//!
//! Order of work for `modprobe(name)`: resolve the dependency closure through the node's
//! [`ModuleSource`], vet every module in it with the tenant's policy against the guest
//! kernel's trusted keys, and only then send each image, dependencies first, over the
//! guest channel. A rejection sends nothing.

use crate::channel::{AgentClient, ChannelError};
use modvisor_modules::{
    normalize_name, vet_closure, CatalogEntry, KernelModule, ModuleCatalog, ParseError, Rejection,
    TrustStore, VettingPolicy,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one module may take to reach and enter the guest kernel.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Module images a node can deliver, each with the catalog's sha256 pin.
#[derive(Debug, Default)]
pub struct ModuleSource {
    modules: BTreeMap<String, Held>,
    parses: usize,
}

/// One module a source holds.
#[derive(Debug)]
struct Held {
    module: KernelModule,
    image: Vec<u8>,
    pin: Option<String>,
    /// Who may sign it, when not the guest kernel's keys alone.
    trust: Option<TrustStore>,
    /// Licenses its policy accepts beyond the GPL-compatible ones.
    licenses: Vec<String>,
}

impl ModuleSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a module image with the sha256 the catalog pins for it. Returns its name.
    /// The image is parsed here; vetting happens per request.
    pub fn insert(&mut self, image: Vec<u8>, pin: Option<String>) -> Result<String, ParseError> {
        self.insert_signed_by(image, pin, None)
    }

    /// As [`Self::insert`], for a module that `trust` (instead of the keys the service
    /// vets with, normally the guest kernel's) says who may sign.
    pub fn insert_signed_by(
        &mut self,
        image: Vec<u8>,
        pin: Option<String>,
        trust: Option<TrustStore>,
    ) -> Result<String, ParseError> {
        self.parses += 1;
        let module = KernelModule::parse(&image)?;
        let name = normalize_name(module.name());
        self.modules.insert(
            name.clone(),
            Held {
                module,
                image,
                pin,
                trust,
                licenses: Vec::new(),
            },
        );
        Ok(name)
    }

    /// Accepts `licenses` for module `name` (already inserted) beyond the GPL-compatible
    /// ones, as its policy says. Returns whether the module is held.
    pub fn allow_licenses(&mut self, name: &str, licenses: &[String]) -> bool {
        match self.modules.get_mut(&normalize_name(name)) {
            Some(h) => {
                h.licenses = licenses.to_vec();
                true
            }
            None => false,
        }
    }

    /// The image of a module, by name.
    pub fn image(&self, name: &str) -> Option<&[u8]> {
        self.modules
            .get(&normalize_name(name))
            .map(|h| h.image.as_slice())
    }

    /// How many images this source parsed (each insert parses its image, and nothing
    /// else parses them again: vetting works on the parsed modules).
    pub fn parses(&self) -> usize {
        self.parses
    }

    /// Number of modules held.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether no module is held.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

impl ModuleCatalog for ModuleSource {
    fn lookup(&self, name: &str) -> Option<CatalogEntry<'_>> {
        self.modules.get(name).map(|h| CatalogEntry {
            module: &h.module,
            sha256_pin: h.pin.as_deref(),
            trust: h.trust.as_ref(),
            licenses: &h.licenses,
        })
    }
}

/// What happened to one module of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ModuleOutcome {
    /// Loaded into the guest kernel by this request.
    Loaded {
        /// Module name.
        name: String,
        /// Microseconds the guest kernel spent loading it.
        kernel_us: u64,
        /// Microseconds from sending it to the guest's answer.
        delivery_us: u64,
    },
    /// Already in the guest kernel; not sent again.
    AlreadyLoaded {
        /// Module name.
        name: String,
    },
    /// Refused by vetting; nothing was sent to the guest.
    Rejected {
        /// Module name.
        name: String,
        /// Why.
        reason: Rejection,
    },
    /// Vetted and sent, but the guest kernel (or the channel) failed it.
    Failed {
        /// Module name.
        name: String,
        /// The guest kernel's errno, 0 for channel failures.
        errno: i32,
        /// Why.
        reason: String,
    },
}

impl ModuleOutcome {
    /// Whether the module is in the guest kernel after this outcome.
    pub fn is_loaded(&self) -> bool {
        matches!(
            self,
            ModuleOutcome::Loaded { .. } | ModuleOutcome::AlreadyLoaded { .. }
        )
    }

    /// The module the outcome is about.
    pub fn name(&self) -> &str {
        match self {
            ModuleOutcome::Loaded { name, .. }
            | ModuleOutcome::AlreadyLoaded { name }
            | ModuleOutcome::Rejected { name, .. }
            | ModuleOutcome::Failed { name, .. } => name,
        }
    }
}

/// The modprobe service of one node.
pub struct ModprobeService<'a> {
    source: &'a ModuleSource,
    trust: &'a TrustStore,
}

impl<'a> ModprobeService<'a> {
    /// A service delivering from `source`, trusting the keys in `trust` (normally those
    /// embedded in the guest kernel image).
    pub fn new(source: &'a ModuleSource, trust: &'a TrustStore) -> Self {
        ModprobeService { source, trust }
    }

    /// Vets `name` and its dependencies under `policy`; `Ok` holds the load order.
    pub fn vet(&self, name: &str, policy: &VettingPolicy) -> Result<Vec<String>, Rejection> {
        vet_closure(name, self.source, policy, self.trust)
            .map(|v| v.into_iter().map(|m| m.name).collect())
    }

    /// Loads `name` (with `params`) and its dependencies into the guest behind `client`,
    /// each module within [`LOAD_TIMEOUT`]. Returns one outcome per module in load order;
    /// the first failure ends the request.
    pub fn modprobe(
        &self,
        client: &AgentClient,
        name: &str,
        params: &str,
        policy: &VettingPolicy,
    ) -> Vec<ModuleOutcome> {
        self.modprobe_until(client, name, params, policy, None)
    }

    /// As [`Self::modprobe`], and all of it by `deadline` (a request's budget): a module
    /// whose turn comes after it fails without being sent.
    pub fn modprobe_until(
        &self,
        client: &AgentClient,
        name: &str,
        params: &str,
        policy: &VettingPolicy,
        deadline: Option<Instant>,
    ) -> Vec<ModuleOutcome> {
        let root = normalize_name(name);
        let order = match self.vet(&root, policy) {
            Ok(order) => order,
            Err(reason) => {
                tracing::info!(module = %root, %reason, "module rejected by vetting");
                return vec![ModuleOutcome::Rejected { name: root, reason }];
            }
        };
        // What is loaded already is asked only when there are dependencies (whose images
        // need not cross the channel again); a module alone is sent, and the kernel's
        // EEXIST says it was there (one round trip fewer on the path of every request).
        let loaded: Vec<String> = if order.len() > 1 {
            match client.list(Duration::from_secs(30)) {
                Ok(l) => l.into_iter().map(|m| normalize_name(&m.name)).collect(),
                Err(e) => return vec![channel_failure(&root, &e)],
            }
        } else {
            Vec::new()
        };
        let mut outcomes = Vec::with_capacity(order.len());
        for m in order {
            if loaded.contains(&m) {
                outcomes.push(ModuleOutcome::AlreadyLoaded { name: m });
                continue;
            }
            let Some(image) = self.source.image(&m) else {
                outcomes.push(ModuleOutcome::Failed {
                    name: m,
                    errno: 0,
                    reason: "image vanished from the module source".into(),
                });
                break;
            };
            let args = if m == root { params } else { "" };
            let start = Instant::now();
            let timeout = match deadline {
                Some(d) => d.saturating_duration_since(start).min(LOAD_TIMEOUT),
                None => LOAD_TIMEOUT,
            };
            if timeout.is_zero() {
                outcomes.push(ModuleOutcome::Failed {
                    name: m,
                    errno: 0,
                    reason: "the request's budget ran out before this module's turn".into(),
                });
                break;
            }
            match client.load(&m, args, image, timeout) {
                Ok(kernel_us) => outcomes.push(ModuleOutcome::Loaded {
                    delivery_us: start.elapsed().as_micros() as u64,
                    name: m,
                    kernel_us,
                }),
                Err(ChannelError::Agent { errno, .. }) if errno == libc::EEXIST => {
                    outcomes.push(ModuleOutcome::AlreadyLoaded { name: m })
                }
                Err(e) => {
                    outcomes.push(channel_failure(&m, &e));
                    break;
                }
            }
        }
        outcomes
    }
}

fn channel_failure(name: &str, e: &ChannelError) -> ModuleOutcome {
    let errno = match e {
        ChannelError::Agent { errno, .. } => *errno,
        _ => 0,
    };
    ModuleOutcome::Failed {
        name: name.to_string(),
        errno,
        reason: e.to_string(),
    }
}
