//! [`KvStore`] on etcd v3 (cargo feature `etcd`, through the `etcd-client` crate).
//!
//! Every table is a key prefix (`<root>/<table>/`), so a table's keys keep their order and
//! a scan is one ranged read. A transaction is optimistic and serializable: its reads come
//! from one snapshot (the revision of its first read), its writes are buffered, and at the
//! end one etcd Txn compares every key it read on its `mod_revision` (0: absent) and, when
//! none changed, applies every write. When one did, the transaction runs again, after a
//! growing, jittered pause, a bounded number of times. etcd makes a Txn durable (a quorum
//! of members has it on disk) before it answers, so a transaction that returns `Ok` is.
//!
//! Ids ([`Txn::next_id`]) come from the replica's own hybrid clock ([`IdClock`]), not from
//! a counter key: transactions that take ids conflict only on the keys they really share.
//! The replica's slot in the ids is taken from a counter once, before its first write (a
//! client that only reads, as `token issue` does, takes none).
//!
//! The transaction itself is in `etcd_kv::txn`.
//!
//! etcd limits a Txn to `--max-txn-ops` compares and as many operations (128 by default)
//! and a request to `--max-request-bytes` (1.5 MiB); a transaction beyond them fails with
//! etcd's own error, which names the limit.

use super::id_clock::{IdClock, SLOTS};
use super::meta::{decode_id, schema_is_ours, SCHEMA_KEY, SCHEMA_VERSION};
mod txn;

use super::{Changed, KvStore, Part, PartOutcome, Table, Term, Txn};
use crate::error::{Error, Result};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, TxnOp};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use txn::{Read, MAX_ATTEMPTS};

/// The counter of replica slots (see [`EtcdKv::take_slot`]).
const REPLICA_SLOT_KEY: &[u8] = b"replica_slots";
/// Records a batch changes per transaction: a placement compares and writes about five
/// keys, so 100 stay within `--max-txn-ops 1000` and far below the request size limit.
const TXN_BATCH: usize = 100;
/// How long one request to etcd may take (a store without quorum fails this fast).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer taken (a page of a scan may hold many values; gRPC's default is
/// 4 MiB).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// An etcd client's error as the store's.
pub(super) fn storage(e: etcd_client::Error) -> Error {
    Error::Storage(format!("etcd: {e}"))
}

/// The first key after every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: no key is greater; "\0" means "to the end" to etcd.
    vec![0]
}

/// An etcd cluster holding every table under one root prefix.
pub struct EtcdKv {
    /// The client's runtime, shut down in the background when the store is dropped (a
    /// runtime may not be dropped on an async thread, where the last user may be).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    client: Client,
    root: Vec<u8>,
    ids: std::sync::OnceLock<IdClock>,
    /// Held by the transaction whose turn it is to run again after a conflict.
    retries: std::sync::Mutex<()>,
}

impl Drop for EtcdKv {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl EtcdKv {
    /// Connects to the members at `endpoints` (`host:port` or URLs), keeping every key
    /// under `root` (e.g. `/modvisor`), and checks the schema version there.
    pub fn connect(endpoints: &[String], root: &str) -> Result<Self> {
        Self::connect_with(endpoints, root, &super::EtcdAccess::from_env()?)
    }

