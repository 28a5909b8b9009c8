//! One etcd transaction: its reads come from one snapshot, its writes are buffered, and
//! at its end one etcd Txn compares every key it read on its mod_revision (0: absent),
//! and the leader key when fenced, with the writes. A conflict runs it again.

use super::{on_resending, EtcdKv, Resend};
use crate::error::{Error, Result};
use crate::store::{Part, PartOutcome, Table, Term, Txn};
use etcd_client::{GetOptions, TxnOp};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many times a conflicting transaction runs before the caller gets a storage error.
pub(super) const MAX_ATTEMPTS: u32 = 64;
/// The first pause after a conflict; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// A key a transaction read: its mod_revision then (0: absent) and its value.
#[derive(Debug, Clone)]
pub(super) struct Read {
    pub(super) mod_revision: i64,
    pub(super) value: Option<Vec<u8>>,
}

/// One attempt of a transaction: reads from one snapshot, buffered writes.
struct EtcdTxn<'a> {
    kv: &'a EtcdKv,
    /// The revision every read of this attempt sees (set by its first read).
    snapshot: Cell<Option<i64>>,
    reads: RefCell<BTreeMap<Vec<u8>, Read>>,
    writes: RefCell<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// While a part runs: how to undo what it read and wrote (see [`EtcdTxn::run_part`]).
    undo: RefCell<Option<Vec<Undo>>>,
}

/// One step of a part, undone when the part fails or does not fit.
enum Undo {
    /// A key first read by the part.
    Read(Vec<u8>),
    /// A key the part wrote, and what the transaction had written there before.
    Write(Vec<u8>, Option<Option<Vec<u8>>>),
}

impl Txn for EtcdTxn<'_> {
    fn prefetch(&self, keys: &[(Table, &[u8])]) -> Result<()> {
        let wanted: Vec<Vec<u8>> = {
            let (reads, writes) = (self.reads.borrow(), self.writes.borrow());
            let mut seen = std::collections::BTreeSet::new();
            keys.iter()
                .map(|(t, k)| self.kv.key(*t, k))
                .filter(|k| !reads.contains_key(k) && !writes.contains_key(k))
                .filter(|k| seen.insert(k.clone()))
                .collect()
        };
        // Txns of reads at this transaction's snapshot (the first sets it), each within
        // etcd's default operations per Txn.
        for chunk in wanted.chunks(PART_OPS) {
            self.read_ahead(chunk)?;
        }
        Ok(())
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = self.kv.key(table, key);
        if let Some(w) = self.writes.borrow().get(&k) {
            return Ok(w.clone());
        }
        if let Some(r) = self.reads.borrow().get(&k) {
            return Ok(r.value.clone());
        }
        let (value, mod_revision, store_revision) = self.kv.read(k.clone(), self.snapshot.get())?;
        if self.snapshot.get().is_none() {
            self.snapshot.set(Some(store_revision));
        }
        self.note_read(
            k,
            Read {
                mod_revision,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    fn insert(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.note_write(self.kv.key(table, key), Some(value.to_vec()));
        Ok(())
    }

    fn remove(&self, table: Table, key: &[u8]) -> Result<()> {
        self.note_write(self.kv.key(table, key), None);
        Ok(())
    }

    fn next_id_after(&self, floor: u64) -> Result<u64> {
        self.kv.ids()?.next_after(floor)
    }
}

/// A pause of about `base`, jittered so that conflicting replicas do not retry in step.
fn jittered(base: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let ms = base.as_millis().max(1) as u64;
    base / 2 + Duration::from_millis(u64::from(nanos) % ms)
}

impl EtcdTxn<'_> {
    /// Reads `keys` in one Txn of gets, at this transaction's snapshot (the first read
    /// sets it).
    fn read_ahead(&self, keys: &[Vec<u8>]) -> Result<()> {
        let options = self
            .snapshot
            .get()
            .map(|r| GetOptions::new().with_revision(r));
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::get(k.clone(), options.clone()))
            .collect();
        let client = self.kv.kv_client();
        let resp = on_resending(&self.kv.handle, Resend::Read, move || {
            let (mut client, ops) = (client.clone(), ops.clone());
            async move { client.txn(etcd_client::Txn::new().and_then(ops)).await }
        })?;
        if self.snapshot.get().is_none() {
            self.snapshot.set(resp.header().map(|h| h.revision()));
        }
        let answers = resp.op_responses();
        if answers.len() != keys.len() {
            return Err(Error::Storage("etcd: a Txn of reads answered short".into()));
        }
        for (key, answer) in keys.iter().zip(answers) {
            let etcd_client::TxnOpResponse::Get(g) = answer else {
                return Err(Error::Storage(
                    "etcd: a read answered as another operation".into(),
                ));
            };
            let read = match g.kvs().first() {
                Some(kv) => Read {
                    mod_revision: kv.mod_revision(),
                    value: Some(kv.value().to_vec()),
                },
                None => Read {
                    mod_revision: 0,
                    value: None,
                },
            };
            self.note_read(key.clone(), read);
        }
        Ok(())
    }

    /// Keeps what a key read gave (and, while a part runs, how to forget it).
    fn note_read(&self, key: Vec<u8>, read: Read) {
        if let Some(undo) = self.undo.borrow_mut().as_mut() {
            undo.push(Undo::Read(key.clone()));
        }
        self.reads.borrow_mut().insert(key, read);
    }

    /// Buffers a write (and, while a part runs, what it replaced).
    fn note_write(&self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let before = self.writes.borrow_mut().insert(key.clone(), value);
        if let Some(undo) = self.undo.borrow_mut().as_mut() {
            undo.push(Undo::Write(key, before));
        }
    }

    fn new(kv: &EtcdKv) -> EtcdTxn<'_> {
        EtcdTxn {
            kv,
            snapshot: Cell::new(None),
            reads: RefCell::new(BTreeMap::new()),
            writes: RefCell::new(BTreeMap::new()),
            undo: RefCell::new(None),
        }
    }

    /// Commits its writes (none: its reads were one consistent snapshot); whether no key
    /// it read changed meanwhile, and the term, if any, still holds.
    fn commit(self, fence: Option<i64>) -> Result<bool> {
        let writes = self.writes.take();
        if writes.is_empty() {
            return Ok(true);
        }
        self.kv.commit(&self.reads.borrow(), writes, fence)
    }

    /// Runs `part` as a savepoint: when it fails, or leaves the transaction with more
    /// than [`PART_OPS`] compares or writes, what it read and wrote is undone, step by
    /// step (no copy of the transaction per part).
    fn run_part(&self, part: &Part, may_overflow: bool) -> Option<Result<()>> {
        *self.undo.borrow_mut() = Some(Vec::new());
        let result = part(self);
        let steps = self.undo.take();
        let fits = self.reads.borrow().len() < PART_OPS && self.writes.borrow().len() <= PART_OPS;
        if result.is_err() || !(fits || may_overflow) {
            let (mut reads, mut writes) = (self.reads.borrow_mut(), self.writes.borrow_mut());
            for step in steps.into_iter().flatten().rev() {
                match step {
                    Undo::Read(key) => {
                        reads.remove(&key);
                    }
                    Undo::Write(key, Some(before)) => {
                        writes.insert(key, before);
                    }
                    Undo::Write(key, None) => {
                        writes.remove(&key);
                    }
                }
            }
        }
        (fits || may_overflow).then_some(result)
    }
}

