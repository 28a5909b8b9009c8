//! The node's view of a hostile guest: arbitrary bytes, pushed in arbitrary chunks, into
//! the frame reader; every frame it yields is decoded as a reply. Nothing may panic, the
//! work stays linear (no byte is checksummed twice) and the buffer stays bounded by what
//! one frame may hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modvisor_guest_protocol::message::{
    ErrorReply, HealthReply, HelloReply, ListReply, LoadReply,
};
use modvisor_guest_protocol::{FrameReader, HEADER_LEN, MAX_PAYLOAD};

/// The CRC after each payload.
const TRAILER_LEN: usize = 4;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size the stream arrives in.
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(pick % 64) + 1;
    let mut reader = FrameReader::new();
    let mut pushed = 0u64;
    for part in stream.chunks(chunk) {
        reader.push(part);
        pushed += part.len() as u64;
        while let Some(item) = reader.next_frame() {
            if let Ok(frame) = item {
                // Every reply the node decodes must refuse garbage without panicking.
                let p = &frame.payload;
                let _ = HelloReply::decode(p);
                let _ = LoadReply::decode(p);
                let _ = ListReply::decode(p);
                let _ = HealthReply::decode(p);
                let _ = ErrorReply::decode(p);
            }
        }
        assert!(reader.checksummed() <= pushed);
        assert!(reader.buffered() <= HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN + chunk);
    }
});
