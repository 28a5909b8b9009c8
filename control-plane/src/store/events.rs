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

    /// A page of the audit trail visible through `filter`, oldest first: up to `limit`
    /// events after `after` (a page token's key) about `resource` (or anything under it)
    /// when given. Returns the events and, when more may follow, the next page's token.
    pub fn list_events(
        &self,
        filter: VmFilter,
        after: Option<Vec<u8>>,
        limit: usize,
        resource: Option<&str>,
    ) -> Result<(Vec<Event>, Option<String>)> {
        let wanted = |e: &Event| {
            resource.is_none_or(|r| {
                e.resource == r
                    || e.resource
                        .strip_prefix(r)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        };
        // Filtered pages scan in batches; without a filter one batch is the page.
        let batch = if resource.is_some() {
            limit.max(512)
        } else {
            limit
        };
        let mut cursor = after;
        let mut events = Vec::with_capacity(limit.min(1024));
        loop {
            let seqs = self.event_keys(&filter, cursor.as_deref(), batch)?;
            let exhausted = seqs.len() < batch;
            for s in &seqs {
                cursor = Some(s.clone());
                if let Some(b) = self.kv.get(Table::Events, s)? {
                    let event = decode::<Event>(&b)?;
                    if wanted(&event) {
                        events.push(event);
                        if events.len() == limit {
                            let next = cursor.as_deref().map(keys::page_token);
                            return Ok((events, next));
                        }
                    }
                }
            }
            if exhausted {
                return Ok((events, None));
            }
        }
    }

    /// The highest sequence number an event may have now: events after it are new.
    pub fn event_horizon(&self) -> Result<u64> {
        Ok(self.kv.next_id_peek()?.saturating_sub(1))
    }

    /// Up to `limit` event keys visible through `filter`, after `after`.
    fn event_keys(
        &self,
        filter: &VmFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        Ok(match filter {
            VmFilter::All => self
                .kv
                .scan(Table::Events, b"", after, limit)?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            VmFilter::Tenant(t) => {
                let p = prefix(t);
                self.kv
                    .scan(Table::TenantEvents, &p, after, limit)?
                    .into_iter()
                    .map(|(k, _)| k[p.len()..].to_vec())
                    .collect()
            }
        })
    }
}
