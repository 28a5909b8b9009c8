//! The paths of API v1 that clients call (templates with `{name}` segments).

pub use modvisor_node_api::routes::fill;

/// Liveness.
pub const HEALTHZ: &str = "/healthz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// The OpenAPI document of this API.
pub const OPENAPI: &str = "/openapi.json";
/// Tenants (`GET` list, `POST` create).
pub const TENANTS: &str = "/v1/tenants";
/// One tenant.
pub const TENANT: &str = "/v1/tenants/{name}";
/// A tenant's quota (`PUT`).
pub const TENANT_QUOTA: &str = "/v1/tenants/{name}/quota";
/// VMs (`GET` a page, `POST` create).
pub const VMS: &str = "/v1/vms";
/// One VM (`GET`, `PUT` replace, `DELETE`).
pub const VM: &str = "/v1/vms/{id}";
/// A VM's module requests (`GET`, `POST` request).
pub const VM_MODULES: &str = "/v1/vms/{id}/modules";
/// One module request (`DELETE` unload).
pub const VM_MODULE: &str = "/v1/vms/{id}/modules/{name}";
/// A VM's serial console (`GET`: a WebSocket, or `tail_bytes` of output as text).
pub const VM_CONSOLE: &str = "/v1/vms/{id}/console";
/// A command in a VM's guest (`POST` run).
pub const VM_EXEC: &str = "/v1/vms/{id}/exec";
/// Networks (`GET` the caller's, `POST` create).
pub const NETWORKS: &str = "/v1/networks";
/// One network (`GET`, `DELETE`).
pub const NETWORK: &str = "/v1/networks/{name}";
/// The catalog as the caller may see it.
pub const MODULES: &str = "/v1/modules";
/// Publish a module version (`PUT`, admin).
pub const ADMIN_MODULE: &str = "/v1/admin/modules/{name}";
/// A module's policy (`PUT`, admin).
pub const ADMIN_MODULE_POLICY: &str = "/v1/admin/modules/{name}/policy";
/// The trusted operator certificates (`GET`, admin).
pub const ADMIN_TRUST: &str = "/v1/admin/trust";
/// One trusted certificate (`PUT` add or replace, `GET`, `DELETE`; admin).
pub const ADMIN_TRUST_ONE: &str = "/v1/admin/trust/{name}";
/// The audit trail (a page).
pub const EVENTS: &str = "/v1/events";
/// Nodes (admin).
pub const NODES: &str = "/v1/nodes";
/// One node with what its VMs hold (admin).
pub const NODE: &str = "/v1/nodes/{name}";
/// A node agent's own metrics, through the control plane (`GET`, admin or metrics).
pub const NODE_METRICS: &str = "/v1/nodes/{name}/metrics";
/// A node action (`POST`: cordon, uncordon, drain).
pub const NODE_ACTION: &str = "/v1/nodes/{name}/{action}";

/// Tokens (`GET` every listed token, admin; `POST` issue one, admin).
pub const TOKENS: &str = "/v1/tokens";
/// One token (`DELETE` revokes it: admins any, tenants their own).
pub const TOKEN: &str = "/v1/tokens/{jti}";
/// The caller's own listed tokens (a tenant's: every token of its tenant).
pub const MY_TOKENS: &str = "/v1/me/tokens";

/// Every route above with its method, as the OpenAPI document names them.
pub const ALL: [(&str, &str); 32] = [
    ("get", HEALTHZ),
    ("get", TENANTS),
    ("post", TENANTS),
    ("get", TENANT),
    ("put", TENANT_QUOTA),
    ("get", VMS),
    ("post", VMS),
    ("get", VM),
    ("put", VM),
    ("delete", VM),
    ("get", VM_MODULES),
    ("post", VM_MODULES),
    ("delete", VM_MODULE),
    ("get", MODULES),
    ("put", ADMIN_MODULE),
    ("get", ADMIN_MODULE_POLICY),
    ("put", ADMIN_MODULE_POLICY),
    ("get", ADMIN_TRUST),
    ("put", ADMIN_TRUST_ONE),
    ("delete", ADMIN_TRUST_ONE),
    ("get", EVENTS),
    ("get", NODES),
    ("get", NODE),
    ("get", NODE_METRICS),
    ("post", NODE_ACTION),
    ("delete", NODE),
    ("get", TOKENS),
    ("post", TOKENS),
    ("delete", TOKEN),
    ("get", MY_TOKENS),
    ("get", METRICS),
    ("get", OPENAPI),
];
