//! How a replica proves itself to etcd and checks etcd in turn: client TLS and user
//! authentication, taken from the environment so that every command that opens the store
//! (`control-plane`, `token issue`, `store copy`, `bench`) uses the same settings, as
//! `etcdctl` reads `ETCDCTL_*`.
//!
//! - `MODVISOR_ETCD_CA`: the CA certificate (PEM file) etcd's server certificates are
//!   checked against; setting it speaks TLS to every member.
//! - `MODVISOR_ETCD_CERT`, `MODVISOR_ETCD_KEY`: this client's certificate and key (PEM
//!   files), for members started with `--client-cert-auth`.
//! - `MODVISOR_ETCD_USER`, `MODVISOR_ETCD_PASSWORD_FILE`: an etcd user and a file holding
//!   its password (mode 0600, or it is refused), for a cluster with authentication on.

use crate::error::{Error, Result};
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The settings of the environment variables above.
#[derive(Debug, Clone, Default)]
pub struct EtcdAccess {
    /// The CA file (TLS on when set).
    pub ca: Option<PathBuf>,
    /// The client's certificate and key files.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// A user and the file holding its password.
    pub user: Option<(String, PathBuf)>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn read(what: &str, path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Storage(format!("etcd: {what} {}: {e}", path.display())))
}

impl EtcdAccess {
    /// What the environment says.
    pub fn from_env() -> Result<Self> {
        let identity = match (var("MODVISOR_ETCD_CERT"), var("MODVISOR_ETCD_KEY")) {
            (Some(c), Some(k)) => Some((c.into(), k.into())),
            (None, None) => None,
            _ => {
                return Err(Error::Storage(
                    "etcd: MODVISOR_ETCD_CERT and MODVISOR_ETCD_KEY go together".into(),
                ))
            }
        };
        let user = match (
            var("MODVISOR_ETCD_USER"),
            var("MODVISOR_ETCD_PASSWORD_FILE"),
        ) {
            (Some(u), Some(p)) => Some((u, p.into())),
            (None, None) => None,
            _ => {
                return Err(Error::Storage(
                    "etcd: MODVISOR_ETCD_USER and MODVISOR_ETCD_PASSWORD_FILE go together".into(),
                ))
            }
        };
        let ca = var("MODVISOR_ETCD_CA").map(PathBuf::from);
        if identity.is_some() && ca.is_none() {
            return Err(Error::Storage(
                "etcd: a client certificate needs MODVISOR_ETCD_CA (TLS)".into(),
            ));
        }
        Ok(EtcdAccess { ca, identity, user })
    }

    /// Whether members are spoken to over TLS.
    pub fn tls(&self) -> bool {
        self.ca.is_some()
    }

    /// `options` with these settings.
    pub fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions> {
        if let Some(ca) = &self.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read("CA", ca)?));
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        if let Some((name, file)) = &self.user {
            let mode = std::fs::metadata(file)
                .map_err(|e| {
                    Error::Storage(format!("etcd: password file {}: {e}", file.display()))
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::Storage(format!(
                    "etcd: password file {} is readable by others (mode {:o}); chmod 600 it",
                    file.display(),
                    mode & 0o777
                )));
            }
            let password = read("password file", file)?;
            options = options.with_user(name.clone(), password.trim_end_matches('\n'));
        }
        Ok(options)
    }
}
