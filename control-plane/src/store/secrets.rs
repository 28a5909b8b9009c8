//! Secrets every replica of a control plane must share (the token signing key, the
//! cluster CA), kept in the store's Meta table when the store is shared (etcd).
//!
//! They are kept as they are, not encrypted: whoever can read the store can already
//! read or rewrite every tenant's state, and a key to decrypt them would have to reach
//! every replica the same way as the store's own credentials. Protecting them is
//! etcd's job (client TLS and authentication, the members' disks), as Kubernetes keeps
//! its Secrets in etcd by default. On sled they stay in files under the data directory.

use super::keys::pair;
use super::{transact, Datastore, Table};
use crate::error::Result;
use std::cell::RefCell;

fn secret_key(name: &str) -> Vec<u8> {
    pair("secret", name.as_bytes())
}

impl Datastore {
    /// The shared secret `name`: the stored one, or, when there is none yet, the one
    /// `make` gives, stored in the same transaction (replicas starting at once agree on
    /// the first one written).
    pub fn shared_secret(&self, name: &str, make: impl Fn() -> Result<String>) -> Result<String> {
        let key = secret_key(name);
        if let Some(v) = self.kv.get(Table::Meta, &key)? {
            return Ok(String::from_utf8_lossy(&v).into_owned());
        }
        let made = RefCell::new(None);
        transact(&*self.kv, |txn| match txn.get(Table::Meta, &key)? {
            Some(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
            None => {
                let cached = made.borrow().clone();
                let value = match cached {
                    Some(v) => v,
                    None => {
                        let v = make()?;
                        *made.borrow_mut() = Some(v.clone());
                        v
                    }
                };
                txn.insert(Table::Meta, &key, value.as_bytes())?;
                Ok(value)
            }
        })
    }
}