/// The compares (one is kept for a fence) and the writes of one Txn that groups parts:
/// etcd's default `--max-txn-ops`. A part alone may make more.
const PART_OPS: usize = 128;

impl EtcdKv {
    /// Runs `attempt` until it commits (`Some`), after conflicts (`None`) in turn with
    /// this replica's other conflicted transactions (one at a time), so that writers of
    /// one hot key (a tenant's quota) stop undoing each other's work; only conflicts
    /// with other replicas back off. A term, when given, is checked before each attempt
    /// and after each conflict.
    fn attempts<T>(
        &self,
        term: Option<&Term>,
        mut attempt: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let mut backoff = FIRST_BACKOFF;
        let mut turn = None;
        for _ in 0..MAX_ATTEMPTS {
            if let Some(t) = term {
                t.check()?;
            }
            if let Some(done) = attempt()? {
                return Ok(done);
            }
            if let Some(t) = term {
                self.check_fence(t)?;
            }
            if turn.is_none() {
                turn = Some(self.retries.lock().map_err(|_| {
                    Error::Storage("etcd: the retry turn's lock is poisoned".into())
                })?);
                continue;
            }
            std::thread::sleep(jittered(backoff));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Err(Error::Storage(format!(
            "etcd: a transaction still conflicted after {MAX_ATTEMPTS} attempts"
        )))
    }

    /// Runs a transaction (see [`KvStore::transact`]), fenced by `term` when given.
    pub(super) fn transact_with(
        &self,
        term: Option<&Term>,
        f: &dyn Fn(&dyn Txn) -> Result<()>,
    ) -> Result<()> {
        self.attempts(term, || {
            let txn = EtcdTxn::new(self);
            f(&txn)?;
            Ok(txn.commit(term.map(|t| t.revision))?.then_some(()))
        })
    }

    /// Runs `parts` in one transaction (see [`KvStore::transact_parts`]): `prefetch`
    /// read first in one round trip, then each part as a savepoint, until the Txn is full.
    pub(super) fn transact_parts_together(
        &self,
        prefetch: &[(Table, &[u8])],
        parts: &[&Part],
    ) -> Vec<PartOutcome> {
        let committed = self.attempts(None, || {
            let txn = EtcdTxn::new(self);
            txn.prefetch(prefetch)?;
            let mut outcomes = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                match txn.run_part(*part, i == 0) {
                    Some(result) => outcomes.push(PartOutcome::Done(result)),
                    None => break,
                }
            }
            outcomes.resize(parts.len(), PartOutcome::Left);
            Ok(txn.commit(None)?.then_some(outcomes))
        });
        match committed {
            Ok(outcomes) => outcomes,
            Err(e) => vec![PartOutcome::Done(Err(e)); parts.len()],
        }
    }

    /// An error when the leader key no longer has `term`'s create revision.
    fn check_fence(&self, term: &Term) -> Result<()> {
        let (client, key) = (self.kv_client(), self.leader_key());
        let resp = on_resending(&self.handle, Resend::Read, move || {
            let (mut client, key) = (client.clone(), key.clone());
            async move { client.get(key, None).await }
        })?;
        let now = resp.kvs().first().map(|kv| kv.create_revision());
        if now == Some(term.revision) {
            Ok(())
        } else {
            Err(Error::Deposed(format!(
                "the leader key of {} (revision {}) is gone",
                term.holder, term.revision
            )))
        }
    }
}
