//! The guest agent: serves the host's requests on a byte stream (the guest's virtio-serial
//! port `org.modvisor.agent`, or `/dev/ttyS1` where there is none).
//!
//! It loads modules with `finit_module` (from a memfd; `init_module` where that is not
//! available), unloads them with `delete_module`, lists `/proc/modules` and the network
//! interfaces, reports health,
//! runs the tenant's commands in the tenant context, and powers the guest off. Any frame
//! it cannot use is answered with an error reply and it goes on serving: nothing the host
//! (or anyone else writing to the port) sends can stop it.
//!
//! The host binds the agent to this boot's key first (`Bind`, once); from then on only
//! sealed requests with a rising sequence number are served, and tenant processes start
//! only after that ([`tenant::TenantContext::start`]).

#![deny(unsafe_code)]

pub mod confine;
pub mod exec;
pub mod interfaces;
pub mod kmod;
pub mod namespace;
pub mod platform;
pub mod procfs;
pub mod tenant;
pub mod user_data;

use modvisor_guest_protocol::exec::ExecRequest;
use modvisor_guest_protocol::message::{
    BindRequest, ErrorCode, ErrorReply, HealthReply, HelloReply, ListReply, LoadReply, LoadRequest,
    UnloadRequest,
};
use modvisor_guest_protocol::seal::{ChannelKey, Direction};
use modvisor_guest_protocol::user_data::RunUserData;
use modvisor_guest_protocol::{Frame, FrameError, FrameReader, MsgType};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tenant::TenantContext;

/// The agent's version, reported in `hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Commands that may run at once; one more is refused with `Busy`.
pub const MAX_RUNNING_EXECS: usize = 8;

/// What the serve loop should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep serving.
    Continue,
    /// The host asked for a poweroff (already acknowledged).
    PowerOff,
}

/// Where replies go: the channel, shared by the serve loop and the threads that run
/// commands (each reply is one write of a whole frame).
#[derive(Clone)]
pub struct ReplySink(Arc<Mutex<Box<dyn Write + Send>>>);

impl ReplySink {
    /// Replies written to `w`.
    pub fn new(w: impl Write + Send + 'static) -> Self {
        ReplySink(Arc::new(Mutex::new(Box::new(w))))
    }

    /// Writes replies to `w` from now on (the channel was reopened).
    pub fn replace(&self, w: impl Write + Send + 'static) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Box::new(w);
    }

    /// Sends one frame.
    pub fn send(&self, frame: &Frame) -> std::io::Result<()> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&frame.encode())?;
        w.flush()
    }
}

/// How a request arrived, and so how its reply must go.
#[derive(Debug, Clone, Copy)]
struct ReplyTo {
    id: u32,
    /// The request's sequence number, when it was sealed.
    seq: Option<u64>,
}

/// The agent's state across requests.
pub struct Agent {
    key: Option<ChannelKey>,
    last_seq: u64,
    /// Frames that could not be used (broken, unknown, unsealed or replayed).
    pub bad_frames: u64,
    /// `Load` requests received.
    pub load_requests: u64,
    tenant: Arc<dyn TenantContext>,
    running_execs: Arc<AtomicUsize>,
    first_boot: user_data::FirstBoot,
}

impl Agent {
    /// An unbound agent whose tenant processes run in `tenant`.
    pub fn new(tenant: Arc<dyn TenantContext>) -> Self {
        Agent {
            key: None,
            last_seq: 0,
            bad_frames: 0,
            load_requests: 0,
            tenant,
            running_execs: Arc::new(AtomicUsize::new(0)),
            first_boot: user_data::FirstBoot::default(),
        }
    }

    fn reply_frame(&self, to: ReplyTo, t: MsgType, body: Vec<u8>) -> Frame {
        match (to.seq, &self.key) {
            (Some(seq), Some(key)) => {
                let sealed = key.seal(Direction::ToHost, t as u8, to.id, seq, &body);
                Frame::new(t, to.id, sealed)
            }
            _ => Frame::new(t, to.id, body),
        }
    }

    fn error_frame(&self, to: ReplyTo, code: ErrorCode, errno: i32, msg: String) -> Frame {
        let body = ErrorReply::new(code, errno, msg).encode();
        self.reply_frame(to, MsgType::Error, body)
    }

