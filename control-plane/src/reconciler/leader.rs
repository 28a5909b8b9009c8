//! The leader's loop: campaign, then reconcile on a fenced store until the term ends;
//! each pass reads what changed since the last (the store's watch says what), with a full
//! pass at the start of a term and at each resync; the audit trail is pruned on the way.

use super::fleet::{Changes, WATCHED};
use super::{HttpNodes, NodeConnector, Reconciler, ReconcilerConfig};
use crate::metrics::Metrics;
use crate::store::Datastore;
use std::sync::{Arc, Mutex};

/// How often the leader prunes the audit trail.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Batches of events pruned at most each time (the rest waits for the next time).
const PRUNE_ROUNDS: usize = 50;

/// Wakes the reconciler at once (a change it should act on was stored), instead of at its
/// next interval. Wakes given while it is busy are kept: it passes again when it is done.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<tokio::sync::Notify>);

impl Wake {
    /// Asks for a pass now.
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// Starts the leader's work on its own thread: it campaigns as `replica` for leadership
/// (at once on sled; see `store::leadership`), and while it leads runs the reconciler with
/// every write fenced by its term, woken by `wake`, by the changes any replica stores to
/// VMs, observations, module requests and heartbeat reports (which it passes over), and by
/// its interval. When the term ends the reconciler stops
/// and the replica campaigns again; a new term starts a new reconciler, which gives nodes
/// a heartbeat timeout of grace before it calls any NotReady.
pub fn spawn(
    store: Datastore,
    nodes: HttpNodes,
    metrics: Metrics,
    config: ReconcilerConfig,
    wake: Wake,
    replica: String,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reconciler".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "reconciler runtime; the reconciler does not run");
                    return;
                }
            };
            let watching = match watch_changes(&store, &wake) {
                Ok(noted) => Some(noted),
                Err(e) => {
                    tracing::warn!(error = %e, "watching the store; every pass of the reconciler reads everything, on its interval");
                    None
                }
            };
            loop {
                let term = match store.campaign(&replica) {
                    Ok(t) => Arc::new(t),
                    Err(e) => {
                        tracing::warn!(error = %e, "campaigning for leadership; trying again");
                        std::thread::sleep(config.interval);
                        continue;
                    }
                };
                metrics.set_leader(true);
                let mut r =
                    Reconciler::new(store.fenced(term.clone()), nodes.clone(), config.clone())
                        .with_metrics(metrics.clone())
                        .with_wake(wake.clone());
                if let Some(changes) = &watching {
                    r = r.with_changes(changes.clone());
                }
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async {
                    tokio::select! {
                        () = r.run() => {}
                        () = term.over() => {}
                    }
                });
                metrics.set_leader(false);
                tracing::warn!(%replica, "no longer the leader: the reconciler stops and campaigns again");
            }
        })
        .map(drop)
}

/// Watches the tables the reconciler follows ([`WATCHED`]) in `store`: each change is
/// noted in the set returned (what [`Reconciler::with_changes`] takes) and wakes `wake`.
pub fn watch_changes(store: &Datastore, wake: &Wake) -> crate::Result<Arc<Mutex<Changes>>> {
    let (woken, noted) = (wake.clone(), Arc::new(Mutex::new(Changes::default())));
    let to_note = noted.clone();
    let changed: crate::store::Changed = Arc::new(move |change| {
        match to_note.lock() {
            Ok(mut c) => c.note(change),
            Err(_) => tracing::error!("the reconciler's change set is poisoned"),
        }
        woken.now();
    });
    store.watch_tables(&WATCHED, changed)?;
    Ok(noted)
}

impl<C: NodeConnector> Reconciler<C> {
    /// Passes forever: `interval` apart, or at once when woken (a stored change, an action
    /// that completed); a full pass first and each `resync` (or after changes were
    /// missed), in between over what changed (when it is told, [`Reconciler::with_changes`]).
    /// Must run inside a `LocalSet`.
    pub async fn run(self) {
        let mut pruned = std::time::Instant::now();
        let mut resynced: Option<std::time::Instant> = None;
        loop {
            let started = std::time::Instant::now();
            let changes = match &self.changes {
                Some(c) => match c.lock() {
                    Ok(mut c) => Some(std::mem::take(&mut *c)),
                    Err(_) => None,
                },
                None => None,
            };
            let resync_due = resynced.is_none_or(|t| t.elapsed() >= self.config.resync);
            let passed = match changes {
                Some(c) if !c.missed && !resync_due => self.pass_changes(c),
                _ => {
                    resynced = Some(started);
                    self.pass()
                }
            };
            if let Err(e) = passed {
                tracing::warn!(error = %e, "reconcile pass failed");
                // What it took of the changes is lost with it: the next pass reads all.
                resynced = None;
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = std::time::Instant::now();
                if let Err(e) = self.prune_events() {
                    tracing::warn!(error = %e, "pruning the audit trail failed");
                }
            }
            if let Some(m) = &self.metrics {
                m.pass(started.elapsed());
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => {}
                () = self.wake.0.notified() => {}
            }
        }
    }

    /// Removes the events older than the retention from the audit trail (a bounded
    /// number each time).
    pub fn prune_events(&self) -> crate::Result<usize> {
        let Some(keep) = self.config.event_retention else {
            return Ok(0);
        };
        let since = time::Duration::try_from(keep).ok();
        let Some(cutoff) = since.and_then(|d| time::OffsetDateTime::now_utc().checked_sub(d))
        else {
            // Longer than time goes back: nothing is that old.
            return Ok(0);
        };
        let cutoff = cutoff
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| crate::Error::Storage(format!("the retention's cutoff: {e}")))?;
        let mut removed = 0;
        for _ in 0..PRUNE_ROUNDS {
            let n = self.store.prune_events_before(&cutoff, usize::MAX)?;
            removed += n;
            if n == 0 {
                break;
            }
        }
        if removed > 0 {
            tracing::info!(removed, %cutoff, "audit events past their retention removed");
        }
        Ok(removed)
    }
}
