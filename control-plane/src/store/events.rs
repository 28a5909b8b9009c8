//! The audit trail in the store: refusals recorded outside a mutation, and pages of
//! events (all, or one tenant's).

use super::keys::{self, decode, prefix};
use super::txn::write_event;
use super::{transact, Datastore, Table, VmFilter};
use crate::error::Result;
use crate::model::{Event, Outcome};

/// Events removed per transaction when the trail is pruned (two keys each, under
/// etcd's default of 128 operations per Txn).
const PRUNE_BATCH: usize = 60;

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

    /// Removes up to `limit` of the oldest events of the audit trail that happened before
    /// `cutoff` (RFC 3339 times compare as text), from the trail and from their tenant's;
    /// how many. Oldest first, stopping at the first that is recent enough (events are in
    /// the order of their ids, which follow time).
    pub fn prune_events_before(&self, cutoff: &str, limit: usize) -> Result<usize> {
        let page = self
            .kv
            .scan(Table::Events, b"", None, limit.min(PRUNE_BATCH))?;
        let old: Vec<(Vec<u8>, Option<String>)> = page
            .iter()
            .map(|(k, v)| Ok((k, decode::<Event>(v)?)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .take_while(|(_, e)| e.time.as_str() < cutoff)
            .map(|(k, e)| (k.clone(), e.tenant))
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        transact(&*self.kv, |txn| {
            for (key, tenant) in &old {
                txn.remove(Table::Events, key)?;
                if let Some(t) = tenant {
                    txn.remove(Table::TenantEvents, &keys::pair(t, key))?;
                }
            }
            Ok(())
        })?;
        Ok(old.len())
    }

    /// The sequence number after which the events visible through `filter` are new.
    /// For a tenant, its last event's (every later event of the tenant is numbered above
    /// it, whichever replica writes it); for all, the highest id the store may have
    /// given (on etcd, where replicas' clocks number events, an event committed later
    /// by a replica whose clock is behind may be numbered below it).
    pub fn event_horizon(&self, filter: VmFilter) -> Result<u64> {
        let peek = || Ok(self.kv.next_id_peek()?.saturating_sub(1));
        match filter {
            // A tenant with no floor yet (no event since floors were kept): its events
            // are all below what the store gives next.
            VmFilter::Tenant(t) => match super::txn::event_floor(&*self.kv, t)? {
                0 => peek(),
                floor => Ok(floor),
            },
            VmFilter::All => peek(),
        }
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
