//! The resources of the control plane's API v1, described by types: what the control
//! plane stores is what it serves, and what clients read.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::network::{CreateNetwork, Network, VmNetwork};
pub use crate::trust::{TrustBody, TrustEntry};
pub use modvisor_node_api::exec::{ExecRequest, ExecResult};
pub use modvisor_node_api::interfaces::GuestInterface;
pub use modvisor_node_api::internal::{Node, NodeState, Resources};
pub use modvisor_node_api::types::{KernelMode, Phase, PowerState, RequestState};
pub use modvisor_node_api::user_data::{UserDataState, UserDataStatus};

/// A timestamp in RFC 3339 form (UTC).
pub type Timestamp = String;

/// Limits on what one tenant may hold at once, and how fast it may call. The rate limits
/// are optional in a body (a quota of only the first three fields keeps its defaults).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Maximum number of VMs.
    #[cfg_attr(feature = "schema", schema(maximum = 1000000000))]
    pub max_vms: u64,
    /// Maximum vCPUs summed over all VMs.
    #[cfg_attr(feature = "schema", schema(maximum = 1000000000))]
    pub max_vcpus: u64,
    /// Maximum guest memory in MiB summed over all VMs.
    #[cfg_attr(feature = "schema", schema(maximum = 1000000000))]
    pub max_memory_mib: u64,
    /// API requests per second, sustained (a token bucket's refill); more get 429.
    #[serde(default = "defaults::api_requests_per_sec")]
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 1, maximum = 1000000, default = 100)
    )]
    pub api_requests_per_sec: u32,
    /// API requests at once above the sustained rate (the bucket's size).
    #[serde(default = "defaults::api_burst")]
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 1, maximum = 1000000, default = 200)
    )]
    pub api_burst: u32,
    /// API requests in flight at once (a slow sender holds one until its body is in).
    #[serde(default = "defaults::max_concurrent_requests")]
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 1, maximum = 100000, default = 32)
    )]
    pub max_concurrent_requests: u32,
    /// Module requests (load or unload) per VM per minute, with as many at once.
    #[serde(default = "defaults::module_requests_per_vm_per_min")]
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 1, maximum = 100000, default = 30)
    )]
    pub module_requests_per_vm_per_min: u32,
    /// Maximum number of networks.
    #[serde(default = "defaults::max_networks")]
    #[cfg_attr(
        feature = "schema",
        schema(minimum = 0, maximum = 1000000000, default = 8)
    )]
    pub max_networks: u64,
}

/// The defaults of [`Quota`]'s optional fields.
pub mod defaults {
    /// `api_requests_per_sec`.
    pub fn api_requests_per_sec() -> u32 {
        100
    }
    /// `api_burst`.
    pub fn api_burst() -> u32 {
        200
    }
    /// `max_concurrent_requests`.
    pub fn max_concurrent_requests() -> u32 {
        32
    }
    /// `module_requests_per_vm_per_min`.
    pub fn module_requests_per_vm_per_min() -> u32 {
        30
    }
    /// `max_networks`.
    pub fn max_networks() -> u64 {
        8
    }
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            max_vms: 10,
            max_vcpus: 32,
            max_memory_mib: 32 * 1024,
            api_requests_per_sec: defaults::api_requests_per_sec(),
            api_burst: defaults::api_burst(),
            max_concurrent_requests: defaults::max_concurrent_requests(),
            module_requests_per_vm_per_min: defaults::module_requests_per_vm_per_min(),
            max_networks: defaults::max_networks(),
        }
    }
}

/// What a tenant holds now, counted against its [`Quota`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Number of VMs.
    pub vms: u64,
    /// vCPUs summed over all VMs.
    pub vcpus: u64,
    /// Guest memory in MiB summed over all VMs.
    pub memory_mib: u64,
    /// Number of networks.
    #[serde(default)]
    pub networks: u64,
}

