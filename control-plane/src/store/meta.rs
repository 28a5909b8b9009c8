//! What every backend keeps in the Meta table: the schema version and the id counter.

use crate::error::{Error, Result};

/// The schema version this code reads and writes.
pub(super) const SCHEMA_VERSION: u32 = 1;
pub(super) const SCHEMA_KEY: &[u8] = b"schema_version";
/// The next id [`super::Txn::next_id`] gives (big endian).
pub(super) const NEXT_ID_KEY: &[u8] = b"next_id";

/// Whether a stored schema version (big endian) is the one this build reads.
pub(super) fn schema_is_ours(stored: &[u8]) -> Result<()> {
    let found = <[u8; 4]>::try_from(stored)
        .map(u32::from_be_bytes)
        .map_err(|_| Error::Storage("unreadable schema version".into()))?;
    if found == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(Error::Storage(format!(
            "store has schema version {found}, this build reads {SCHEMA_VERSION}; no migration is known"
        )))
    }
}

/// An id counter's value (big endian).
pub(super) fn decode_id(v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Storage("unreadable id counter".into()))
}
