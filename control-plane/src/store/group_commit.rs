//! Group commit: the transactions that callers of one replica start while another group
//! is committing wait, and then commit together, each as a part of one store transaction
//! ([`KvStore::transact_parts`]). On etcd every transaction is a consensus round, and the
//! creates of one tenant all rewrite its record (its usage): alone, each would undo the
//! others' work and run again; together they take one round.
//!
//! One caller at a time leads: it takes the parts waiting (its own first), commits them,
//! tells each caller its outcome and hands the lead to the first caller still waiting.
//! A part fails alone and leaves no write; a part that did not fit is taken next.

use super::{KvStore, Table, Txn};
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

/// A part of a group: a transaction's body, run again if the group conflicts.
pub type Part = dyn Fn(&dyn Txn) -> Result<()> + Send + Sync;

/// What became of one part of [`KvStore::transact_parts`].
#[derive(Debug, Clone)]
pub enum PartOutcome {
    /// It ran: committed with the group (`Ok`), or failed alone, writing nothing.
    Done(Result<()>),
    /// The transaction was full before it: it did not run.
    Left,
}

/// At most this many parts are offered to one transaction.
const MAX_PARTS: usize = 64;

/// The transactions of callers waiting to commit together (see the module's doc).
pub struct GroupCommit {
    kv: Arc<dyn KvStore>,
    queue: Mutex<Queue>,
}

struct Queue {
    waiting: VecDeque<Waiting>,
    /// Whether a caller leads now (it, or the one it hands over to, takes what waits).
    leading: bool,
}

struct Waiting {
    /// What its part reads (read ahead for the whole group in one round trip).
    reads: Vec<(Table, Vec<u8>)>,
    part: Arc<Part>,
    told: mpsc::Sender<Told>,
}

enum Told {
    Done(Result<()>),
    Lead,
}

impl GroupCommit {
    /// Groups the transactions of `kv`, where it commits parts together
    /// ([`KvStore::commits_in_groups`]); elsewhere each runs on its own.
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        GroupCommit {
            kv,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                leading: false,
            }),
        }
    }

    /// Runs `f` as [`super::transact`] does, committed with whatever other transactions
    /// wait at the same time; its value. `reads` are keys `f` reads, read ahead.
    pub fn transact<T: Send + 'static>(
        &self,
        reads: Vec<(Table, Vec<u8>)>,
        f: impl Fn(&dyn Txn) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        if !self.kv.commits_in_groups() {
            return super::transact(&*self.kv, f);
        }
        let value = Arc::new(Mutex::new(None));
        let part: Arc<Part> = {
            let value = value.clone();
            Arc::new(move |txn: &dyn Txn| {
                let v = f(txn)?;
                *value
                    .lock()
                    .map_err(|_| Error::Poisoned("a group part's value"))? = Some(v);
                Ok(())
            })
        };
        let (told, hear) = mpsc::channel();
        let lead = {
            let mut queue = self.queue();
            queue.waiting.push_back(Waiting { reads, part, told });
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            self.lead();
        }
        loop {
            match hear.recv() {
                Ok(Told::Done(outcome)) => break outcome?,
                Ok(Told::Lead) => self.lead(),
                Err(mpsc::RecvError) => return Err(Error::Storage(
                    "group commit: the caller that led this group ended before it said how it went"
                        .into(),
                )),
            }
        }
        let taken = value
            .lock()
            .map_err(|_| Error::Poisoned("a group part's value"))?
            .take();
        taken.ok_or_else(|| Error::Storage("transaction returned no value".into()))
    }

    /// The queue. A caller that panicked while holding it left it whole: each holder
    /// only pushes, drains or flips `leading`.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Commits the parts that wait (the leader's own first), tells their callers, and
    /// hands the lead on (also when this unwinds).
    fn lead(&self) {
        let _hand_over = HandOver(self);
        let group: Vec<Waiting> = {
            let mut queue = self.queue();
            let n = queue.waiting.len().min(MAX_PARTS);
            queue.waiting.drain(..n).collect()
        };
        let parts: Vec<&Part> = group.iter().map(|w| &*w.part).collect();
        // A key several parts read (their tenant's) is read once.
        let reads: Vec<(Table, &[u8])> = group
            .iter()
            .flat_map(|w| w.reads.iter().map(|(t, k)| (*t, k.as_slice())))
            .collect();
        let outcomes = self.kv.transact_parts(&reads, &parts);
        let outcomes = if outcomes.len() == group.len() {
            outcomes
        } else {
            let short = Error::Storage(format!(
                "group commit: {} outcomes for {} parts",
                outcomes.len(),
                group.len()
            ));
            vec![PartOutcome::Done(Err(short)); group.len()]
        };
        let mut left = Vec::new();
        for (waiting, outcome) in group.into_iter().zip(outcomes) {
            match outcome {
                PartOutcome::Done(result) => {
                    if waiting.told.send(Told::Done(result)).is_err() {
                        tracing::warn!("a caller of a group commit left before its outcome");
                    }
                }
                PartOutcome::Left => left.push(waiting),
            }
        }
        let mut queue = self.queue();
        for waiting in left.into_iter().rev() {
            queue.waiting.push_front(waiting);
        }
    }
}

