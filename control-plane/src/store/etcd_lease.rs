//! Leadership and change notices on etcd (see `leadership` for what they promise): a
//! leader key held by a lease this replica keeps alive, and watches of table prefixes.

use super::etcd_kv::storage;
use super::leadership::{Deadline, Term, LEASE_TTL};
use super::{Change, Changed, Table};
use crate::error::Result;
use etcd_client::{Client, Compare, CompareOp, PutOptions, TxnOp, WatchOptions};
use std::time::{Duration, Instant};

/// How often a replica that does not lead looks whether the leader key is gone.
const CANDIDATE_POLL: Duration = Duration::from_millis(250);
/// A term ends locally this long before its lease could expire at etcd.
const SAFETY_MARGIN: Duration = Duration::from_secs(1);
/// How often the keeper checks its deadline.
const KEEPER_TICK: Duration = Duration::from_millis(250);
/// How long a watch that failed waits before it starts again.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// Waits until `candidate` holds `key` under a new lease, then keeps the lease alive in
/// the background until it cannot (the term then ends).
pub(super) async fn campaign(mut client: Client, key: Vec<u8>, candidate: String) -> Result<Term> {
    let ttl = i64::try_from(LEASE_TTL.as_secs()).unwrap_or(5);
    loop {
        let held = client.get(key.clone(), None).await.map_err(storage)?;
        if held.kvs().is_empty() {
            let lease = client.lease_grant(ttl, None).await.map_err(storage)?.id();
            let granted = Instant::now();
            let txn = etcd_client::Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    candidate.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let resp = client.txn(txn).await.map_err(storage)?;
            if resp.succeeded() {
                let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                let (tx, rx) = tokio::sync::watch::channel(false);
                let held = Held {
                    key: key.clone(),
                    revision,
                    lease,
                };
                let deadline = Deadline::new(granted + (LEASE_TTL - SAFETY_MARGIN));
                tokio::spawn(keep_alive(
                    client.clone(),
                    held,
                    granted,
                    deadline.clone(),
                    tx,
                ));
                tracing::info!(%candidate, revision, "leading: won the leader key");
                return Ok(Term::new(revision, &candidate, rx, Some(deadline)));
            }
            // Another replica won: its lease, not ours, holds the key.
            if let Err(e) = client.lease_revoke(lease).await {
                tracing::debug!(error = %e, "revoking an unused lease (it expires anyway)");
            }
        }
        tokio::time::sleep(CANDIDATE_POLL).await;
    }
}

/// A leader key as won: the key, its create revision and the lease holding it.
struct Held {
    key: Vec<u8>,
    revision: i64,
    lease: i64,
}

/// Whether the leader key still is the one won (not deleted, not won again by another).
async fn still_held(client: &mut Client, held: &Held) -> Result<bool> {
    let now = client.get(held.key.clone(), None).await.map_err(storage)?;
    Ok(now.kvs().first().map(|kv| kv.create_revision()) == Some(held.revision))
}

/// Keeps the lease alive (every third of its TTL) and sends `true` on `lost` when it was
/// not renewed for the TTL less a safety margin, etcd says it is gone, or the leader key
/// it held is no longer the one won.
async fn keep_alive(
    mut client: Client,
    held: Held,
    granted: Instant,
    deadline: Deadline,
    lost: tokio::sync::watch::Sender<bool>,
) {
    let lease = held.lease;
    let deadline_after = LEASE_TTL - SAFETY_MARGIN;
    let mut acked = granted;
    let mut channel = None;
    let mut last_sent = Instant::now() - LEASE_TTL;
    loop {
        if acked.elapsed() >= deadline_after || lost.is_closed() {
            break;
        }
        if last_sent.elapsed() >= LEASE_TTL / 3 {
            if channel.is_none() {
                match client.lease_keep_alive(lease).await {
                    Ok(pair) => {
                        // Opening the stream renewed the lease once.
                        acked = Instant::now();
                        deadline.renew(acked + deadline_after);
                        last_sent = acked;
                        channel = Some(pair);
                        continue;
                    }
                    Err(etcd_client::Error::LeaseKeepAliveError(e)) => {
                        tracing::warn!(error = %e, "the leader's lease is gone");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the leader's lease");
                        last_sent = Instant::now() - LEASE_TTL;
                    }
                }
            }
            if let Some((keeper, stream)) = channel.as_mut() {
                let sent = Instant::now();
                last_sent = sent;
                let answer = match keeper.keep_alive().await {
                    Ok(()) => tokio::time::timeout(SAFETY_MARGIN, stream.message()).await,
                    Err(e) => Ok(Err(e)),
                };
                match answer {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => match still_held(&mut client, &held).await {
                        Ok(true) => {
                            acked = sent;
                            deadline.renew(acked + deadline_after);
                        }
                        Ok(false) => {
                            tracing::warn!("the leader key is gone or another's");
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "reading the leader key"),
                    },
                    Ok(Ok(Some(_))) => {
                        tracing::warn!("the leader's lease expired");
                        break;
                    }
                    other => {
                        tracing::warn!(answer = ?other.map(|r| r.map(drop)), "renewing the leader's lease; reopening");
                        channel = None;
                        // Reopen at the next tick (on another member, if this one died).
                        last_sent = Instant::now() - LEASE_TTL;
                    }
                }
            }
        }
        tokio::time::sleep(KEEPER_TICK).await;
    }
    tracing::warn!("leadership ends");
    if lost.send(true).is_err() {
        tracing::debug!("nobody held the term any more");
    }
    // Let another replica take over now rather than at the lease's expiry.
    if let Err(e) = client.lease_revoke(lease).await {
        tracing::debug!(error = %e, "revoking the old lease");
    }
}

/// Calls `changed` with every change under each table's prefix (its key within the table),
/// and with [`Change::Missed`] once each watch is in place (what was read before it may be
/// stale) and when one ended, for as long as the client lives.
pub(super) fn watch_prefixes(
    runtime: &tokio::runtime::Handle,
    client: &Client,
    prefixes: Vec<(Table, Vec<u8>)>,
    changed: Changed,
) {
    for (table, prefix) in prefixes {
        let (mut client, changed) = (client.clone(), changed.clone());
        runtime.spawn(async move {
            loop {
                let options = WatchOptions::new().with_prefix();
                match client.watch(prefix.clone(), Some(options)).await {
                    Ok(mut stream) => loop {
                        match stream.message().await {
                            Ok(Some(r)) if r.canceled() => break,
                            Ok(Some(r)) => {
                                // From here on no change is missed; whoever read
                                // everything before this may have missed some.
                                if r.created() {
                                    changed(Change::Missed);
                                }
                                for kv in r.events().iter().filter_map(|e| e.kv()) {
                                    if let Some(key) = kv.key().strip_prefix(prefix.as_slice()) {
                                        changed(Change::Key(table, key.to_vec()));
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "a watch of the store ended");
                                break;
                            }
                        }
                    },
                    Err(e) => tracing::debug!(error = %e, "watching the store"),
                }
                changed(Change::Missed);
                tokio::time::sleep(WATCH_RETRY).await;
            }
        });
    }
}
