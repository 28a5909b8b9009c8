//! The agent's serve loop against hostile and valid frames, on the host (no module is
//! loaded here: that is proven inside real guests by the node agent's tests).

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modvisor_guest_agent::{Agent, Next};
use modvisor_guest_protocol::message::{ErrorCode, ErrorReply, HelloReply, ListReply};
use modvisor_guest_protocol::{Frame, FrameReader, MsgType, HEADER_LEN, MAX_PAYLOAD};
use std::io::{Cursor, Read, Write};

/// A stream whose reads come from `input` and whose writes are collected.
struct Duplex {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Deliver in small pieces, as a serial port does.
        let n = buf.len().min(7);
        self.input.read(&mut buf[..n])
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn replies(input: Vec<u8>) -> (Vec<Frame>, Next) {
    let mut d = Duplex {
        input: Cursor::new(input),
        output: Vec::new(),
    };
    let next = Agent::default().serve(&mut d).unwrap();
    let mut r = FrameReader::new();
    r.push(&d.output);
    let mut out = Vec::new();
    while let Some(f) = r.next_frame() {
        out.push(f.unwrap());
    }
    (out, next)
}

fn error_code(f: &Frame) -> u32 {
    assert_eq!(f.msg_type, MsgType::Error as u8);
    ErrorReply::decode(&f.payload).unwrap().code
}

#[test]
fn answers_everything_and_keeps_serving() {
    let mut corrupted = Frame::new(MsgType::Hello, 2, vec![]).encode();
    corrupted[HEADER_LEN] ^= 0x55; // the CRC
    let mut oversized = Frame::new(MsgType::Load, 3, vec![]).encode();
    oversized[12..16].copy_from_slice(&(MAX_PAYLOAD as u32 + 10).to_le_bytes());
    oversized.truncate(HEADER_LEN);
    oversized.extend(std::iter::repeat_n(0u8, 100_000));
    let input = [
        b"line noise from boot\r\n".to_vec(),
        Frame::new(MsgType::Hello, 1, vec![]).encode(),
        corrupted,
        oversized,
        Frame {
            msg_type: 0x42,
            id: 4,
            payload: vec![1, 2, 3],
        }
        .encode(),
        Frame {
            msg_type: 0x81,
            id: 5,
            payload: vec![],
        }
        .encode(),
        Frame::new(MsgType::Load, 6, vec![0xff; 3]).encode(),
        Frame::new(MsgType::List, 7, vec![]).encode(),
        Frame::new(MsgType::Health, 8, vec![]).encode(),
        Frame::new(MsgType::Poweroff, 9, vec![]).encode(),
        Frame::new(MsgType::Hello, 10, vec![]).encode(),
    ]
    .concat();
    let (out, next) = replies(input);
    assert_eq!(next, Next::PowerOff, "stops serving only at poweroff");
    let ids: Vec<u32> = out.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let hello = HelloReply::decode(&out[0].payload).unwrap();
    assert!(!hello.kernel_release.is_empty());
    assert_eq!(hello.agent_version, modvisor_guest_agent::VERSION);
    assert_eq!(error_code(&out[1]), ErrorCode::BadChecksum as u32);
    assert_eq!(error_code(&out[2]), ErrorCode::TooLarge as u32);
    assert_eq!(error_code(&out[3]), ErrorCode::UnknownType as u32);
    assert_eq!(error_code(&out[4]), ErrorCode::UnknownType as u32);
    assert_eq!(error_code(&out[5]), ErrorCode::BadPayload as u32);
    assert_eq!(out[6].msg_type, MsgType::ListReply as u8);
    ListReply::decode(&out[6].payload).unwrap();
    assert_eq!(out[7].msg_type, MsgType::HealthReply as u8);
    assert_eq!(out[8].msg_type, MsgType::PoweroffReply as u8);
}
