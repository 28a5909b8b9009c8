//! The paths of both APIs, declared once: the servers register them, the clients build
//! URLs from them, the OpenAPI documents name them.

/// Liveness of a node agent.
pub const HEALTHZ: &str = "/healthz";
/// The node agent's Prometheus metrics (`GET`, text; for the control plane, which serves
/// them to admins at `GET /v1/nodes/{name}/metrics`).
pub const METRICS: &str = "/metrics";
/// A VM on a node (`PUT` ensure, `GET` observe, `DELETE` remove).
pub const VM: &str = "/v1/vms/{id}";
/// A VM's modules on a node (`POST` load).
pub const VM_MODULES: &str = "/v1/vms/{id}/modules";
/// One module of a VM on a node (`DELETE` unload).
pub const VM_MODULE: &str = "/v1/vms/{id}/modules/{name}";
/// A VM's serial console (`GET`: a WebSocket, or the recent output with `tail_bytes`).
pub const VM_CONSOLE: &str = "/v1/vms/{id}/console";
/// A VM's first-boot script (`POST`: start it, once per boot).
pub const VM_USER_DATA: &str = "/v1/vms/{id}/user-data";
/// A command in a VM's guest (`POST`: run it, answer how it ended).
pub const VM_EXEC: &str = "/v1/vms/{id}/exec";

/// The control plane's CA certificate (PEM; no token: a node checks it against the pin
/// in its bootstrap token).
pub const CA: &str = "/v1/ca.pem";
/// Registration of a node (control plane, bootstrap token).
pub const NODE_REGISTER: &str = "/v1/nodes/register";
/// A node's heartbeat (control plane, node token).
pub const NODE_HEARTBEAT: &str = "/v1/nodes/{name}/heartbeat";
/// A module blob by sha256 (control plane, node token).
pub const BLOB: &str = "/v1/blobs/{sha256}";

/// `template` with each `{key}` replaced by its value, percent-encoded as a path segment.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{key}}}"), &encode_segment(value));
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_filled_and_segments_encoded() {
        assert_eq!(
            fill(VM_MODULE, &[("id", "a-1"), ("name", "tcp_bbr")]),
            "/v1/vms/a-1/modules/tcp_bbr"
        );
        assert_eq!(fill(VM, &[("id", "../x y")]), "/v1/vms/..%2Fx%20y");
    }
}