    /// [`EtcdKv::connect`] with `access` (TLS, a user) rather than the environment's.
    pub fn connect_with(
        endpoints: &[String],
        root: &str,
        access: &super::EtcdAccess,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("etcd: the client's runtime: {e}")))?;
        let options = access.apply(
            ConnectOptions::new()
                .with_connect_timeout(REQUEST_TIMEOUT)
                .with_timeout(REQUEST_TIMEOUT),
        )?;
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| match e.strip_prefix("http://") {
                Some(member) if access.tls() => format!("https://{member}"),
                _ => e.clone(),
            })
            .collect();
        let handle = runtime.handle().clone();
        let client = on(&handle, async move {
            Client::connect(endpoints, Some(options)).await
        })?;
        let mut root = root.trim_end_matches('/').as_bytes().to_vec();
        root.push(b'/');
        let kv = EtcdKv {
            runtime: Some(runtime),
            handle,
            client,
            root,
            ids: std::sync::OnceLock::new(),
            retries: std::sync::Mutex::new(()),
        };
        kv.check_schema()?;
        Ok(kv)
    }

    /// This replica's id clock, its slot taken on first use: the next value of a counter
    /// every writing replica moves (slots repeat after [`SLOTS`] writers, long after an
    /// old replica's clock has passed the ids it gave).
    fn ids(&self) -> Result<&IdClock> {
        if let Some(ids) = self.ids.get() {
            return Ok(ids);
        }
        let key = self.key(Table::Meta, REPLICA_SLOT_KEY);
        for _ in 0..MAX_ATTEMPTS {
            let (value, mod_revision, _) = self.read(key.clone(), None)?;
            let taken = value.as_deref().map(decode_id).transpose()?.unwrap_or(0);
            let read = BTreeMap::from([(
                key.clone(),
                Read {
                    mod_revision,
                    value,
                },
            )]);
            let next = taken.wrapping_add(1).to_be_bytes().to_vec();
            if self.commit(&read, BTreeMap::from([(key.clone(), Some(next))]), None)? {
                // Two threads may both take a slot: one clock is kept, the other slot unused.
                return Ok(self.ids.get_or_init(|| IdClock::new(taken % SLOTS)));
            }
        }
        Err(Error::Storage(
            "etcd: taking a slot for ids still conflicted after many attempts".into(),
        ))
    }

    /// A client of the KV service that takes answers up to [`MAX_ANSWER_BYTES`].
    fn kv_client(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// The etcd key of `key` in `table`.
    fn key(&self, table: Table, key: &[u8]) -> Vec<u8> {
        let mut k = self.table_prefix(table);
        k.extend_from_slice(key);
        k
    }

    fn table_prefix(&self, table: Table) -> Vec<u8> {
        let mut k = self.root.clone();
        k.extend_from_slice(table.name().as_bytes());
        k.push(b'/');
        k
    }

    /// Reads `key` (at `revision`, or the latest): its value and mod_revision (0 when
    /// absent), and the store's revision.
    ///
    /// A read at a revision is served by whichever member has applied it, without a
    /// round of the quorum (a past revision reads the same on every member); only a
    /// member that has not applied it yet sends the read on to the leader's order.
    fn read(&self, key: Vec<u8>, revision: Option<i64>) -> Result<(Option<Vec<u8>>, i64, i64)> {
        let client = self.kv_client();
        let resp = on_resending(&self.handle, Resend::Read, move || {
            let (mut client, key) = (client.clone(), key.clone());
            async move {
                let Some(r) = revision else {
                    return client.get(key, None).await;
                };
                let local = GetOptions::new().with_revision(r).with_serializable();
                match client.get(key.clone(), Some(local)).await {
                    Ok(resp) => Ok(resp),
                    Err(e) => {
                        tracing::debug!(error = %e, "a local read at a revision; reading through the quorum");
                        client
                            .get(key, Some(GetOptions::new().with_revision(r)))
                            .await
                    }
                }
            }
        })?;
        let store_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(match resp.kvs().first() {
            Some(kv) => (Some(kv.value().to_vec()), kv.mod_revision(), store_revision),
            None => (None, 0, store_revision),
        })
    }

    /// The key whose holder leads (outside every table, so never copied).
    fn leader_key(&self) -> Vec<u8> {
        let mut k = self.root.clone();
        k.extend_from_slice(b"leader");
        k
    }

    /// Applies `writes` if no key of `reads` changed since it was read and, with a
    /// `fence`, the leader key still has that create revision; whether it did.
    fn commit(
        &self,
        reads: &BTreeMap<Vec<u8>, Read>,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        fence: Option<i64>,
    ) -> Result<bool> {
        let mut compares: Vec<Compare> = reads
            .iter()
            .map(|(k, r)| Compare::mod_revision(k.clone(), CompareOp::Equal, r.mod_revision))
            .collect();
        if let Some(revision) = fence {
            compares.push(Compare::create_revision(
                self.leader_key(),
                CompareOp::Equal,
                revision,
            ));
        }
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(k, v, None),
                None => TxnOp::delete(k, None),
            })
            .collect();
        let txn = etcd_client::Txn::new().when(compares).and_then(ops);
        let client = self.kv_client();
        let resp = on_resending(&self.handle, Resend::Write, move || {
            let (mut client, txn) = (client.clone(), txn.clone());
            async move { client.txn(txn).await }
        })?;
        Ok(resp.succeeded())
    }

    fn check_schema(&self) -> Result<()> {
        let key = self.key(Table::Meta, SCHEMA_KEY);
        let version = SCHEMA_VERSION;
        let (found, _, _) = self.read(key.clone(), None)?;
        match found {
            None => {
                // Whoever writes it first: a racing replica writes the same.
                let reads = BTreeMap::from([(
                    key.clone(),
                    Read {
                        mod_revision: 0,
                        value: None,
                    },
                )]);
                let writes = BTreeMap::from([(key, Some(version.to_be_bytes().to_vec()))]);
                if !self.commit(&reads, writes, None)? {
                    return self.check_schema();
                }
                Ok(())
            }
            Some(v) => schema_is_ours(&v),
        }
    }
}

