//! Frames: encoding, and a resynchronising incremental reader.

use crate::message::MsgType;

/// Marks the start of every frame.
pub const MAGIC: [u8; 4] = *b"MVGA";
/// Protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Bytes after the payload (the CRC).
pub const TRAILER_LEN: usize = 4;
/// Largest payload accepted: a module image of up to 16 MiB plus its name and parameters.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024 + 64 * 1024;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message type (raw, so unknown types can be answered).
    pub msg_type: u8,
    /// Request id.
    pub id: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Why a frame could not be taken from the stream. The reader has already skipped past
/// it, so the caller may answer and go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The checksum did not match; `id` is the (untrusted) id from the header.
    BadChecksum {
        /// The request id the header claimed.
        id: u32,
    },
    /// The header announced more than [`MAX_PAYLOAD`] bytes.
    TooLarge {
        /// The request id the header claimed.
        id: u32,
        /// The announced length.
        len: u32,
    },
    /// A version this crate does not speak.
    BadVersion {
        /// The request id the header claimed.
        id: u32,
        /// The version seen.
        version: u8,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadChecksum { id } => write!(f, "frame {id}: bad checksum"),
            FrameError::TooLarge { id, len } => {
                write!(
                    f,
                    "frame {id}: payload of {len} bytes exceeds {MAX_PAYLOAD}"
                )
            }
            FrameError::BadVersion { id, version } => {
                write!(
                    f,
                    "frame {id}: protocol version {version}, expected {VERSION}"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl Frame {
    /// A frame of a known type.
    pub fn new(msg_type: MsgType, id: u32, payload: Vec<u8>) -> Self {
        Frame {
            msg_type: msg_type as u8,
            id,
            payload,
        }
    }

    /// The wire bytes of this frame. Panics never; a payload over [`MAX_PAYLOAD`] is
    /// encoded anyway and refused by the peer.
    pub fn encode(&self) -> Vec<u8> {
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len() + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.msg_type);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.payload);
        let crc = crc32fast::hash(&out[4..]);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// Accumulates stream bytes and yields frames, skipping garbage.
///
/// Its work is linear in the bytes pushed, whatever they are: consumed bytes are dropped
/// by moving a cursor (the buffer is compacted once half of it is consumed), and a frame
/// whose checksum fails is skipped whole, as long as its header claims, so no byte is
/// checksummed twice. The stream is a reliable byte stream from the guest's agent, so a
/// bad checksum means a broken or hostile guest; a lying length costs that guest only its
/// own frames up to the next magic after the claimed end.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Where the unconsumed bytes start in `buf`.
    start: usize,
    /// Bytes checksummed so far.
    checksummed: u64,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes checksummed since the reader was made (at most the bytes pushed).
    pub fn checksummed(&self) -> u64 {
        self.checksummed
    }

    /// The next complete frame, an error for a frame that was skipped, or `None` when
    /// more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        // Find the magic; drop everything before it (keep a possible partial magic).
        match find(&self.buf[self.start..], &MAGIC) {
            Some(i) => self.start += i,
            None => {
                let keep = self.buffered().min(MAGIC.len() - 1);
                self.start = self.buf.len() - keep;
                return None;
            }
        }
        let data = &self.buf[self.start..];
        if data.len() < HEADER_LEN {
            return None;
        }
        let version = data[4];
        let msg_type = data[5];
        let id = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        let len = u32::from_le_bytes([data[12], data[13], data[14], data[15]]);
        if version != VERSION {
            // Not a frame we can size: skip this magic and resynchronise.
            self.start += MAGIC.len();
            return Some(Err(FrameError::BadVersion { id, version }));
        }
        if len as usize > MAX_PAYLOAD {
            // Never buffer it: drop the header and resynchronise on the next magic
            // (the CRC keeps a stray magic inside the body from passing as a frame).
            self.start += HEADER_LEN;
            return Some(Err(FrameError::TooLarge { id, len }));
        }
        let total = HEADER_LEN + len as usize + TRAILER_LEN;
        if data.len() < total {
            return None;
        }
        let body_end = HEADER_LEN + len as usize;
        let crc = u32::from_le_bytes([
            data[body_end],
            data[body_end + 1],
            data[body_end + 2],
            data[body_end + 3],
        ]);
        self.checksummed += (body_end - 4) as u64;
        if crc32fast::hash(&data[4..body_end]) != crc {
            // Skip all it claims: every byte is checksummed at most once.
            self.start += total;
            return Some(Err(FrameError::BadChecksum { id }));
        }
        let payload = data[HEADER_LEN..body_end].to_vec();
        self.start += total;
        Some(Ok(Frame {
            msg_type,
            id,
            payload,
        }))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u32, payload: &[u8]) -> Vec<u8> {
        Frame::new(MsgType::Health, id, payload.to_vec()).encode()
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let bytes = [frame(1, b"abc"), frame(2, b""), frame(3, &[0u8; 1000])].concat();
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for b in bytes {
            r.push(&[b]);
            while let Some(f) = r.next_frame() {
                got.push(f.unwrap().id);
            }
        }
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn garbage_before_and_between_frames_is_skipped() {
        let bytes = [
            b"noise MV".to_vec(),
            frame(7, b"x"),
            b"MVG".to_vec(),
            frame(8, b"y"),
        ]
        .concat();
        let mut r = FrameReader::new();
        r.push(&bytes);
        assert_eq!(r.next_frame().unwrap().unwrap().id, 7);
        assert_eq!(r.next_frame().unwrap().unwrap().id, 8);
        assert!(r.next_frame().is_none());
    }

    #[test]
    fn corrupted_frame_is_reported_and_the_next_one_read() {
        let mut bad = frame(9, b"payload");
        bad[HEADER_LEN + 2] ^= 0xff;
        let mut r = FrameReader::new();
        r.push(&[bad, frame(10, b"ok")].concat());
        assert_eq!(r.next_frame(), Some(Err(FrameError::BadChecksum { id: 9 })));
        assert_eq!(r.next_frame().unwrap().unwrap().id, 10);
    }

    #[test]
    fn oversized_frame_is_refused_without_buffering_it() {
        let mut hdr = frame(11, b"");
        hdr[12..16].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        hdr.truncate(HEADER_LEN);
        let mut r = FrameReader::new();
        r.push(&hdr);
        assert!(matches!(
            r.next_frame(),
            Some(Err(FrameError::TooLarge { id: 11, .. }))
        ));
        // Whatever body follows is skipped as garbage, never buffered.
        for _ in 0..64 {
            r.push(&[0u8; 65536]);
            assert!(r.next_frame().is_none());
            assert!(r.buffered() < 4);
        }
        r.push(&frame(12, b"after"));
        assert_eq!(r.next_frame().unwrap().unwrap().id, 12);
    }

    #[test]
    fn hostile_streams_cost_work_linear_in_their_length() {
        // Frames claiming 4000 bytes, each body full of further claimed frames: the old
        // reader checksummed ~4000 bytes for every 4 bytes it skipped.
        let mut header = frame(1, &[]);
        header[12..16].copy_from_slice(&4000u32.to_le_bytes());
        header.truncate(HEADER_LEN);
        let unit: Vec<u8> = header.iter().copied().cycle().take(4096).collect();
        let stream: Vec<u8> = unit.iter().copied().cycle().take(1 << 20).collect();
        let mut r = FrameReader::new();
        let mut errors = 0;
        for chunk in stream.chunks(4096) {
            r.push(chunk);
            while let Some(item) = r.next_frame() {
                assert!(item.is_err());
                errors += 1;
            }
        }
        assert!(errors > 0);
        assert!(
            r.checksummed() <= stream.len() as u64,
            "{} bytes checksummed for {} pushed",
            r.checksummed(),
            stream.len()
        );
        assert!(r.buffered() < 8 * 1024, "{}", r.buffered());
        // And it still reads a good frame afterwards.
        r.push(&[vec![0u8; 5000], frame(2, b"good")].concat());
        let mut found = None;
        while let Some(item) = r.next_frame() {
            if let Ok(f) = item {
                found = Some(f);
            }
        }
        assert_eq!(found.map(|f| f.id), Some(2));
    }

    #[test]
    fn absurd_length_with_bad_crc_does_not_stall() {
        let mut f = frame(13, b"abc");
        f[12..16].copy_from_slice(&5u32.to_le_bytes());
        let mut r = FrameReader::new();
        r.push(&[f, vec![0; 8], frame(14, b"z")].concat());
        assert!(matches!(
            r.next_frame(),
            Some(Err(FrameError::BadChecksum { .. }))
        ));
        assert_eq!(r.next_frame().unwrap().unwrap().id, 14);
    }
}
