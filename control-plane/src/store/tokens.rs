//! Issued tokens (listed, never the token itself), revocations, and the binding of a node
//! name to one node credential.

use super::keys::{decode, encode};
use super::transact;
use super::txn::{append_event, get_record, unix_now};
use super::{Datastore, Table, Txn};
use crate::error::{Error, Result};
use crate::model::{now, Node, NodeState, RegisterNode, TokenRecord};
use serde::{Deserialize, Serialize};

/// Who is registering a node, which decides whether an existing name may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registrant<'a> {
    /// A bootstrap token: only a name not yet bound.
    Bootstrap,
    /// The node itself, with the credential (`jti`) it was issued.
    Node {
        /// The jti of the token presented.
        jti: &'a str,
    },
    /// An admin: any name (re-binding it to a new credential).
    Admin {
        /// The admin's subject, for the audit trail.
        sub: &'a str,
    },
}

/// A revoked token, kept until it would have expired anyway.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Revocation {
    revoked_at: String,
    by: String,
    /// Its `exp` if it was listed (0: unknown, kept for good).
    exp: u64,
}

/// A record's `exp` as seconds since the epoch.
fn expires_unix(rec: &TokenRecord) -> u64 {
    time::OffsetDateTime::parse(
        &rec.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
    .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
    .unwrap_or(u64::MAX)
}

/// Revokes `jti` inside a transaction (its record, if listed, says when).
fn revoke_in(txn: &dyn Txn, by: &str, jti: &str) -> Result<Option<TokenRecord>> {
    let at = now();
    let mut rec: Option<TokenRecord> = get_record(txn, Table::Tokens, jti.as_bytes())?;
    if let Some(r) = rec.as_mut() {
        if r.revoked_at.is_none() {
            r.revoked_at = Some(at.clone());
            txn.insert(Table::Tokens, jti.as_bytes(), &encode(r)?)?;
        }
    }
    if txn.get(Table::Revocations, jti.as_bytes())?.is_none() {
        let revocation = Revocation {
            revoked_at: at,
            by: by.to_string(),
            exp: rec.as_ref().map_or(0, expires_unix),
        };
        txn.insert(Table::Revocations, jti.as_bytes(), &encode(&revocation)?)?;
    }
    Ok(rec)
}

impl Datastore {
    /// Lists a token that was just issued (by `actor`, audited).
    pub fn record_token(&self, actor: &str, rec: &TokenRecord) -> Result<()> {
        transact(&*self.kv, |txn| {
            txn.insert(Table::Tokens, rec.jti.as_bytes(), &encode(rec)?)?;
            append_event(
                txn,
                actor,
                rec.tenant.as_deref(),
                "token.issue",
                &format!("tokens/{}", rec.jti),
            )
        })
    }

    /// Every listed token that has not expired and that `visible` admits, oldest first.
    pub fn list_tokens(&self, visible: impl Fn(&TokenRecord) -> bool) -> Result<Vec<TokenRecord>> {
        let now = unix_now();
        let mut out: Vec<TokenRecord> = self
            .kv
            .scan(Table::Tokens, b"", None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode::<TokenRecord>(v))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|r| expires_unix(r) > now && visible(r))
            .collect();
        out.sort_by(|a, b| a.issued_at.cmp(&b.issued_at).then(a.jti.cmp(&b.jti)));
        Ok(out)
    }

    /// Revokes token `jti` if `may` admits its record (an unlisted jti is `None`); a token
    /// `may` refuses is not found. Revoking twice changes nothing more.
    pub fn revoke_token(
        &self,
        actor: &str,
        tenant: Option<&str>,
        jti: &str,
        may: impl Fn(Option<&TokenRecord>) -> bool,
    ) -> Result<()> {
        transact(&*self.kv, |txn| {
            let rec: Option<TokenRecord> = get_record(txn, Table::Tokens, jti.as_bytes())?;
            if !may(rec.as_ref()) {
                return Err(Error::not_found("token", jti));
            }
            revoke_in(txn, actor, jti)?;
            append_event(txn, actor, tenant, "token.revoke", &format!("tokens/{jti}"))
        })
    }

    /// Whether token `jti` was revoked.
    pub fn is_revoked(&self, jti: &str) -> Result<bool> {
        Ok(self.kv.get(Table::Revocations, jti.as_bytes())?.is_some())
    }

    /// Registers a node with a new credential (listed as `credential`), in one
    /// transaction. A name is bound to its node's credential at first registration: taking
    /// it again needs that credential or an admin (a bootstrap token gets 409), and the
    /// credential it replaces is revoked.
    pub fn register_node(
        &self,
        reg: &RegisterNode,
        by: Registrant,
        credential: &TokenRecord,
    ) -> Result<Node> {
        transact(&*self.kv, |txn| {
            let time = now();
            let prev: Option<Node> = get_record(txn, Table::Nodes, reg.name.as_bytes())?;
            let actor = match (&prev, by) {
                (None, Registrant::Node { .. }) => {
                    return Err(Error::not_found("node", &reg.name));
                }
                (Some(_), Registrant::Bootstrap) => {
                    return Err(Error::Conflict(format!(
                        "node name {} is already registered: re-register with that node's own credential, or as an admin, or delete the node first",
                        reg.name
                    )));
                }
                (Some(p), Registrant::Node { jti }) if p.credential_jti.as_deref() != Some(jti) => {
                    return Err(Error::Unauthenticated(format!(
                        "this credential of node {} was replaced",
                        reg.name
                    )));
                }
                (_, Registrant::Admin { sub }) => sub.to_string(),
                (_, _) => format!("node:{}", reg.name),
            };
            if let Some(old) = prev.as_ref().and_then(|p| p.credential_jti.as_deref()) {
                revoke_in(txn, &actor, old)?;
            }
            txn.insert(
                Table::Tokens,
                credential.jti.as_bytes(),
                &encode(credential)?,
            )?;
            let node = Node {
                name: reg.name.clone(),
                address: reg.address.clone(),
                capacity: reg.capacity,
                allocated: prev.as_ref().map(|p| p.allocated).unwrap_or_default(),
                driver: reg.driver.clone(),
                hardware_virtualization: reg.hardware_virtualization,
                kernel_release: reg.kernel_release.clone(),
                state: NodeState::Ready,
                cordoned: prev.as_ref().is_some_and(|p| p.cordoned),
                last_heartbeat: time.clone(),
                last_heartbeat_unix: unix_now(),
                registered_at: prev.map(|p| p.registered_at).unwrap_or(time),
                credential_jti: Some(credential.jti.clone()),
            };
            super::nodes::put_node(txn, &node)?;
            append_event(
                txn,
                &actor,
                None,
                "node.register",
                &format!("nodes/{}", reg.name),
            )?;
            Ok(node)
        })
    }

    /// Deletes node `name` (admin) once nothing is placed on it, revoking its credential.
    pub fn delete_node(&self, actor: &str, name: &str) -> Result<()> {
        transact(&*self.kv, |txn| {
            let node: Node = get_record(txn, Table::Nodes, name.as_bytes())?
                .ok_or_else(|| Error::not_found("node", name))?;
            if node.allocated.vcpus > 0 || node.allocated.memory_mib > 0 {
                return Err(Error::Conflict(format!(
                    "node {name} still holds VMs ({} vCPUs, {} MiB): drain it first",
                    node.allocated.vcpus, node.allocated.memory_mib
                )));
            }
            if let Some(jti) = node.credential_jti.as_deref() {
                revoke_in(txn, actor, jti)?;
            }
            txn.remove(Table::Nodes, name.as_bytes())?;
            txn.remove(Table::NodeReports, name.as_bytes())?;
            append_event(txn, actor, None, "node.delete", &format!("nodes/{name}"))
        })
    }
}
