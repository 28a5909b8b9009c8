//! Leadership among replicas of the control plane: one of them runs the scheduler and
//! the reconciler, and every write it makes as leader is fenced by its term.
//!
//! A [`Term`] is won with [`KvStore::campaign`]. On sled the store is locked by one
//! process, so the term is won at once and never lost. On etcd it is a key held by a
//! lease that the winner keeps alive; the key's create revision is the fencing token:
//! [`KvStore::transact_fenced`] adds "the leader key still has this create revision" to
//! the compares of its etcd Txn, so a replica whose lease expired (paused, partitioned,
//! slow) cannot write anything as leader afterwards. Calls it makes to node agents are
//! not fenced by etcd; the term ends locally one second before the lease could expire,
//! and the reconciler stops with it.

use super::{KvStore, Table, Txn};
use crate::error::{Error, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a leader's lease lasts without keep-alives: leadership moves to another
/// replica within about this long after the leader dies.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// One replica's time as leader.
#[derive(Debug)]
pub struct Term {
    /// The fencing token: the leader key's create revision on etcd (0 on sled, where no
    /// other process can write).
    pub revision: i64,
    /// Who holds it (the replica's name).
    pub holder: String,
    lost: tokio::sync::watch::Receiver<bool>,
    /// When the term ends unless its lease is renewed before (none: never).
    deadline: Option<Deadline>,
}

/// The time a term ends at unless renewed: moved on by whoever renews the lease, read by
/// whoever acts as leader (a process that was paused past it finds it passed at once,
/// before its keeper has run again).
#[derive(Debug, Clone)]
pub struct Deadline(Arc<std::sync::Mutex<Instant>>);

impl Deadline {
    /// A deadline at `at`.
    pub fn new(at: Instant) -> Self {
        Deadline(Arc::new(std::sync::Mutex::new(at)))
    }

    /// Moves it to `at`.
    pub fn renew(&self, at: Instant) {
        match self.0.lock() {
            Ok(mut d) => *d = at,
            Err(_) => tracing::warn!("a term's deadline lock is poisoned; it ends as it was"),
        }
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        self.0.lock().map(|d| Instant::now() >= *d).unwrap_or(true)
    }
}

impl Term {
    /// A term that `lost` ends (it is sent `true`, or dropped), or `deadline` when it
    /// passes first.
    pub fn new(
        revision: i64,
        holder: &str,
        lost: tokio::sync::watch::Receiver<bool>,
        deadline: Option<Deadline>,
    ) -> Self {
        Term {
            revision,
            holder: holder.to_string(),
            lost,
            deadline,
        }
    }

    /// Whether the term has ended.
    pub fn is_over(&self) -> bool {
        *self.lost.borrow()
            || self.lost.has_changed().is_err()
            || self.deadline.as_ref().is_some_and(Deadline::passed)
    }

    /// Waits until the term ends.
    pub async fn over(&self) {
        let mut lost = self.lost.clone();
        // An error means the keeper is gone, which ends the term too.
        if lost.wait_for(|l| *l).await.is_err() {
            tracing::debug!("the lease keeper stopped");
        }
    }

    /// An error if the term has ended.
    pub fn check(&self) -> Result<()> {
        if self.is_over() {
            Err(Error::Deposed(format!(
                "the term of {} (revision {}) is over",
                self.holder, self.revision
            )))
        } else {
            Ok(())
        }
    }
}

/// A store whose every transaction is fenced by `term`: what the leader writes through.
pub struct FencedKv {
    inner: Arc<dyn KvStore>,
    term: Arc<Term>,
}

impl FencedKv {
    /// `inner`, writing only while `term` lasts.
    pub fn new(inner: Arc<dyn KvStore>, term: Arc<Term>) -> Self {
        FencedKv { inner, term }
    }
}

impl KvStore for FencedKv {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(table, key)
    }

    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get_many(keys)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(table, prefix, after, limit)
    }

    fn transact(&self, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
        self.inner.transact_fenced(&self.term, f)
    }

    fn transact_fenced(&self, term: &Term, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
        self.inner.transact_fenced(term, f)
    }

    fn term_check(&self) -> Result<()> {
        self.term.check()
    }

    fn next_id_peek(&self) -> Result<u64> {
        self.inner.next_id_peek()
    }

    fn campaign(&self, candidate: &str) -> Result<Term> {
        self.inner.campaign(candidate)
    }

    fn watch_tables(&self, tables: &[Table], changed: super::Changed) -> Result<()> {
        self.inner.watch_tables(tables, changed)
    }

    fn batch_limit(&self) -> usize {
        self.inner.batch_limit()
    }

    fn reads_are_remote(&self) -> bool {
        self.inner.reads_are_remote()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_ends_at_its_deadline_before_its_keeper_says_so() {
        let (_keeper, lost) = tokio::sync::watch::channel(false);
        let deadline = Deadline::new(Instant::now() + Duration::from_secs(60));
        let term = Term::new(7, "a", lost, Some(deadline.clone()));
        assert!(term.check().is_ok());
        // As after a pause longer than the lease: the deadline is behind us.
        deadline.renew(Instant::now() - Duration::from_millis(1));
        assert!(term.is_over());
        assert!(matches!(term.check(), Err(Error::Deposed(_))));
        // Renewed (the keeper got an answer in time): it goes on.
        deadline.renew(Instant::now() + Duration::from_secs(60));
        assert!(!term.is_over());
    }
}