/// Hands the lead to the first caller waiting, or ends it when none waits.
struct HandOver<'a>(&'a GroupCommit);

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.queue();
        while let Some(next) = queue.waiting.front() {
            if next.told.send(Told::Lead).is_ok() {
                return;
            }
            // That caller is gone (it unwound): its part goes with it.
            queue.waiting.pop_front();
        }
        queue.leading = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Changed, SledKv, Term};
    use std::time::Duration;

    /// sled, saying that it groups: each group is recorded, and takes a while (so that
    /// callers queue behind it); its parts run one by one.
    struct Grouping {
        inner: SledKv,
        groups: Mutex<Vec<usize>>,
    }

    impl KvStore for Grouping {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.inner.get(table, key)
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
            self.inner.transact(f)
        }
        fn next_id_peek(&self) -> Result<u64> {
            self.inner.next_id_peek()
        }
        fn transact_fenced(&self, term: &Term, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
            self.inner.transact_fenced(term, f)
        }
        fn campaign(&self, candidate: &str) -> Result<Term> {
            self.inner.campaign(candidate)
        }
        fn watch_tables(&self, tables: &[Table], changed: Changed) -> Result<()> {
            self.inner.watch_tables(tables, changed)
        }
        fn commits_in_groups(&self) -> bool {
            true
        }
        fn transact_parts(&self, _: &[(Table, &[u8])], parts: &[&Part]) -> Vec<PartOutcome> {
            self.groups.lock().unwrap().push(parts.len());
            std::thread::sleep(Duration::from_millis(20));
            parts
                .iter()
                .map(|f| PartOutcome::Done(self.inner.transact(*f)))
                .collect()
        }
    }

    #[test]
    fn concurrent_callers_commit_in_groups_and_each_hears_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(Grouping {
            inner: SledKv::open(&dir.path().join("db")).unwrap(),
            groups: Mutex::new(Vec::new()),
        });
        let group = Arc::new(GroupCommit::new(kv.clone()));
        let callers: Vec<_> = (0..16u32)
            .map(|i| {
                let group = group.clone();
                std::thread::spawn(move || {
                    group.transact(vec![], move |txn| {
                        txn.insert(Table::Policies, &i.to_be_bytes(), b"x")?;
                        match i {
                            3 => Err(Error::Conflict("three fails".into())),
                            _ => Ok(i * 10),
                        }
                    })
                })
            })
            .collect();
        for (i, caller) in (0..16u32).zip(callers) {
            let outcome = caller.join().unwrap();
            match i {
                3 => assert!(matches!(outcome, Err(Error::Conflict(_))), "{outcome:?}"),
                _ => assert_eq!(outcome.unwrap(), i * 10),
            }
            let written = kv.get(Table::Policies, &i.to_be_bytes()).unwrap();
            assert_eq!(written.is_some(), i != 3, "caller {i}");
        }
        let groups = kv.groups.lock().unwrap().clone();
        assert_eq!(groups.iter().sum::<usize>(), 16, "{groups:?}");
        assert!(
            groups.iter().any(|n| *n > 1),
            "no caller waited: {groups:?}"
        );
        // The queue is empty and nobody leads: the next caller leads at once.
        assert_eq!(group.transact(vec![], |_| Ok(7)).unwrap(), 7);
    }
}