/// Runs `fut` on the client's runtime and waits for it on this thread (which may be any
/// thread: a pool thread of the API, the reconciler's, or an async worker's).
fn on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    fut: impl Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        if tx.send(fut.await).is_err() {
            tracing::debug!("an etcd answer arrived after its caller left");
        }
    });
    rx.recv()
        .map_err(|_| Error::Storage("etcd: the client's runtime stopped".into()))?
        .map_err(storage)
}

/// What may be sent again after a failure: a read whatever made the member unavailable;
/// a write only when it never left (no connection to the member it was sent to), since
/// a write that reached etcd may have been applied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    Read,
    Write,
}

/// Whether `e` lets a request be sent again (to another member: the client balances
/// requests over the endpoints it was given).
fn may_resend(e: &etcd_client::Error, what: Resend) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable
                && (what == Resend::Read || status.message().contains("connect"))
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// [`on`] for a request that `make` builds afresh for each attempt: one that failed
/// where [`may_resend`] allows is sent again, with short pauses, for up to
/// [`REQUEST_TIMEOUT`] (so a dead member among live ones costs a retry, not an error).
fn on_resending<T, F, Fut>(runtime: &tokio::runtime::Handle, what: Resend, make: F) -> Result<T>
where
    T: Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>> + Send,
{
    on(runtime, async move {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let mut pause = Duration::from_millis(20);
        loop {
            match make().await {
                Err(e)
                    if may_resend(&e, what) && tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::debug!(error = %e, "an etcd member did not answer; sending again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                answer => return answer,
            }
        }
    })
}

impl KvStore for EtcdKv {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read(self.key(table, key), None)?.0)
    }

    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>> {
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|(t, k)| TxnOp::get(self.key(*t, k), None))
            .collect();
        let client = self.kv_client();
        let resp = on_resending(&self.handle, Resend::Read, move || {
            let (mut client, ops) = (client.clone(), ops.clone());
            async move { client.txn(etcd_client::Txn::new().and_then(ops)).await }
        })?;
        resp.op_responses()
            .into_iter()
            .map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => {
                    Ok(g.kvs().first().map(|kv| kv.value().to_vec()))
                }
                _ => Err(Error::Storage(
                    "etcd: a read answered as another operation".into(),
                )),
            })
            .collect()
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let base = self.key(table, prefix);
        let start = match after {
            Some(a) => {
                let mut k = base.clone();
                k.extend_from_slice(a);
                // The least key after `prefix + after`.
                k.push(0);
                k
            }
            None => base.clone(),
        };
        let options = GetOptions::new()
            .with_range(prefix_end(&base))
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let client = self.kv_client();
        let resp = on_resending(&self.handle, Resend::Read, move || {
            let (mut client, start, options) = (client.clone(), start.clone(), options.clone());
            async move { client.get(start, Some(options)).await }
        })?;
        let strip = self.table_prefix(table).len();
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| (kv.key()[strip..].to_vec(), kv.value().to_vec()))
            .collect())
    }

    fn transact(&self, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
        self.transact_with(None, f)
    }

    fn transact_fenced(&self, term: &Term, f: &dyn Fn(&dyn Txn) -> Result<()>) -> Result<()> {
        self.transact_with(Some(term), f)
    }

    fn campaign(&self, candidate: &str) -> Result<Term> {
        let (client, key, candidate) = (
            self.client.clone(),
            self.leader_key(),
            candidate.to_string(),
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let won = super::etcd_lease::campaign(client, key, candidate).await;
            if tx.send(won).is_err() {
                tracing::debug!("a campaign ended after its caller left");
            }
        });
        rx.recv()
            .map_err(|_| Error::Storage("etcd: the client's runtime stopped".into()))?
    }

    fn watch_tables(&self, tables: &[Table], changed: Changed) -> Result<()> {
        let prefixes = tables.iter().map(|t| (*t, self.table_prefix(*t))).collect();
        super::etcd_lease::watch_prefixes(&self.handle, &self.client, prefixes, changed);
        Ok(())
    }

    fn next_id_peek(&self) -> Result<u64> {
        self.ids()?.peek()
    }

    fn batch_limit(&self) -> usize {
        TXN_BATCH
    }

    fn commits_in_groups(&self) -> bool {
        true
    }

    fn reads_are_remote(&self) -> bool {
        true
    }

    fn transact_parts(&self, prefetch: &[(Table, &[u8])], parts: &[&Part]) -> Vec<PartOutcome> {
        self.transact_parts_together(prefetch, parts)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/m/vms/"), b"/m/vms0".to_vec());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
