//! The audit trail in the store: refusals recorded outside a mutation, and pages of
//! events (all, or one tenant's).

use super::keys::{self, decode, prefix};
use super::txn::write_event;
use super::{transact, Datastore, Table, VmFilter};
use crate::error::Result;
use crate::model::{Event, Outcome};

impl Datastore {
    /// Records in the audit trail what happened outside a mutation: a refusal (policy,
    /// quota, precondition; `Denied`, with why) or an access that changed nothing stored
    /// (an exec, a console session; `Success`, with what happened).
    pub fn record_outcome(
        &self,
        actor: &str,
        tenant: Option<&str>,
        action: &str,
        resource: &str,
        outcome: Outcome,
        detail: &str,
    ) -> Result<()> {
        transact(&*self.kv, |txn| {
            write_event(txn, actor, tenant, action, resource, outcome, Some(detail))
        })
    }

    /// A page of the audit trail visible through `filter`, oldest first.
    pub fn list_events(
        &self,
        filter: VmFilter,
        page_token: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<String>)> {
        let after = page_token.map(keys::parse_page_token).transpose()?;
        let seqs: Vec<Vec<u8>> = match filter {
            VmFilter::All => self
                .kv
                .scan(Table::Events, b"", after.as_deref(), limit)?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            VmFilter::Tenant(t) => {
                let p = prefix(t);
                self.kv
                    .scan(Table::TenantEvents, &p, after.as_deref(), limit)?
                    .into_iter()
                    .map(|(k, _)| k[p.len()..].to_vec())
                    .collect()
            }
        };
        let mut events = Vec::with_capacity(seqs.len());
        for s in &seqs {
            if let Some(b) = self.kv.get(Table::Events, s)? {
                events.push(decode::<Event>(&b)?);
            }
        }
        let next = (seqs.len() == limit)
            .then(|| seqs.last().map(|k| keys::page_token(k)))
            .flatten();
        Ok((events, next))
    }
}
