//! TLS between the control plane and its nodes, as both sides set it up: rustls with the
//! ring provider, certificates of the control plane's own CA, and peers verified by the
//! name they must have (a node by its node name, the control plane as [`CONTROL_PLANE_NAME`])
//! whatever address they are reached at.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The name in the control plane's certificate (its internal listener).
pub const CONTROL_PLANE_NAME: &str = "control-plane";

/// Why TLS could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A PEM input holds no certificate, or not one rustls takes.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A PEM input holds no private key, or not one rustls takes.
    #[error("private key: {0}")]
    PrivateKey(String),
    /// The name to verify a peer by is not a DNS name.
    #[error("peer name {0:?} is not a DNS name")]
    Name(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Installs ring as the process's rustls provider, once: reqwest builds every client,
/// plain HTTP ones too, only after one is installed. Every configuration below names ring
/// itself, so a provider another part of the process installed first is as good.
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            match rustls::crypto::ring::default_provider().install_default() {
                Ok(()) | Err(_) => {} // Err: another thread installed one just now
            }
        }
    });
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM text.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate("no certificate in the PEM".into()));
    }
    Ok(certs)
}

/// The lowercase hex sha256 of the DER of the first certificate in `pem`: what a bootstrap
/// token pins the CA by.
pub fn certificate_sha256(pem: &str) -> Result<String, TlsError> {
    use sha2::Digest;
    let der = certificates(pem)?.remove(0);
    Ok(sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A server configuration presenting `cert_pem` (leaf first) with `key_pem`.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, TlsError> {
    let certs = certificates(cert_pem)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| TlsError::PrivateKey(e.to_string()))?
        .ok_or_else(|| TlsError::PrivateKey("no private key in the PEM".into()))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// A client configuration that trusts only the CA in `ca_pem` and takes a server only if
/// its certificate names `peer` (the URL's host is not what is checked).
pub fn client_config(ca_pem: &str, peer: &str) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
    }
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let name = ServerName::try_from(peer.to_string()).map_err(|_| TlsError::Name(peer.into()))?;
    let verifier = Arc::new(NamedPeer { inner, name });
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// A client configuration that takes any certificate: only to fetch the CA certificate a
/// bootstrap token pins by hash (what is fetched is checked against the pin, not trusted).
pub fn pinning_fetch_config() -> Result<rustls::ClientConfig, TlsError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth())
}

/// Verifies the chain against the CA as webpki does, for a fixed name.
#[derive(Debug)]
struct NamedPeer {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _url_host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Takes any certificate (signatures are still checked): see [`pinning_fetch_config`].
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
