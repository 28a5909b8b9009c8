//! Moves an installation from one store to another (`modvisor store copy`): every table,
//! page by page, written in transactions of bounded size (etcd takes 128 operations and
//! 1.5 MiB a request by default), into a store that holds nothing yet. Blobs a sled store
//! kept whole go over in chunks. The id counter and schema version come along, so audit
//! sequence numbers go on where they were.

use super::blobs::{chunk_key, CHUNK_BYTES};
use super::{KvStore, Table, Txn};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Entries read per page, and written per transaction at most.
const PAGE: usize = 64;
/// Bytes written per transaction at most (beside a single larger value).
const TXN_BYTES: usize = 512 * 1024;

/// How many entries each table had.
pub type CopyReport = BTreeMap<&'static str, u64>;

/// Whether `kv` holds anything beyond its own metadata.
fn holds_data(kv: &dyn KvStore) -> Result<Option<Table>> {
    for t in Table::ALL {
        if t != Table::Meta && !kv.scan(t, b"", None, 1)?.is_empty() {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// Writes `batch` in one transaction and empties it.
fn flush(to: &dyn KvStore, batch: &mut Vec<(Table, Vec<u8>, Vec<u8>)>) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    to.transact(&|txn: &dyn Txn| {
        for (t, k, v) in batch.iter() {
            txn.insert(*t, k, v)?;
        }
        Ok(())
    })?;
    batch.clear();
    Ok(())
}

/// Copies everything in `from` into `to`, which must hold no data yet.
pub fn copy(from: &dyn KvStore, to: &dyn KvStore) -> Result<CopyReport> {
    if let Some(t) = holds_data(to)? {
        return Err(Error::Conflict(format!(
            "the destination already holds data (table {}); copy into an empty store",
            t.name()
        )));
    }
    let mut report = CopyReport::new();
    let mut batch: Vec<(Table, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut bytes = 0;
    for table in Table::ALL {
        let mut after: Option<Vec<u8>> = None;
        let mut count = 0u64;
        loop {
            let page = from.scan(table, b"", after.as_deref(), PAGE)?;
            for (k, v) in &page {
                count += 1;
                // A blob kept whole becomes chunks, as new blobs are.
                let entries: Vec<(Table, Vec<u8>, Vec<u8>)> = if table == Table::Blobs {
                    let sha = String::from_utf8_lossy(k).into_owned();
                    v.chunks(CHUNK_BYTES)
                        .zip(0u32..)
                        .map(|(c, i)| (Table::BlobChunks, chunk_key(&sha, i), c.to_vec()))
                        .collect()
                } else {
                    vec![(table, k.clone(), v.clone())]
                };
                for e in entries {
                    if batch.len() >= PAGE || bytes + e.2.len() > TXN_BYTES {
                        flush(to, &mut batch)?;
                        bytes = 0;
                    }
                    bytes += e.2.len();
                    batch.push(e);
                }
            }
            if page.len() < PAGE {
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
        }
        report.insert(table.name(), count);
    }
    flush(to, &mut batch)?;
    Ok(report)
}