    /// Answers one frame: the reply now, or `None` when a thread will send it to `sink`.
    pub fn handle(&mut self, frame: &Frame, sink: &ReplySink) -> (Option<Frame>, Next) {
        let plain = ReplyTo {
            id: frame.id,
            seq: None,
        };
        let Some(t) = MsgType::from_u8(frame.msg_type).filter(|t| (*t as u8) < 0x80) else {
            self.bad_frames += 1;
            let msg = format!("unknown request type 0x{:02x}", frame.msg_type);
            return (
                Some(self.error_frame(plain, ErrorCode::UnknownType, 0, msg)),
                Next::Continue,
            );
        };
        match t {
            MsgType::Hello => {
                let hello = HelloReply {
                    kernel_release: procfs::kernel_release(),
                    agent_version: VERSION.to_string(),
                    uptime_ms: procfs::uptime_ms(),
                    bound: self.key.is_some(),
                    last_seq: self.last_seq,
                };
                (
                    Some(self.reply_frame(plain, t.reply(), hello.encode())),
                    Next::Continue,
                )
            }
            MsgType::Bind => (Some(self.bind(frame)), Next::Continue),
            _ => match self.unseal(t, frame) {
                Err(refusal) => (Some(refusal), Next::Continue),
                Ok((to, body)) => self.serve_sealed(t, to, &body, sink),
            },
        }
    }

    fn bind(&mut self, frame: &Frame) -> Frame {
        let plain = ReplyTo {
            id: frame.id,
            seq: None,
        };
        let key = match BindRequest::decode(&frame.payload) {
            Err(e) => return self.error_frame(plain, ErrorCode::BadPayload, 0, e.to_string()),
            Ok(b) => match ChannelKey::from_slice(&b.key) {
                Some(k) => k,
                None => {
                    let msg = "a channel key has 32 bytes".to_string();
                    return self.error_frame(plain, ErrorCode::BadPayload, 0, msg);
                }
            },
        };
        match &self.key {
            Some(held) if !held.matches(key.as_bytes()) => {
                self.bad_frames += 1;
                let msg = "bound to another key for this boot".to_string();
                self.error_frame(plain, ErrorCode::AlreadyBound, 0, msg)
            }
            Some(_) => self.reply_frame(
                ReplyTo {
                    seq: Some(0),
                    ..plain
                },
                MsgType::BindReply,
                vec![],
            ),
            None => {
                self.key = Some(key);
                // Tenant processes start only now: nothing of the tenant's ran before the
                // key arrived, so nothing of the tenant's could have read it.
                self.tenant.start();
                self.reply_frame(
                    ReplyTo {
                        seq: Some(0),
                        ..plain
                    },
                    MsgType::BindReply,
                    vec![],
                )
            }
        }
    }

    /// The body of a sealed request, or the refusal to send.
    fn unseal(&mut self, t: MsgType, frame: &Frame) -> Result<(ReplyTo, Vec<u8>), Frame> {
        let plain = ReplyTo {
            id: frame.id,
            seq: None,
        };
        let Some(key) = &self.key else {
            self.bad_frames += 1;
            let msg = "bind this boot's key first".to_string();
            return Err(self.error_frame(plain, ErrorCode::Unbound, 0, msg));
        };
        match key.open(Direction::ToAgent, t as u8, frame.id, &frame.payload) {
            Err(e) => {
                self.bad_frames += 1;
                Err(self.error_frame(plain, ErrorCode::AuthFailed, 0, format!("refused: {e}")))
            }
            Ok((seq, _)) if seq <= self.last_seq => {
                self.bad_frames += 1;
                let msg = format!("refused: sequence {seq} is not above {}", self.last_seq);
                Err(self.error_frame(plain, ErrorCode::AuthFailed, 0, msg))
            }
            Ok((seq, body)) => {
                self.last_seq = seq;
                Ok((
                    ReplyTo {
                        id: frame.id,
                        seq: Some(seq),
                    },
                    body.to_vec(),
                ))
            }
        }
    }

