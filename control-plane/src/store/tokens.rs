//! Issued tokens (listed, never the token itself) and revocations.

use super::keys::{decode, encode};
use super::transact;
use super::txn::{append_event, get_record, unix_now};
use super::{Datastore, Table, Txn};
use crate::error::{Error, Result};
use crate::model::{now, Tenant, TokenRecord};
use serde::{Deserialize, Serialize};

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
pub(super) fn revoke_in(txn: &dyn Txn, by: &str, jti: &str) -> Result<Option<TokenRecord>> {
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

/// Lists a token inside a transaction.
pub(super) fn record_in(txn: &dyn Txn, rec: &TokenRecord) -> Result<()> {
    txn.insert(Table::Tokens, rec.jti.as_bytes(), &encode(rec)?)
}

impl Datastore {
    /// Lists a token that was just issued (by `actor`, audited).
    pub fn record_token(&self, actor: &str, rec: &TokenRecord) -> Result<()> {
        transact(&*self.kv, |txn| {
            record_in(txn, rec)?;
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

    /// What authentication asks of the store, in one read: whether token `jti` was
    /// revoked and, for a tenant's token, the tenant (`None`: it does not exist).
    pub fn token_standing(
        &self,
        jti: &str,
        tenant: Option<&str>,
    ) -> Result<(bool, Option<Tenant>)> {
        let mut keys: Vec<(Table, &[u8])> = vec![(Table::Revocations, jti.as_bytes())];
        if let Some(t) = tenant {
            keys.push((Table::Tenants, t.as_bytes()));
        }
        let found = self.kv.get_many(&keys)?;
        let revoked = found.first().is_some_and(Option::is_some);
        let record = found
            .get(1)
            .cloned()
            .flatten()
            .map(|b| decode(&b))
            .transpose()?;
        Ok((revoked, record))
    }

    /// Whether token `jti` was revoked.
    pub fn is_revoked(&self, jti: &str) -> Result<bool> {
        Ok(self.kv.get(Table::Revocations, jti.as_bytes())?.is_some())
    }

    /// The ids of every revoked token.
    pub fn revoked_tokens(&self) -> Result<Vec<String>> {
        Ok(self
            .kv
            .scan(Table::Revocations, b"", None, usize::MAX)?
            .into_iter()
            .map(|(jti, _)| String::from_utf8_lossy(&jti).into_owned())
            .collect())
    }
}
