//! Sealed payloads: every request but `Hello` and `Bind`, and every reply to one, carries
//! a sequence number and an HMAC-SHA256 tag under this boot's channel key.
//!
//! ```text
//! sealed payload = seq (u64 LE) | body | tag (32 bytes)
//! tag = HMAC-SHA256(key, direction | type | id (u32 LE) | seq | body)
//! ```
//!
//! The direction byte keeps a request from passing as a reply and back. The agent takes a
//! request only with a sequence number above the last one it took, so a frame read off the
//! wire cannot be replayed; a reply carries its request's sequence number.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes in a channel key.
pub const KEY_LEN: usize = 32;
/// Bytes in a tag.
pub const TAG_LEN: usize = 32;
/// Bytes a seal adds to a body.
pub const SEAL_OVERHEAD: usize = 8 + TAG_LEN;

/// Which way a sealed payload travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host -> agent (requests).
    ToAgent = 0x41,
    /// Agent -> host (replies).
    ToHost = 0x48,
}

/// Why a sealed payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than a sequence number and a tag.
    #[error("sealed payload too short")]
    Short,
    /// The tag does not match: not sealed with this key, or altered.
    #[error("bad tag")]
    BadTag,
}

/// A channel key (secret; its `Debug` says nothing of it).
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelKey([u8; KEY_LEN]);

impl std::fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelKey(<redacted>)")
    }
}

impl ChannelKey {
    /// A key from exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(ChannelKey)
    }

    /// The key's bytes (to send in `Bind`, or keep in a 0600 file).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Whether `other` is this key, compared in constant time.
    pub fn matches(&self, other: &[u8]) -> bool {
        other.len() == KEY_LEN
            && self
                .0
                .iter()
                .zip(other)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn mac(&self, dir: Direction, msg_type: u8, id: u32, seq: u64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&[dir as u8, msg_type]);
        mac.update(&id.to_le_bytes());
        mac.update(&seq.to_le_bytes());
        mac.update(body);
        mac
    }

    /// `body` sealed for a frame of `msg_type` and `id` going `dir`.
    pub fn seal(&self, dir: Direction, msg_type: u8, id: u32, seq: u64, body: &[u8]) -> Vec<u8> {
        let tag = self
            .mac(dir, msg_type, id, seq, body)
            .finalize()
            .into_bytes();
        let mut out = Vec::with_capacity(body.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&tag);
        out
    }

    /// The sequence number and body of a sealed payload, if its tag is right.
    pub fn open<'a>(
        &self,
        dir: Direction,
        msg_type: u8,
        id: u32,
        sealed: &'a [u8],
    ) -> Result<(u64, &'a [u8]), SealError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(SealError::Short);
        }
        let (seq, rest) = sealed.split_at(8);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let seq = u64::from_le_bytes(seq.try_into().map_err(|_| SealError::Short)?);
        self.mac(dir, msg_type, id, seq, body)
            .verify_slice(tag)
            .map_err(|_| SealError::BadTag)?;
        Ok((seq, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_every_field_is_bound() {
        let k = ChannelKey::from_slice(&[7; KEY_LEN]).unwrap();
        let other = ChannelKey::from_slice(&[8; KEY_LEN]).unwrap();
        let s = k.seal(Direction::ToAgent, 0x08, 5, 42, b"body");
        assert_eq!(
            k.open(Direction::ToAgent, 0x08, 5, &s),
            Ok((42, &b"body"[..]))
        );
        assert_eq!(
            other.open(Direction::ToAgent, 0x08, 5, &s),
            Err(SealError::BadTag)
        );
        assert_eq!(
            k.open(Direction::ToHost, 0x08, 5, &s),
            Err(SealError::BadTag)
        );
        assert_eq!(
            k.open(Direction::ToAgent, 0x02, 5, &s),
            Err(SealError::BadTag)
        );
        assert_eq!(
            k.open(Direction::ToAgent, 0x08, 6, &s),
            Err(SealError::BadTag)
        );
        let mut bumped = s.clone();
        bumped[0] ^= 1;
        assert_eq!(
            k.open(Direction::ToAgent, 0x08, 5, &bumped),
            Err(SealError::BadTag)
        );
        let mut flipped = s.clone();
        flipped[9] ^= 1;
        assert_eq!(
            k.open(Direction::ToAgent, 0x08, 5, &flipped),
            Err(SealError::BadTag)
        );
        assert_eq!(
            k.open(Direction::ToAgent, 0x08, 5, &s[..10]),
            Err(SealError::Short)
        );
        assert!(k.matches(&[7; KEY_LEN]) && !k.matches(&[7; 31]) && !k.matches(&[8; KEY_LEN]));
        assert_eq!(format!("{k:?}"), "ChannelKey(<redacted>)");
    }
}