    fn serve_sealed(
        &mut self,
        t: MsgType,
        to: ReplyTo,
        body: &[u8],
        sink: &ReplySink,
    ) -> (Option<Frame>, Next) {
        let bad_payload = |e: modvisor_guest_protocol::message::DecodeError| {
            (ErrorCode::BadPayload, 0, e.to_string())
        };
        let result: Result<Vec<u8>, (ErrorCode, i32, String)> = match t {
            MsgType::Load => LoadRequest::decode(body)
                .map_err(bad_payload)
                .and_then(|req| {
                    self.load_requests += 1;
                    let start = std::time::Instant::now();
                    kmod::load(&req.image, &req.params)
                        .map(|()| {
                            let kernel_us = start.elapsed().as_micros() as u64;
                            LoadReply { kernel_us }.encode()
                        })
                        .map_err(|e| {
                            let msg = format!("loading {}: {}", req.name, kmod::describe(e));
                            (ErrorCode::Kernel, e as i32, msg)
                        })
                }),
            MsgType::Unload => UnloadRequest::decode(body)
                .map_err(bad_payload)
                .and_then(|req| {
                    kmod::unload(&req.name).map(|()| Vec::new()).map_err(|e| {
                        let msg = format!("unloading {}: {}", req.name, kmod::describe(e));
                        (ErrorCode::Kernel, e as i32, msg)
                    })
                }),
            MsgType::List => Ok(ListReply {
                modules: procfs::modules(),
            }
            .encode()),
            MsgType::Health => Ok(HealthReply {
                uptime_ms: procfs::uptime_ms(),
                mem_available_kib: procfs::mem_available_kib(),
                bad_frames: self.bad_frames,
                load_requests: self.load_requests,
            }
            .encode()),
            MsgType::Exec => match ExecRequest::decode(body) {
                Err(e) => Err(bad_payload(e)),
                Ok(req) => match self.start_exec(req, to, sink) {
                    Ok(()) => return (None, Next::Continue),
                    Err(refusal) => Err(refusal),
                },
            },
            MsgType::RunUserData => RunUserData::decode(body)
                .map_err(bad_payload)
                .map(|r| self.first_boot.run(r.script, self.tenant.clone()).encode()),
            MsgType::UserData => Ok(self.first_boot.status().encode()),
            MsgType::Interfaces => Ok(interfaces::interfaces().encode()),
            MsgType::Poweroff => {
                return (
                    Some(self.reply_frame(to, t.reply(), Vec::new())),
                    Next::PowerOff,
                )
            }
            _ => Err((ErrorCode::UnknownType, 0, "not a request".to_string())),
        };
        let frame = match result {
            Ok(payload) => self.reply_frame(to, t.reply(), payload),
            Err((code, errno, msg)) => self.error_frame(to, code, errno, msg),
        };
        (Some(frame), Next::Continue)
    }

    /// Runs `req` on a thread of its own, which sends the reply.
    fn start_exec(
        &self,
        req: ExecRequest,
        to: ReplyTo,
        sink: &ReplySink,
    ) -> Result<(), (ErrorCode, i32, String)> {
        let running = self.running_execs.clone();
        if running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING_EXECS {
            running.fetch_sub(1, Ordering::SeqCst);
            let msg = format!("{MAX_RUNNING_EXECS} commands are running already");
            return Err((ErrorCode::Busy, 0, msg));
        }
        let tenant = self.tenant.clone();
        let sink = sink.clone();
        let key = self.key.clone();
        let spawned = std::thread::Builder::new()
            .name("exec".into())
            .spawn(move || {
                let body = match tenant.command(&req.argv).and_then(|c| exec::run(c, &req)) {
                    Ok(reply) => Ok(reply.encode()),
                    Err(e) => Err(ErrorReply::new(
                        ErrorCode::Spawn,
                        e.raw_os_error().unwrap_or(0),
                        format!("starting {:?}: {e}", req.argv.first()),
                    )
                    .encode()),
                };
                running.fetch_sub(1, Ordering::SeqCst);
                let (t, body) = match body {
                    Ok(b) => (MsgType::ExecReply, b),
                    Err(b) => (MsgType::Error, b),
                };
                let payload = match (key, to.seq) {
                    (Some(k), Some(seq)) => k.seal(Direction::ToHost, t as u8, to.id, seq, &body),
                    _ => body,
                };
                if let Err(e) = sink.send(&Frame::new(t, to.id, payload)) {
                    println!("modvisor-guest-agent: sending an exec reply: {e}");
                }
            });
        spawned.map(drop).map_err(|e| {
            self.running_execs.fetch_sub(1, Ordering::SeqCst);
            (
                ErrorCode::Spawn,
                e.raw_os_error().unwrap_or(0),
                format!("no thread: {e}"),
            )
        })
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

    /// Serves `input` until it ends or the host asks for a poweroff; replies go to `sink`.
    pub fn serve<R: Read>(&mut self, input: &mut R, sink: &ReplySink) -> std::io::Result<Next> {
        let mut reader = FrameReader::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(Next::Continue),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            reader.push(&buf[..n]);
            while let Some(item) = reader.next_frame() {
                let (reply, next) = match item {
                    Ok(frame) => self.handle(&frame, sink),
                    Err(e) => (Some(self.refuse(&e)), Next::Continue),
                };
                if let Some(reply) = reply {
                    sink.send(&reply)?;
                }
                if next == Next::PowerOff {
                    return Ok(next);
                }
            }
        }
    }
}