/// Whether the control plane can serve: its store answers and every node agent it was
/// started to expect (`modvisor up`'s own) is registered and Ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "schema",
    schema(example = json!({"ready": false, "waiting_for": ["node node-1 has not registered yet"]}))
)]
pub struct Readiness {
    /// Everything below holds.
    pub ready: bool,
    /// What is not ready yet, in words (empty when ready).
    pub waiting_for: Vec<String>,
}

/// A tenant: the unit of isolation and of quota.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Tenant {
    /// Unique name.
    pub name: String,
    /// Current limits.
    pub quota: Quota,
    /// Current usage.
    pub usage: Usage,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Body of `POST /v1/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Name: 1-63 characters of `[a-z0-9-]`, starting with a letter.
    #[cfg_attr(feature = "schema", schema(pattern = "^[a-z][a-z0-9-]{0,62}$"))]
    pub name: String,
    /// Limits; the defaults when absent.
    #[serde(default)]
    pub quota: Option<Quota>,
}

/// A module to load, with its parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModuleRef {
    /// Module name as in its `.modinfo` (`[a-zA-Z0-9_-]`, at most 55 characters).
    #[cfg_attr(feature = "schema", schema(pattern = "^[a-zA-Z0-9_-]{1,55}$"))]
    pub name: String,
    /// Module parameters, `key -> value`, passed to the module at load time (at most 32;
    /// names of `[a-zA-Z0-9_]`, values of printable ASCII without spaces).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// The desired state of a VM, as the tenant wrote it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Name, unique within the tenant: 1-63 characters of `[a-z0-9-]`, starting with a letter.
    #[cfg_attr(feature = "schema", schema(pattern = "^[a-z][a-z0-9-]{0,62}$"))]
    pub name: String,
    /// Number of vCPUs, 1..=32.
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 32))]
    pub vcpus: u32,
    /// Guest memory in MiB, 128..=65536.
    #[cfg_attr(feature = "schema", schema(minimum = 128, maximum = 65536))]
    pub memory_mib: u32,
    /// Modules to load into the guest kernel once it runs (at most 64, each once).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 64))]
    pub modules: Vec<ModuleRef>,
    /// Whether the VM should run; `running` when absent.
    #[serde(default)]
    pub power_state: PowerState,
    /// A script (up to 32 KiB, run with `sh -c`) that the guest runs once, at the VM's
    /// first boot, as tenant root, after the VM's requested modules have settled; its
    /// output goes to the console and its end to `status.user_data`. Fixed at creation:
    /// a replace may repeat it or leave it out, not change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(max_length = 32768))]
    pub user_data: Option<String>,
    /// The tenant network the VM joins: `default` when absent (created on first use),
    /// `none` for a VM without a network interface. Fixed at creation: a replace may
    /// repeat it or leave it out, not change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// What the guest kernel enforces for modules: `standard` (the default: it loads only
    /// modules signed by the distribution's key) or `operator-modules` (for modules
    /// signed by a trusted operator key: see `KernelMode`); allowed only for a tenant with
    /// an operator-signed module approved. Fixed at creation.
    #[serde(default)]
    pub kernel_mode: KernelMode,
}

/// The observed state of a VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct VmStatus {
    /// Lifecycle phase.
    pub phase: Phase,
    /// The node it is placed on, if any.
    pub node: Option<String>,
    /// Why it is in this phase, when that is not obvious.
    pub reason: Option<String>,
    /// Modules in the guest's own `/proc/modules`, as its node last reported.
    #[serde(default)]
    pub guest_modules: Vec<String>,
    /// The platform modules in the guest's `/proc/modules`: its kernel's own signed
    /// virtio drivers, which its agent loads at boot (not the tenant's requests).
    #[serde(default)]
    pub platform_modules: Vec<String>,
    /// The guest's network interfaces and IPv4 addresses as its own kernel reports them,
    /// as its node last reported (what the tenant configured inside shows here too).
    #[serde(default)]
    pub interfaces: Vec<GuestInterface>,
    /// What became of the VM's first-boot script, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<UserDataStatus>,
    /// The VM's address on its network (absent for a VM without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<VmNetwork>,
    /// What its running guest kernel was booted to enforce, as its node reports it
    /// (absent while no guest runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_mode: Option<KernelMode>,
    /// The guest kernel's taint flags for each tainted module of `guest_modules`
    /// (`O`: out of tree, `E`: signed by a key the guest kernel does not know).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub module_taints: BTreeMap<String, String>,
}

impl VmStatus {
    /// A VM in `phase` on `node`, of whose guest nothing is known yet.
    pub fn new(phase: Phase, node: Option<String>, reason: Option<String>) -> Self {
        VmStatus {
            phase,
            node,
            reason,
            guest_modules: Vec::new(),
            platform_modules: Vec::new(),
            interfaces: Vec::new(),
            user_data: None,
            network: None,
            kernel_mode: None,
            module_taints: BTreeMap::new(),
        }
    }
}

/// A virtual machine owned by a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Vm {
    /// Unique id (UUID).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Desired state.
    pub spec: VmSpec,
    /// Observed state.
    pub status: VmStatus,
    /// Incremented on every change; the ETag is `"<generation>"`.
    pub generation: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Deletion was asked for; the VM goes once its node has removed it.
    #[serde(default)]
    pub deleting: bool,
}

impl Vm {
    /// The strong ETag of this version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.generation)
    }
}

/// A page of results.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

/// Query parameters of paginated lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Maximum items per page, 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// Query parameters of `GET /v1/events`: a page of the audit trail, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct EventListParams {
    /// Maximum items per page, 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Only events after this sequence number (to follow the trail: pass the last `seq`
    /// seen). Not with `page_token`.
    pub after_seq: Option<u64>,
    /// Only events about this resource or what lies under it: `vms/<id>` also gives
    /// `vms/<id>/modules/<name>`.
    pub resource: Option<String>,
}

/// Query parameters of `GET /v1/vms`: a page, or the VMs of one name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct VmListParams {
    /// Maximum items per page, 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Only the VM of this name (a tenant's names are unique; an admin sees each
    /// tenant's VM of that name). One page, without `page_token`.
    pub name: Option<String>,
}

/// One published version of a kernel module: content-addressed bytes plus metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ModuleVersion {
    /// Module name.
    pub name: String,
    /// The kernel release it was built for.
    pub kernel_release: String,
    /// sha256 of the .ko bytes, lowercase hex; the blob's address.
    pub sha256: String,
    /// Size of the .ko in bytes.
    pub size: u64,
    /// `.modinfo` fields (license, vermagic, depends, ...), where the bytes are an ELF object.
    pub modinfo: BTreeMap<String, String>,
    /// When it was published.
    pub published_at: Timestamp,
}

/// Who may request a module.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModulePolicy {
    /// Whether the module may be requested at all.
    pub approved: bool,
    /// Tenants it is approved for: `["*"]` for all, or a list of names.
    pub tenants: Vec<String>,
    /// Who may sign it: `kernel` (the keys built into the guest kernel: the
    /// distribution's) and the names of operator certificates in the trust store
    /// (`PUT /v1/admin/trust/{name}`). Default: `["kernel"]`.
    #[serde(default = "kernel_signer")]
    pub signers: Vec<String>,
    /// Licenses accepted beyond the GPL-compatible ones (e.g. `Proprietary`): at most 8,
    /// each 1-64 printable ASCII characters. A module under such a license taints the
    /// guest kernel (`P`), shown in the VM's `module_taints`. Default: none.
    #[serde(default)]
    pub licenses: Vec<String>,
}

/// The signer name of the guest kernel's own keys.
pub const KERNEL_SIGNER: &str = "kernel";

fn kernel_signer() -> Vec<String> {
    vec![KERNEL_SIGNER.to_string()]
}

impl ModulePolicy {
    /// Whether `tenant` may request the module under this policy.
    pub fn allows(&self, tenant: &str) -> bool {
        self.approved && self.tenants.iter().any(|t| t == "*" || t == tenant)
    }

    /// Whether an operator's certificate may sign it (the guest kernel cannot check such
    /// a signature itself).
    pub fn operator_signed(&self) -> bool {
        self.signers.iter().any(|s| s != KERNEL_SIGNER)
    }
}

/// A module in the catalog: its versions and, for admins, its policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CatalogModule {
    /// Module name.
    pub name: String,
    /// Published versions, one per kernel release.
    pub versions: Vec<ModuleVersion>,
    /// Its policy (shown to admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<ModulePolicy>,
}

/// Body of `POST /v1/vms/{id}/modules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModuleRequestBody {
    /// Module name (`[a-zA-Z0-9_-]`, at most 55 characters; `-` and `_` are the same).
    #[cfg_attr(feature = "schema", schema(pattern = "^[a-zA-Z0-9_-]{1,55}$"))]
    pub name: String,
    /// Module parameters (as in [`ModuleRef`]).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A tenant's request to load a module into one of its VMs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ModuleRequest {
    /// The VM.
    pub vm_id: String,
    /// Module name.
    pub name: String,
    /// Module parameters.
    pub params: BTreeMap<String, String>,
    /// Where the request stands.
    pub state: RequestState,
    /// Why it is in this state (rejections and failures).
    pub reason: Option<String>,
    /// Whether the tenant wants it loaded (`false` after an unload request).
    pub want_loaded: bool,
    /// When it was made.
    pub requested_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// How a mutation ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect.
    Success,
    /// It was refused (policy, quota, precondition); nothing changed.
    Denied,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Event {
    /// Monotonic sequence number.
    pub seq: u64,
    /// When it happened.
    pub time: Timestamp,
    /// Who did it (the token's `sub`).
    pub actor: String,
    /// The tenant whose resources it concerns, if any.
    pub tenant: Option<String>,
    /// What was done, e.g. `vm.create`.
    pub action: String,
    /// The resource, e.g. `vms/<id>`.
    pub resource: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, for denials; what happened, for accesses that change nothing stored (an
    /// exec: the program, how it ended, how long it took).
    pub detail: Option<String>,
}

/// A node as an admin sees it: the node, and what the VMs placed on it hold by their
/// specs. `allocated` equals `placed` whatever happened to those VMs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct NodeDetail {
    /// The node.
    #[serde(flatten)]
    pub node: Node,
    /// The sum of the specs of the VMs placed on it.
    pub placed: Resources,
}

/// What a listed token lets its holder do (tokens the control plane presents to nodes are
/// short-lived and never listed).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Operates the system.
    Admin,
    /// Uses the system as one tenant.
    Tenant,
    /// A node agent's credential (issued only by registration).
    Node,
    /// May only register a node.
    Bootstrap,
    /// May only read `/metrics`.
    Metrics,
}

/// A token the control plane issued, as listed (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TokenRecord {
    /// Unique id (the JWT's `jti`): what `DELETE /v1/tokens/{jti}` names.
    pub jti: String,
    /// Who holds it (the JWT's `sub`).
    pub sub: String,
    /// What it lets its holder do.
    pub role: TokenRole,
    /// The tenant, for tenant tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// When it was revoked; a revoked token is refused everywhere at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

/// Body of `POST /v1/tokens` (admin): a new token, listed and revocable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// `admin`, `tenant`, `bootstrap` or `metrics` (node credentials come only from
    /// registration).
    pub role: TokenRole,
    /// The tenant, for (and only for) tenant tokens; it must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Who holds it; defaults to the tenant, or the role's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Lifetime in seconds, 60..=31536000.
    #[cfg_attr(feature = "schema", schema(minimum = 60, maximum = 31536000))]
    pub ttl_secs: u64,
}

/// A token just issued: the JWT (shown once, never stored) and its record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct IssuedToken {
    /// The bearer token.
    pub token: String,
    /// What is listed of it.
    #[serde(flatten)]
    pub record: TokenRecord,
}
