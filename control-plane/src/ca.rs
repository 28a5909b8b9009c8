//! The control plane as a small certificate authority for its nodes (rcgen): its CA key
//! (0600) and certificate under the data directory, a node certificate signed from the
//! node's own certificate request at registration (the node's key never leaves it), and
//! the certificate of the control plane's internal (node-facing) listener.

use crate::error::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Where, under the data directory, the CA's key lives (mode 0600).
pub const CA_KEY_FILE: &str = "keys/ca-key.pem";
/// Where, under the data directory, the CA's certificate lives.
pub const CA_CERT_FILE: &str = "keys/ca.pem";
/// How long the certificates this CA signs are valid, in days.
const LEAF_DAYS: i64 = 825;
/// How long the CA itself is valid, in days.
const CA_DAYS: i64 = 3650;

/// The control plane's CA.
pub struct ClusterCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_error(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::KeyFile {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

impl ClusterCa {
    /// Loads the CA from `data_dir`, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let key_path = data_dir.join(CA_KEY_FILE);
        let cert_path = data_dir.join(CA_CERT_FILE);
        if !key_path.exists() {
            let (cert_pem, key_pem) = Self::generate_pems()?;
            if let Some(dir) = key_path.parent() {
                fs::create_dir_all(dir).map_err(|e| ca_error(dir, e))?;
            }
            // The certificate first: a key without it would be re-created over.
            fs::write(&cert_path, cert_pem).map_err(|e| ca_error(&cert_path, e))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .map_err(|e| ca_error(&key_path, e))?;
            f.write_all(key_pem.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| ca_error(&key_path, e))?;
        }
        let mode = fs::metadata(&key_path)
            .map_err(|e| ca_error(&key_path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ca_error(
                &key_path,
                format!("readable by others (mode {:o}); chmod 600 it", mode & 0o777),
            ));
        }
        let key_pem = fs::read_to_string(&key_path).map_err(|e| ca_error(&key_path, e))?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(|e| ca_error(&cert_path, e))?;
        Self::from_pems(cert_pem, &key_pem)
    }

    /// A new CA: its certificate and private key (PEM).
    pub fn generate_pems() -> Result<(String, String)> {
        let failed = |e: rcgen::Error| Error::Signing(format!("making the cluster CA: {e}"));
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "modvisor cluster CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key).map_err(failed)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA of a certificate and its private key (PEM).
    pub fn from_pems(cert_pem: String, key_pem: &str) -> Result<Self> {
        let bad = |e: rcgen::Error| Error::Signing(format!("the cluster CA: {e}"));
        let key = KeyPair::from_pem(key_pem).map_err(bad)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(bad)?;
        Ok(ClusterCa { cert_pem, issuer })
    }

    /// The CA certificate (PEM): what nodes trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The hex sha256 of the CA certificate's DER: what a bootstrap token pins.
    pub fn cert_sha256(&self) -> Result<String> {
        modvisor_node_api::tls::certificate_sha256(&self.cert_pem)
            .map_err(|e| Error::Signing(format!("the CA certificate: {e}")))
    }

    /// A server certificate for node `name` from its certificate request: whatever the
    /// request asks for, the certificate names only `name` and serves only as a server.
    pub fn sign_node_request(&self, name: &str, csr_pem: &str) -> Result<String> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::invalid("csr_pem", format!("not a certificate request: {e}")))?;
        let dns = name
            .to_string()
            .try_into()
            .map_err(|_| Error::invalid("name", "not a DNS name"))?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::DnsName(dns)];
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_DAYS);
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| Error::Signing(format!("a certificate for node {name}: {e}")))?;
        Ok(cert.pem())
    }

    /// A certificate and key (PEM) for the control plane's internal listener, naming
    /// [`modvisor_node_api::tls::CONTROL_PLANE_NAME`]. Made anew at each start.
    pub fn control_plane_identity(&self) -> Result<(String, String)> {
        let key = KeyPair::generate().map_err(|e| Error::Signing(e.to_string()))?;
        let mut params =
            CertificateParams::new(vec![modvisor_node_api::tls::CONTROL_PLANE_NAME.to_string()])
                .map_err(|e| Error::Signing(e.to_string()))?;
        params.distinguished_name.push(
            DnType::CommonName,
            modvisor_node_api::tls::CONTROL_PLANE_NAME,
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_DAYS);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::Signing(format!("the control plane's certificate: {e}")))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_with_a_private_key_and_signs_what_nodes_ask() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let again = ClusterCa::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let node_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["evil.example".to_string()])
            .unwrap()
            .serialize_request(&node_key)
            .unwrap()
            .pem()
            .unwrap();
        let cert = again.sign_node_request("node-1", &csr).unwrap();
        // Served with the node's key, it verifies for "node-1" only.
        let server = modvisor_node_api::tls::server_config(&cert, &node_key.serialize_pem());
        assert!(server.is_ok());
        assert!(modvisor_node_api::tls::client_config(ca.cert_pem(), "node-1").is_ok());
        assert!(again.sign_node_request("node-1", "garbage").is_err());
    }

    /// A TLS handshake in memory; the URL host the client "dialled" is an IP, which the
    /// name-pinned verifier does not look at.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> std::result::Result<(), String> {
        use std::sync::Arc;
        let host = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), host).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
            buf.clear();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Err("no handshake".into())
    }

    #[test]
    fn a_node_is_verified_by_its_name_and_our_ca_only() {
        use modvisor_node_api::tls::{client_config, server_config};
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["node-1".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let node1 = server_config(
            &ca.sign_node_request("node-1", &csr).unwrap(),
            &key.serialize_pem(),
        )
        .unwrap();
        handshake(
            client_config(ca.cert_pem(), "node-1").unwrap(),
            node1.clone(),
        )
        .unwrap();
        let err = handshake(
            client_config(ca.cert_pem(), "node-2").unwrap(),
            node1.clone(),
        );
        assert!(
            err.unwrap_err().contains("client"),
            "node-1 passed as node-2"
        );
        // A CA of another control plane trusts none of ours.
        let other = tempfile::tempdir().unwrap();
        let foreign = ClusterCa::load_or_create(other.path()).unwrap();
        assert!(handshake(client_config(foreign.cert_pem(), "node-1").unwrap(), node1).is_err());
        // The control plane's own identity passes as the control plane.
        let (cert, key) = ca.control_plane_identity().unwrap();
        handshake(
            client_config(ca.cert_pem(), modvisor_node_api::tls::CONTROL_PLANE_NAME).unwrap(),
            server_config(&cert, &key).unwrap(),
        )
        .unwrap();
    }
}
