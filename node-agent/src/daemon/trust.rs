//! How a node comes to trust its control plane, and its own TLS key: the CA is given
//! (`--control-plane-ca`), or the one the control plane shows if its sha256 is the pin in
//! the bootstrap token (as `kubeadm join` does), or the one saved at the last
//! registration. The node's key is made here and only a certificate request leaves.

use super::{setup, NodeConfig, NodeError};
use modvisor_node_api::ControlPlaneClient;
use std::path::Path;
use std::time::Duration;

/// Where, under the data directory, the trusted CA certificate is kept.
pub const CA_FILE: &str = "control-plane-ca.pem";

/// The CA certificate (PEM) this node trusts for the control plane.
pub fn control_plane_ca(config: &NodeConfig) -> Result<String, NodeError> {
    if let Some(path) = &config.control_plane_ca {
        return std::fs::read_to_string(path)
            .map_err(|e| NodeError::Setup(format!("--control-plane-ca {}: {e}", path.display())));
    }
    if let Some(pin) = modvisor_auth::unverified_ca_pin(&config.bootstrap_token) {
        // The control plane may still be starting: retried like registration is.
        let mut last = String::new();
        for _ in 0..30 {
            match ControlPlaneClient::fetch_pinned_ca(
                &config.control_plane,
                &pin,
                Duration::from_secs(10),
            ) {
                Ok(pem) => return Ok(pem),
                Err(e @ modvisor_node_api::ClientError::Unreachable { .. }) => last = e.to_string(),
                Err(e) => {
                    return Err(NodeError::Setup(format!(
                        "the control plane's CA is not the one the bootstrap token pins: {e}"
                    )))
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        return Err(NodeError::Setup(format!(
            "cannot reach the control plane at {} for its CA: {last}",
            config.control_plane
        )));
    }
    match std::fs::read_to_string(config.data_dir.join(CA_FILE)) {
        Ok(pem) => Ok(pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NodeError::Setup(
            "no CA to trust the control plane by: the bootstrap token pins none and none was saved; pass --control-plane-ca FILE".into(),
        )),
        Err(e) => Err(NodeError::Setup(format!("{CA_FILE}: {e}"))),
    }
}

/// Keeps the CA a registration confirmed, for later starts.
pub fn save_ca(data_dir: &Path, pem: &str) -> Result<(), NodeError> {
    std::fs::write(data_dir.join(CA_FILE), pem).map_err(setup("saving the control plane's CA"))
}

/// A fresh key for the node API's TLS (PEM) and a certificate request for it naming `name`.
pub fn node_key(name: &str) -> Result<(String, String), NodeError> {
    let key = rcgen::KeyPair::generate().map_err(setup("the node's TLS key"))?;
    let csr = rcgen::CertificateParams::new(vec![name.to_string()])
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(setup("the node's certificate request"))?;
    Ok((key.serialize_pem(), csr))
}
