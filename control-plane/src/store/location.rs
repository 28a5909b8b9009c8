//! Where the control plane keeps its state: `sled:PATH` (embedded, the default under the
//! data directory) or `etcd://HOST:PORT[,HOST:PORT...][/ROOT]` (a cluster shared by
//! control-plane replicas; needs a build with the cargo feature `etcd`).

use super::{KvStore, SledKv};
use crate::error::Result;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// The root prefix of every key when an etcd location names none.
pub const DEFAULT_ETCD_ROOT: &str = "/modvisor";

/// A store's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A sled database in this directory.
    Sled(PathBuf),
    /// An etcd cluster: its members' client endpoints and the root prefix of every key.
    Etcd {
        /// `http://host:port` of each member.
        endpoints: Vec<String>,
        /// Every key starts with it.
        root: String,
    },
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(path) = s.strip_prefix("sled:") {
            if path.is_empty() {
                return Err("sled: needs a directory (sled:PATH)".into());
            }
            return Ok(StoreLocation::Sled(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("etcd://") else {
            return Err(format!(
                "{s:?}: a store is sled:PATH or etcd://HOST:PORT[,HOST:PORT...][/ROOT]"
            ));
        };
        let (members, root) = match rest.split_once('/') {
            Some((m, r)) => (m, format!("/{}", r.trim_matches('/'))),
            None => (rest, DEFAULT_ETCD_ROOT.to_string()),
        };
        if root == "/" {
            return Err("etcd: the root prefix may not be empty".into());
        }
        let endpoints = members
            .split(',')
            .map(|m| {
                let (host, port) = m
                    .rsplit_once(':')
                    .ok_or_else(|| format!("etcd member {m:?}: HOST:PORT"))?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(format!("etcd member {m:?}: HOST:PORT"));
                }
                Ok(format!("http://{m}"))
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Ok(StoreLocation::Etcd { endpoints, root })
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sled(dir) => write!(f, "sled:{}", dir.display()),
            StoreLocation::Etcd { endpoints, root } => {
                let members: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                write!(f, "etcd://{}{root}", members.join(","))
            }
        }
    }
}

impl StoreLocation {
    /// Opens the store (creating a sled database on first use).
    pub fn open(&self) -> Result<Arc<dyn KvStore>> {
        match self {
            StoreLocation::Sled(dir) => Ok(Arc::new(SledKv::open(dir)?)),
            #[cfg(feature = "etcd")]
            StoreLocation::Etcd { endpoints, root } => {
                Ok(Arc::new(super::EtcdKv::connect(endpoints, root)?))
            }
            #[cfg(not(feature = "etcd"))]
            StoreLocation::Etcd { .. } => Err(crate::error::Error::Storage(
                "this build has no etcd support: build modvisor with `--features etcd`".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_or_say_why() {
        assert_eq!(
            "sled:/var/lib/modvisor/db".parse(),
            Ok(StoreLocation::Sled("/var/lib/modvisor/db".into()))
        );
        assert_eq!(
            "etcd://127.0.0.1:2379,127.0.0.1:22379".parse(),
            Ok(StoreLocation::Etcd {
                endpoints: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://127.0.0.1:22379".into()
                ],
                root: DEFAULT_ETCD_ROOT.into(),
            })
        );
        assert_eq!(
            "etcd://e1:2379/prod/cp/".parse(),
            Ok(StoreLocation::Etcd {
                endpoints: vec!["http://e1:2379".into()],
                root: "/prod/cp".into(),
            })
        );
        for text in ["sled:/d/db", "etcd://a:1,b:2/modvisor", "etcd://a:1/x/y"] {
            let parsed: StoreLocation = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        for bad in [
            "sled:",
            "etcd://",
            "etcd://host",
            "etcd://host:port",
            "etcd://:2379",
            "etcd://h:1/",
            "postgres://x",
        ] {
            assert!(bad.parse::<StoreLocation>().is_err(), "{bad}");
        }
    }
}
