//! [`KvStore`] on sled: one tree per [`Table`], transactions over all trees, a flush
//! before a transaction returns.

use super::meta::{decode_id, schema_is_ours, NEXT_ID_KEY, SCHEMA_KEY, SCHEMA_VERSION};
use super::{Change, Changed, KvStore, Table, Term, Txn};
use crate::error::{Error, Result};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;
use std::cell::Cell;
use std::ops::Bound;
use std::path::Path;

/// A sled database holding every table.
pub struct SledKv {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// Ends no term: one process holds the database, so it always leads.
    terms: tokio::sync::watch::Sender<bool>,
}

impl SledKv {
    /// Opens (or creates) the database in `dir` and checks its schema version.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<sled::Result<Vec<_>>>()?;
        let kv = SledKv {
            db,
            trees,
            terms: tokio::sync::watch::channel(false).0,
        };
        kv.check_schema()?;
        kv.seed_id_counter()?;
        Ok(kv)
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        &self.trees[table.index()]
    }

    /// A store written before the id counter existed starts it after its last event
    /// (whose sequence numbers came from sled's generator), so ids keep rising.
    fn seed_id_counter(&self) -> Result<()> {
        let meta = self.tree(Table::Meta);
        if meta.get(NEXT_ID_KEY)?.is_some() {
            return Ok(());
        }
        let after_last = match self.tree(Table::Events).last()? {
            Some((k, _)) => decode_id(&k)?.saturating_add(1),
            None => 1,
        };
        meta.insert(NEXT_ID_KEY, &after_last.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn check_schema(&self) -> Result<()> {
        let meta = self.tree(Table::Meta);
        match meta.get(SCHEMA_KEY)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
                Ok(())
            }
            Some(v) => schema_is_ours(&v),
        }
    }
}

/// The view of one sled transaction; remembers whether sled reported a conflict so the
/// transaction is retried rather than aborted.
struct SledTxn<'a> {
    trees: &'a [TransactionalTree],
    conflicted: Cell<bool>,
}

impl SledTxn<'_> {
    fn lift<T>(&self, r: std::result::Result<T, UnabortableTransactionError>) -> Result<T> {
        r.map_err(|e| {
            if matches!(e, UnabortableTransactionError::Conflict) {
                self.conflicted.set(true);
            }
            Error::Storage(e.to_string())
        })
    }
}

impl Txn for SledTxn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.lift(self.trees[table.index()].get(key))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn insert(&self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.lift(self.trees[table.index()].insert(key, value))
            .map(drop)
    }

    fn remove(&self, table: Table, key: &[u8]) -> Result<()> {
        self.lift(self.trees[table.index()].remove(key)).map(drop)
    }

    fn next_id_after(&self, floor: u64) -> Result<u64> {
        // A counter in the meta table, moved in the transaction that uses it: ids follow
        // each other across restarts (sled's own generator skips a million after one).
        let meta = &self.trees[Table::Meta.index()];
        let next = match self.lift(meta.get(NEXT_ID_KEY))? {
            Some(v) => decode_id(&v)?,
            None => 1,
        }
        .max(floor.saturating_add(1));
        self.lift(meta.insert(NEXT_ID_KEY, &next.saturating_add(1).to_be_bytes()))?;
        Ok(next)
    }
}

impl KvStore for SledKv {
    fn transact_fenced(&self, term: &Term, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
        term.check()?;
        self.transact(f)
    }

    fn campaign(&self, candidate: &str) -> Result<Term> {
        Ok(Term::new(0, candidate, self.terms.subscribe(), None))
    }

    fn watch_tables(&self, tables: &[Table], changed: Changed) -> Result<()> {
        for table in tables {
            let events = self.tree(*table).watch_prefix(Vec::new());
            let (changed, table) = (changed.clone(), *table);
            std::thread::Builder::new()
                .name(format!("watch-{}", table.name()))
                .spawn(move || {
                    // Ends when the database is closed.
                    for event in events {
                        let key = match &event {
                            sled::Event::Insert { key, .. } | sled::Event::Remove { key } => key,
                        };
                        changed(Change::Key(table, key.to_vec()));
                    }
                })
                .map_err(|e| Error::Storage(format!("a thread to watch the store: {e}")))?;
        }
        Ok(())
    }

    fn next_id_peek(&self) -> Result<u64> {
        match self.tree(Table::Meta).get(NEXT_ID_KEY)? {
            Some(v) => decode_id(&v),
            None => Ok(1),
        }
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(table).get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = match after {
            Some(a) => {
                let mut k = prefix.to_vec();
                k.extend_from_slice(a);
                Bound::Excluded(k)
            }
            None => Bound::Included(prefix.to_vec()),
        };
        let mut out = Vec::new();
        for entry in self
            .tree(table)
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            let (k, v) = entry?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn transact(&self, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
        let result = self.trees.as_slice().transaction(|trees| {
            let txn = SledTxn {
                trees,
                conflicted: Cell::new(false),
            };
            match f(&txn) {
                Ok(()) => Ok(()),
                Err(_) if txn.conflicted.get() => Err(ConflictableTransactionError::Conflict),
                Err(e) => Err(ConflictableTransactionError::Abort(e)),
            }
        });
        match result {
            Ok(()) => {
                self.db.flush()?;
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(kv: &SledKv, n: usize) -> Vec<u64> {
        let out = std::sync::Mutex::new(Vec::new());
        for _ in 0..n {
            kv.transact(&|txn: &dyn Txn| {
                let id = txn.next_id()?;
                txn.insert(Table::Events, &id.to_be_bytes(), b"e")?;
                out.lock().unwrap().push(id);
                Ok(())
            })
            .unwrap();
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn ids_follow_each_other_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = ids(&SledKv::open(dir.path()).unwrap(), 3);
        assert_eq!(first, [1, 2, 3]);
        // sled's own generator would jump by a million here.
        let again = ids(&SledKv::open(dir.path()).unwrap(), 2);
        assert_eq!(again, [4, 5]);
    }

    #[test]
    fn several_ids_in_one_transaction_differ() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SledKv::open(dir.path()).unwrap();
        let got = std::sync::Mutex::new(Vec::new());
        kv.transact(&|txn: &dyn Txn| {
            let mut g = got.lock().unwrap();
            g.clear();
            g.extend([txn.next_id()?, txn.next_id()?, txn.next_id()?]);
            Ok(())
        })
        .unwrap();
        assert_eq!(got.into_inner().unwrap(), [1, 2, 3]);
    }

    #[test]
    fn a_store_from_before_the_counter_continues_after_its_last_event() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(dir.path()).unwrap();
            kv.tree(Table::Events)
                .insert(2_000_017u64.to_be_bytes(), b"e".as_slice())
                .unwrap();
            kv.tree(Table::Meta).remove(NEXT_ID_KEY).unwrap();
            kv.db.flush().unwrap();
        }
        let kv = SledKv::open(dir.path()).unwrap();
        assert_eq!(ids(&kv, 1), [2_000_018]);
    }
}
