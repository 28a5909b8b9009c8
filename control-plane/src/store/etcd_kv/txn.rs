//! One etcd transaction: its reads come from one snapshot, its writes are buffered, and
//! at its end one etcd Txn compares every key it read on its mod_revision (0: absent),
//! and the leader key when fenced, with the writes. A conflict runs it again.

use super::{on_resending, EtcdKv, Resend};
use crate::error::{Error, Result};
use crate::store::{Table, Term, Txn};
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
        if wanted.is_empty() {
            return Ok(());
        }
        // One Txn of reads, at this transaction's snapshot (the first read sets it).
        let options = self
            .snapshot
            .get()
            .map(|r| GetOptions::new().with_revision(r));
        let ops: Vec<TxnOp> = wanted
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
        if answers.len() != wanted.len() {
            return Err(Error::Storage("etcd: a Txn of reads answered short".into()));
        }
        let mut reads = self.reads.borrow_mut();
        for (key, answer) in wanted.into_iter().zip(answers) {
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
            reads.insert(key, read);
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
        self.reads.borrow_mut().insert(
            k,
            Read {
                mod_revision,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    fn insert(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.writes
            .borrow_mut()
            .insert(self.kv.key(table, key), Some(value.to_vec()));
        Ok(())
    }

    fn remove(&self, table: Table, key: &[u8]) -> Result<()> {
        self.writes
            .borrow_mut()
            .insert(self.kv.key(table, key), None);
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

impl EtcdKv {
    /// Runs a transaction (see [`KvStore::transact`]), fenced by `term` when given.
    ///
    /// A transaction that conflicted runs again in turn with this replica's other
    /// conflicted ones (one at a time), so that writers of one hot key (a tenant's quota)
    /// stop undoing each other's work; only conflicts with other replicas back off.
    pub(super) fn transact_with(
        &self,
        term: Option<&Term>,
        f: &dyn Fn(&dyn Txn) -> Result<()>,
    ) -> Result<()> {
        let mut backoff = FIRST_BACKOFF;
        let mut turn = None;
        for _ in 0..MAX_ATTEMPTS {
            if let Some(t) = term {
                t.check()?;
            }
            let txn = EtcdTxn {
                kv: self,
                snapshot: Cell::new(None),
                reads: RefCell::new(BTreeMap::new()),
                writes: RefCell::new(BTreeMap::new()),
            };
            f(&txn)?;
            let writes = txn.writes.take();
            if writes.is_empty() {
                // Read-only: its reads were one consistent snapshot.
                return Ok(());
            }
            if self.commit(&txn.reads.borrow(), writes, term.map(|t| t.revision))? {
                return Ok(());
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
