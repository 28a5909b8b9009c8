//! The vocabulary both sides of a node share: VM phases and power states, module request
//! states, what the control plane asks of a node (ensure, load) and what a node observes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether a VM should be running.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// The VM should run.
    #[default]
    Running,
    /// The VM should be stopped (its resources stay reserved).
    Stopped,
}

/// Lifecycle phase of a VM.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Phase {
    /// Accepted, not yet placed on a node.
    Pending,
    /// Placed on a node, not yet started.
    Scheduled,
    /// The node is starting it.
    Starting,
    /// Running.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// Failed; see `reason`.
    Failed,
    /// Its node stopped reporting.
    Lost,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Scheduled,
        Phase::Starting,
        Phase::Running,
        Phase::Stopping,
        Phase::Stopped,
        Phase::Failed,
        Phase::Lost,
    ];
}

/// State of a module request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum RequestState {
    /// Recorded, waiting for the VM's node.
    Pending,
    /// Being vetted on the node.
    Vetting,
    /// Refused; see `reason`.
    Rejected,
    /// Being loaded into the guest kernel.
    Loading,
    /// Loaded in the guest kernel.
    Loaded,
    /// Loading failed; see `reason`.
    Failed,
    /// Unloaded (or never loaded and withdrawn).
    Unloaded,
}

impl RequestState {
    /// Whether the request has ended and a new one may replace it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RequestState::Rejected | RequestState::Failed | RequestState::Unloaded
        )
    }
}

/// Most modules a node reports for one guest (a guest listing more is cut to this).
pub const MAX_GUEST_MODULES: usize = 512;
/// Most platform modules a node reports for one guest.
pub const MAX_PLATFORM_MODULES: usize = 32;
/// Longest reason a node gives for one VM, in bytes.
pub const MAX_OBSERVED_REASON: usize = 1024;

/// Whether `name` can be a kernel module's name: 1-55 characters of `[A-Za-z0-9_-]`.
pub fn is_module_name(name: &str) -> bool {
    (1..=55).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a VM's guest kernel enforces for modules, decided when the VM is created.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum KernelMode {
    /// `module.sig_enforce=1 lockdown=integrity`: the guest kernel itself refuses any
    /// module not signed by the distribution's key, and locks down `/dev/mem`, kexec and
    /// raw I/O even for root. Every VM that does not ask otherwise.
    #[default]
    Standard,
    /// `module.sig_enforce=0`, no lockdown: the guest kernel loads modules signed by an
    /// operator's key, which its keyring cannot verify. The host's vetting (signature
    /// against the trusted operator certificate, pin, approval) is then the only
    /// signature check; the tenant still cannot load anything itself (no
    /// `CAP_SYS_MODULE`, no `CAP_SYS_RAWIO` in its context). Allowed only for tenants with
    /// an operator-signed module approved.
    OperatorModules,
}

impl KernelMode {
    /// Whether the guest kernel checks module signatures itself.
    pub fn enforces_signatures(self) -> bool {
        self == KernelMode::Standard
    }
}

/// A VM as a node observes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ObservedVm {
    /// VM id.
    pub id: String,
    /// Phase as observed.
    pub phase: Phase,
    /// Why, for failures.
    pub reason: Option<String>,
    /// The id of the guest's current boot (new each time its hypervisor starts; absent
    /// while no guest runs): a change means a fresh kernel, with none of the modules
    /// loaded into the one before.
    #[serde(default)]
    pub boot: Option<String>,
    /// Modules in the guest's own `/proc/modules`, less the platform modules.
    pub guest_modules: Vec<String>,
    /// The platform modules (the guest kernel's own virtio drivers, loaded by its agent at
    /// boot) in the guest's `/proc/modules`: listed apart from what the tenant asked for.
    #[serde(default)]
    pub platform_modules: Vec<String>,
    /// The guest's network interfaces as its kernel reports them (at most
    /// [`crate::interfaces::MAX_GUEST_INTERFACES`]).
    #[serde(default)]
    pub interfaces: Vec<crate::interfaces::GuestInterface>,
    /// The first-boot script in this boot of the guest, once the node has asked for it.
    #[serde(default)]
    pub user_data: Option<crate::user_data::UserDataStatus>,
    /// What the guest kernel of this boot was booted to enforce (absent while no guest
    /// runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_mode: Option<KernelMode>,
    /// The taint flags the guest kernel shows for each tainted module of
    /// `guest_modules` (`O`: out of tree, `E`: unsigned or signed by a key it does not
    /// know), as in `/proc/modules`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub module_taints: BTreeMap<String, String>,
}

