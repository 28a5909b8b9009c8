//! A store that reports how long each of its operations takes (the store's latency as
//! this replica sees it, on `/metrics`).

use super::{Changed, KvStore, Part, PartOutcome, Table, Term, Txn};
use crate::error::Result;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Instant;

/// `inner`, timing each get, scan and transaction into `metrics`.
pub struct TimedKv {
    inner: Arc<dyn KvStore>,
    metrics: Metrics,
}

impl TimedKv {
    /// Times `inner`'s operations into `metrics`.
    pub fn new(inner: Arc<dyn KvStore>, metrics: Metrics) -> Self {
        TimedKv { inner, metrics }
    }

    fn timed<T>(&self, op: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.metrics.store_operation(op, start.elapsed());
        out
    }
}

impl KvStore for TimedKv {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.timed("get", || self.inner.get(table, key))
    }

    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>> {
        self.timed("get", || self.inner.get_many(keys))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.timed("scan", || self.inner.scan(table, prefix, after, limit))
    }

    fn transact(&self, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
        self.timed("transact", || self.inner.transact(f))
    }

    fn transact_fenced(&self, term: &Term, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
        self.timed("transact", || self.inner.transact_fenced(term, f))
    }

    fn commits_in_groups(&self) -> bool {
        self.inner.commits_in_groups()
    }

    fn reads_are_remote(&self) -> bool {
        self.inner.reads_are_remote()
    }

    fn transact_parts(&self, prefetch: &[(Table, &[u8])], parts: &[&Part]) -> Vec<PartOutcome> {
        self.timed("transact", || self.inner.transact_parts(prefetch, parts))
    }

    fn term_check(&self) -> Result<()> {
        self.inner.term_check()
    }

    fn next_id_peek(&self) -> Result<u64> {
        self.inner.next_id_peek()
    }

    fn campaign(&self, candidate: &str) -> Result<Term> {
        self.inner.campaign(candidate)
    }

    fn watch_tables(&self, tables: &[Table], changed: Changed) -> Result<()> {
        self.inner.watch_tables(tables, changed)
    }

    fn batch_limit(&self) -> usize {
        self.inner.batch_limit()
    }
}
