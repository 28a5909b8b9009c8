//! Module blobs, content-addressed and kept in chunks (`sha256 \0 index -> up to
//! CHUNK_BYTES`), so that no write is larger than a backend takes in one request (etcd's
//! limit is 1.5 MiB by default; Debian's xfs.ko is 4.2 MB). A blob of one chunk is written
//! in the transaction that publishes its module; a larger one chunk by chunk, each in a
//! transaction of its own, before it (content-addressed chunks of a publish that then
//! fails are harmless). Read back a few chunks at a time and verified against its sha256.
//! Blobs a store kept whole before chunks (`Table::Blobs`) are still read.

use super::{Datastore, Table, Txn};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

/// The largest chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks read per request.
const CHUNKS_PER_READ: usize = 4;

fn chunk_prefix(sha256: &str) -> Vec<u8> {
    let mut k = sha256.as_bytes().to_vec();
    k.push(0);
    k
}

/// The key of chunk `index` of blob `sha256` (`sha256 \0 index`, big endian).
pub(super) fn chunk_key(sha256: &str, index: u32) -> Vec<u8> {
    let mut k = chunk_prefix(sha256);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// `bytes` if they hash to `sha256`; a storage error otherwise.
fn verified(sha256: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if hex::encode(Sha256::digest(&bytes)) == sha256 {
        Ok(bytes)
    } else {
        Err(Error::Storage(format!(
            "blob {sha256}: the stored bytes do not hash to it"
        )))
    }
}

/// Whether `bytes` fit in the publishing transaction (one chunk).
pub(super) fn fits_one_chunk(bytes: &[u8]) -> bool {
    bytes.len() <= CHUNK_BYTES
}

/// Writes a one-chunk blob inside a transaction.
pub(super) fn write_single_chunk(txn: &dyn Txn, sha256: &str, bytes: &[u8]) -> Result<()> {
    txn.insert(Table::BlobChunks, &chunk_key(sha256, 0), bytes)
}

impl Datastore {
    /// Whether the blob `sha256` is stored (whole or in chunks).
    pub(super) fn has_blob(&self, sha256: &str) -> Result<bool> {
        Ok(self.kv.get(Table::Blobs, sha256.as_bytes())?.is_some()
            || self
                .kv
                .get(Table::BlobChunks, &chunk_key(sha256, 0))?
                .is_some())
    }

    /// Writes the chunks of a blob larger than one chunk, each in its own transaction.
    pub(super) fn write_chunks(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            let index = u32::try_from(i)
                .map_err(|_| Error::Storage(format!("blob {sha256}: too many chunks")))?;
            let key = chunk_key(sha256, index);
            self.kv
                .transact(&|txn: &dyn Txn| txn.insert(Table::BlobChunks, &key, chunk))?;
        }
        Ok(())
    }

    /// The bytes stored under `sha256`, verified against it.
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        if let Some(whole) = self.kv.get(Table::Blobs, sha256.as_bytes())? {
            return verified(sha256, whole).map(Some);
        }
        let prefix = chunk_prefix(sha256);
        let mut bytes = Vec::new();
        let mut next: u32 = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.kv.scan(
                Table::BlobChunks,
                &prefix,
                after.as_deref(),
                CHUNKS_PER_READ,
            )?;
            for (key, chunk) in &page {
                let index = <[u8; 4]>::try_from(&key[prefix.len()..])
                    .map(u32::from_be_bytes)
                    .map_err(|_| Error::Storage(format!("blob {sha256}: a malformed chunk key")))?;
                if index != next {
                    return Err(Error::Storage(format!(
                        "blob {sha256}: chunk {next} is missing"
                    )));
                }
                bytes.extend_from_slice(chunk);
                next += 1;
            }
            if page.len() < CHUNKS_PER_READ {
                break;
            }
            after = page.last().map(|(k, _)| k[prefix.len()..].to_vec());
        }
        if next == 0 {
            return Ok(None);
        }
        verified(sha256, bytes).map(Some)
    }
}