impl ObservedVm {
    /// A VM in `phase` of which nothing else is known (nothing listed from its guest yet).
    pub fn bare(id: &str, phase: Phase, reason: Option<String>) -> Self {
        ObservedVm {
            id: id.to_string(),
            phase,
            reason,
            boot: None,
            guest_modules: Vec::new(),
            platform_modules: Vec::new(),
            interfaces: Vec::new(),
            user_data: None,
            kernel_mode: None,
            module_taints: BTreeMap::new(),
        }
    }
}

/// Body of the node API's `PUT /v1/vms/{id}`: the full desired state (idempotent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnsureVm {
    /// Owning tenant.
    pub tenant: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Run or stop.
    pub power_state: PowerState,
    /// Its interface on a tenant network, if it has one (fixed for the VM's life).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkAttachment>,
    /// What its guest kernel enforces for modules (fixed for the VM's life).
    #[serde(default)]
    pub kernel_mode: KernelMode,
}

/// A VM's interface on a tenant network, as its node builds it: a tap on the network's
/// bridge, its frames allowed out only with this MAC and address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkAttachment {
    /// The tenant network's VXLAN network identifier (24 bits): its bridge and tunnel
    /// on every node.
    pub vni: u32,
    /// The VM's IPv4 address.
    #[cfg_attr(feature = "schema", schema(value_type = String, format = "ipv4"))]
    pub ip: std::net::Ipv4Addr,
    /// The network's prefix length.
    pub prefix: u8,
    /// The MAC of the VM's interface (`02:...`, locally administered).
    pub mac: String,
}

impl NetworkAttachment {
    /// Whether the fields are in range: a 24-bit VNI, a /16 to /30 prefix, a unicast,
    /// locally administered MAC.
    pub fn check(&self) -> Result<(), String> {
        if self.vni == 0 || self.vni >= 1 << 24 {
            return Err(format!("vni {} is not a 24-bit VXLAN id", self.vni));
        }
        if !(16..=30).contains(&self.prefix) {
            return Err(format!("prefix /{} is outside /16 to /30", self.prefix));
        }
        let octets: Vec<u8> = self
            .mac
            .split(':')
            .map(|o| u8::from_str_radix(o, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{:?} is not a MAC", self.mac))?;
        if octets.len() != 6 || self.mac.len() != 17 || octets[0] & 0x03 != 0x02 {
            return Err(format!(
                "{:?} is not a unicast, locally administered MAC",
                self.mac
            ));
        }
        Ok(())
    }
}

/// One module of a load request's dependency closure, pinned to the sha256 of the file the
/// control plane published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PinnedModule {
    /// Module name.
    pub name: String,
    /// sha256 of its .ko, lowercase hex: the blob the node fetches and the pin vetting
    /// checks.
    pub sha256: String,
    /// Who may sign it: `kernel` (the guest kernel's own keys) and names of the
    /// request's `certificates`. Default: `["kernel"]`.
    #[serde(default = "kernel_signer")]
    pub signers: Vec<String>,
    /// Licenses its policy accepts beyond the GPL-compatible ones. Default: none.
    #[serde(default)]
    pub licenses: Vec<String>,
}

/// The signer name of the guest kernel's own keys.
pub const KERNEL_SIGNER: &str = "kernel";

fn kernel_signer() -> Vec<String> {
    vec![KERNEL_SIGNER.to_string()]
}

/// An operator certificate a module of a load request may be signed by.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignerCertificate {
    /// Its name (what `PinnedModule::signers` names).
    pub name: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
}

/// Body of the node API's `POST /v1/vms/{id}/modules`: everything the node needs, resolved
/// once by the control plane.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeLoadModule {
    /// The module asked for.
    pub name: String,
    /// Its parameters, `key=value` separated by spaces.
    pub params: String,
    /// The module and every module it depends on (as far as the catalog has them), each
    /// pinned. The node fetches missing blobs by hash, parses and vets each once, and
    /// loads them in dependency order.
    pub closure: Vec<PinnedModule>,
    /// The modules the VM's tenant may have loaded, at least those of `closure` that it
    /// may (every module of the closure must be in it, dependencies too).
    pub approved: Vec<String>,
    /// The operator certificates the closure's `signers` name (none when every module
    /// is the distribution's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<SignerCertificate>,
    /// How long the node may take for the whole request, in milliseconds (see
    /// [`crate::budget::load`]); the control plane waits this plus a margin.
    pub budget_ms: u64,
}

/// What happened to one module of a node load request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct NodeModuleResult {
    /// Module name.
    pub name: String,
    /// `Loaded`, `Rejected` or `Failed`.
    pub state: RequestState,
    /// Why, for rejections and failures, in one line.
    pub reason: Option<String>,
    /// Why vetting refused it, typed (`kind`-tagged), for rejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Object>))]
    pub rejection: Option<modvisor_modules::Rejection>,
    /// The guest kernel's errno, for failures.
    pub errno: Option<i32>,
}
