//! Key and value encodings shared by the typed operations.

use crate::error::{Error, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `a \0 b`: a composite key whose first part never contains NUL.
pub fn pair(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b);
    k
}

/// The prefix of all keys [`pair`]ed with `a`.
pub fn prefix(a: &str) -> Vec<u8> {
    pair(a, b"")
}

/// A sequence number as a key that sorts numerically.
pub fn seq(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Encodes a record.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(Error::from)
}

/// Decodes a record.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(Error::from)
}

/// An opaque page token for the last key of a page.
pub fn page_token(last: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(last)
}

/// The key a page token stands for; a token that is not ours is a validation error.
pub fn parse_page_token(token: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(|| Error::invalid("page_token", "is not a token this server issued"))
}
