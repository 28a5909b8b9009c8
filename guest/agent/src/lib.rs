//! The guest agent: serves the host's requests on a byte stream (the guest's `/dev/ttyS1`).
//!
//! It loads modules with `finit_module` (from a memfd; `init_module` where that is not
//! available), unloads them with `delete_module`, lists `/proc/modules`, reports health,
//! and powers the guest off. Any frame it cannot use is answered with an error reply and
//! it goes on serving: nothing the host sends can stop it.

#![forbid(unsafe_code)]

pub mod kmod;
pub mod procfs;

use modvisor_guest_protocol::message::{
    ErrorCode, ErrorReply, HealthReply, HelloReply, ListReply, LoadReply, LoadRequest,
    UnloadRequest,
};
use modvisor_guest_protocol::{Frame, FrameError, FrameReader, MsgType};
use std::io::{Read, Write};

/// The agent's version, reported in `hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the serve loop should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep serving.
    Continue,
    /// The host asked for a poweroff (already acknowledged).
    PowerOff,
}

/// The agent's state across requests.
#[derive(Debug, Default)]
pub struct Agent {
    /// Frames that could not be used.
    pub bad_frames: u64,
    /// `Load` requests received.
    pub load_requests: u64,
}

impl Agent {
    /// Answers one frame.
    pub fn handle(&mut self, frame: &Frame) -> (Frame, Next) {
        let id = frame.id;
        let error = |code, errno, msg: String| {
            Frame::new(
                MsgType::Error,
                id,
                ErrorReply::new(code, errno, msg).encode(),
            )
        };
        let Some(t) = MsgType::from_u8(frame.msg_type).filter(|t| (*t as u8) < 0x80) else {
            self.bad_frames += 1;
            let msg = format!("unknown request type 0x{:02x}", frame.msg_type);
            return (error(ErrorCode::UnknownType, 0, msg), Next::Continue);
        };
        let reply = |payload: Vec<u8>| Frame::new(t.reply(), id, payload);
        let bad_payload = |e: modvisor_guest_protocol::message::DecodeError| {
            error(ErrorCode::BadPayload, 0, e.to_string())
        };
        match t {
            MsgType::Hello => {
                let hello = HelloReply {
                    kernel_release: procfs::kernel_release(),
                    agent_version: VERSION.to_string(),
                    uptime_ms: procfs::uptime_ms(),
                };
                (reply(hello.encode()), Next::Continue)
            }
            MsgType::Load => match LoadRequest::decode(&frame.payload) {
                Err(e) => (bad_payload(e), Next::Continue),
                Ok(req) => match self.timed_load(&req) {
                    Ok(kernel_us) => (reply(LoadReply { kernel_us }.encode()), Next::Continue),
                    Err(e) => {
                        let msg = format!("loading {}: {}", req.name, kmod::describe(e));
                        (error(ErrorCode::Kernel, e as i32, msg), Next::Continue)
                    }
                },
            },
            MsgType::Unload => match UnloadRequest::decode(&frame.payload) {
                Err(e) => (bad_payload(e), Next::Continue),
                Ok(req) => match kmod::unload(&req.name) {
                    Ok(()) => (reply(Vec::new()), Next::Continue),
                    Err(e) => {
                        let msg = format!("unloading {}: {}", req.name, kmod::describe(e));
                        (error(ErrorCode::Kernel, e as i32, msg), Next::Continue)
                    }
                },
            },
            MsgType::List => {
                let list = ListReply {
                    modules: procfs::modules(),
                };
                (reply(list.encode()), Next::Continue)
            }
            MsgType::Health => {
                let health = HealthReply {
                    uptime_ms: procfs::uptime_ms(),
                    mem_available_kib: procfs::mem_available_kib(),
                    bad_frames: self.bad_frames,
                    load_requests: self.load_requests,
                };
                (reply(health.encode()), Next::Continue)
            }
            MsgType::Poweroff => (reply(Vec::new()), Next::PowerOff),
            _ => unreachable_reply(id),
        }
    }

    fn timed_load(&mut self, req: &LoadRequest) -> Result<u64, nix::errno::Errno> {
        self.load_requests += 1;
        let start = std::time::Instant::now();
        kmod::load(&req.image, &req.params)?;
        Ok(start.elapsed().as_micros() as u64)
    }

    /// Answers a frame that could not be read.
    pub fn refuse(&mut self, e: &FrameError) -> Frame {
        self.bad_frames += 1;
        let (code, id) = match e {
            FrameError::BadChecksum { id } => (ErrorCode::BadChecksum, *id),
            FrameError::TooLarge { id, .. } => (ErrorCode::TooLarge, *id),
            FrameError::BadVersion { id, .. } => (ErrorCode::BadVersion, *id),
        };
        Frame::new(
            MsgType::Error,
            id,
            ErrorReply::new(code, 0, e.to_string()).encode(),
        )
    }

    /// Serves `stream` until it ends or the host asks for a poweroff.
    pub fn serve<S: Read + Write>(&mut self, stream: &mut S) -> std::io::Result<Next> {
        let mut reader = FrameReader::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => return Ok(Next::Continue),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            reader.push(&buf[..n]);
            while let Some(item) = reader.next_frame() {
                let (reply, next) = match item {
                    Ok(frame) => self.handle(&frame),
                    Err(e) => (self.refuse(&e), Next::Continue),
                };
                stream.write_all(&reply.encode())?;
                stream.flush()?;
                if next == Next::PowerOff {
                    return Ok(next);
                }
            }
        }
    }
}

fn unreachable_reply(id: u32) -> (Frame, Next) {
    let e = ErrorReply::new(ErrorCode::UnknownType, 0, "not a request");
    (Frame::new(MsgType::Error, id, e.encode()), Next::Continue)
}
