//! The host side of the guest-agent channel: requests over the Unix socket that the
//! hypervisor bridges to the guest's second serial port.
//!
//! One connection carries many requests at once (a long `exec` does not hold up a module
//! load or a health check): a reader thread routes each reply to its request by id. Once
//! attached with this boot's key ([`AgentClient::attach`]), every request is sealed and
//! only sealed replies are taken, so nothing tenant root writes to the port in the guest
//! passes as an answer. Nothing the guest sends is trusted: garbage is skipped by the
//! frame reader, and every wait has a deadline.

use modvisor_guest_protocol::exec::{ExecReply, ExecRequest};
use modvisor_guest_protocol::interfaces::InterfacesReply;
use modvisor_guest_protocol::message::{
    BindRequest, DecodeError, ErrorReply, HealthReply, HelloReply, ListReply, LoadReply,
    LoadRequest, LoadedModule, UnloadRequest,
};
use modvisor_guest_protocol::seal::{ChannelKey, Direction};
use modvisor_guest_protocol::user_data::{RunUserData, UserDataReply};
use modvisor_guest_protocol::{Frame, FrameError, FrameReader, MsgType};
use prometheus::IntCounterVec;
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A channel request failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket failed.
    #[error("guest channel: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("guest channel: no answer to {what} within {secs} s")]
    Timeout {
        /// The request.
        what: &'static str,
        /// The time waited.
        secs: u64,
    },
    /// The agent answered with an error.
    #[error("guest agent: {message} (code {code}, errno {errno})")]
    Agent {
        /// The protocol error code.
        code: u32,
        /// The kernel's errno, for kernel failures.
        errno: i32,
        /// The agent's message.
        message: String,
    },
    /// The agent's reply could not be understood.
    #[error("guest channel: {0}")]
    Protocol(String),
    /// The channel was closed (the hypervisor ended, or the connection broke).
    #[error("guest channel closed: {0}")]
    Closed(String),
    /// A sealed request before [`AgentClient::attach`].
    #[error("guest channel: not attached to the agent (no key yet)")]
    NotAttached,
}

impl ChannelError {
    /// The kind counted in `modvisor_node_guest_channel_errors_total`, or `None` when the
    /// channel worked and the agent answered with an error of its own.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            ChannelError::Io(_) => Some("io"),
            ChannelError::Timeout { .. } => Some("timeout"),
            ChannelError::Agent { .. } => None,
            ChannelError::Protocol(_) => Some("protocol"),
            ChannelError::Closed(_) => Some("closed"),
            ChannelError::NotAttached => Some("not_attached"),
        }
    }
}

impl From<DecodeError> for ChannelError {
    fn from(e: DecodeError) -> Self {
        ChannelError::Protocol(e.to_string())
    }
}

/// How the reply to a request must look.
#[derive(Clone)]
enum Expect {
    /// Unsealed (`Hello`).
    Plain,
    /// Sealed with this key and sequence number.
    Sealed(ChannelKey, u64),
    /// `Bind`: a sealed reply (sequence 0) on success, a plain error on refusal.
    Bind(ChannelKey),
}

struct Waiter {
    expect: Expect,
    tx: SyncSender<Result<Frame, ChannelError>>,
}

struct WriteSide {
    stream: UnixStream,
    next_id: u32,
    next_seq: u64,
    key: Option<ChannelKey>,
}

/// Frames no request waited for (the agent's answers to raw bytes sent by tests, or a
/// guest's noise); only the latest few are kept.
const STRAYS_KEPT: usize = 64;

struct Shared {
    write: Mutex<WriteSide>,
    pending: Mutex<HashMap<u32, Waiter>>,
    closed: Mutex<Option<String>>,
    strays: Mutex<VecDeque<Result<Frame, FrameError>>>,
    stray_arrived: Condvar,
    /// Where failures are counted by kind, once the node has said so.
    errors: OnceLock<IntCounterVec>,
}

impl Shared {
    fn count(&self, kind: &str) {
        if let Some(c) = self.errors.get() {
            c.with_label_values(&[kind]).inc();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding the lock leaves consistent data here (maps
    // and counters), so the lock is taken back rather than spreading the panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection to one guest's agent (shared by reference; requests may run at once).
pub struct AgentClient {
    shared: Arc<Shared>,
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        // Ends the reader thread (it sees end of file).
        if let Err(e) = lock(&self.shared.write)
            .stream
            .shutdown(std::net::Shutdown::Both)
        {
            tracing::debug!(error = %e, "shutting down a guest channel");
        }
    }
}

/// Starts sealed sequence numbers above anything an earlier node agent used with the same
/// guest: nanoseconds since the epoch (and above what the agent says it last took).
fn sequence_floor() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

impl AgentClient {
    /// Connects to the agent socket, retrying until `within` has passed.
    pub fn connect(socket: &Path, within: Duration) -> Result<Self, ChannelError> {
        let deadline = Instant::now() + within;
        let stream = loop {
            match crate::guest_files::connect_socket(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        // A guest that stops reading must not hold a writer (and every request queued
        // behind it) for ever.
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        let reader = stream.try_clone()?;
        let shared = Arc::new(Shared {
            write: Mutex::new(WriteSide {
                stream,
                next_id: 1,
                next_seq: 0,
                key: None,
            }),
            pending: Mutex::new(HashMap::new()),
            closed: Mutex::new(None),
            strays: Mutex::new(VecDeque::new()),
            stray_arrived: Condvar::new(),
            errors: OnceLock::new(),
        });
        let for_reader = shared.clone();
        std::thread::Builder::new()
            .name("guest-channel".into())
            .spawn(move || read_replies(reader, &for_reader))?;
        Ok(AgentClient { shared })
    }

    /// Writes raw bytes to the channel (tests use this to send hostile frames).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), ChannelError> {
        lock(&self.shared.write).stream.write_all(bytes)?;
        Ok(())
    }

    /// The next frame (or frame error) that no request waited for, up to `timeout`.
    pub fn read_frame(&self, timeout: Duration) -> Result<Result<Frame, FrameError>, ChannelError> {
        let deadline = Instant::now() + timeout;
        let mut strays = lock(&self.shared.strays);
        loop {
            if let Some(f) = strays.pop_front() {
                return Ok(f);
            }
            if let Some(why) = lock(&self.shared.closed).clone() {
                return Err(ChannelError::Closed(why));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout {
                    what: "read",
                    secs: timeout.as_secs(),
                });
            }
            strays = self
                .shared
                .stray_arrived
                .wait_timeout(strays, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn exchange(
        &self,
        t: MsgType,
        body: &[u8],
        sealed: bool,
        what: &'static str,
        timeout: Duration,
    ) -> Result<Frame, ChannelError> {
        let (tx, rx) = sync_channel(1);
        let id = {
            let mut w = lock(&self.shared.write);
            let id = w.next_id;
            w.next_id = w.next_id.wrapping_add(1).max(1);
            let (payload, expect) = match (sealed, t, w.key.clone()) {
                (false, MsgType::Bind, _) => {
                    let key = BindRequest::decode(body)
                        .ok()
                        .and_then(|b| ChannelKey::from_slice(&b.key))
                        .ok_or(ChannelError::Protocol("a bind needs a key".into()))?;
                    (body.to_vec(), Expect::Bind(key))
                }
                (false, _, _) => (body.to_vec(), Expect::Plain),
                (true, _, None) => return Err(ChannelError::NotAttached),
                (true, _, Some(key)) => {
                    let seq = w.next_seq;
                    w.next_seq += 1;
                    let p = key.seal(Direction::ToAgent, t as u8, id, seq, body);
                    (p, Expect::Sealed(key, seq))
                }
            };
            if let Some(why) = lock(&self.shared.closed).clone() {
                return Err(ChannelError::Closed(why));
            }
            lock(&self.shared.pending).insert(id, Waiter { expect, tx });
            if let Err(e) = w.stream.write_all(&Frame::new(t, id, payload).encode()) {
                lock(&self.shared.pending).remove(&id);
                return Err(e.into());
            }
            id
        };
        let frame = match rx.recv_timeout(timeout) {
            Ok(r) => r?,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                lock(&self.shared.pending).remove(&id);
                return Err(ChannelError::Timeout {
                    what,
                    secs: timeout.as_secs(),
                });
            }
        };
        if frame.msg_type == MsgType::Error as u8 {
            let e = ErrorReply::decode(&frame.payload)?;
            return Err(ChannelError::Agent {
                code: e.code,
                errno: e.errno,
                message: e.message,
            });
        }
        if frame.msg_type != t.reply() as u8 {
            return Err(ChannelError::Protocol(format!(
                "reply to {what} has type 0x{:02x}",
                frame.msg_type
            )));
        }
        Ok(frame)
    }

    /// Sends a sealed request and waits for its sealed reply (the body, unsealed).
    pub fn request(
        &self,
        t: MsgType,
        body: Vec<u8>,
        what: &'static str,
        timeout: Duration,
    ) -> Result<Frame, ChannelError> {
        self.exchange(t, &body, true, what, timeout)
            .inspect_err(|e| {
                if let Some(kind) = e.kind() {
                    self.shared.count(kind);
                }
            })
    }

    /// Counts this channel's failures from now on in `counter` (label `kind`: io, timeout,
    /// protocol, closed, not_attached, corrupt_frame, unsealed_reply); requests made before
    /// the guest is attached (hellos while it boots) are not counted.
    pub fn count_errors_in(&self, counter: IntCounterVec) {
        if self.shared.errors.set(counter).is_err() {
            tracing::debug!("this guest channel's errors are counted already");
        }
    }

    /// Says hello until the agent answers (it may still be booting), up to `within`.
    pub fn hello(&self, within: Duration) -> Result<HelloReply, ChannelError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout {
                    what: "hello",
                    secs: within.as_secs(),
                });
            }
            let wait = left.min(Duration::from_secs(1));
            match self.exchange(MsgType::Hello, &[], false, "hello", wait) {
                Ok(f) => return Ok(HelloReply::decode(&f.payload)?),
                Err(ChannelError::Timeout { .. }) => continue,
                // Bytes sent while the guest booted may reach the agent as a broken frame.
                Err(ChannelError::Agent { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Says hello (up to `within`), then makes sure the agent holds `key`: a fresh agent is
    /// bound to it (before it starts any tenant process); one bound already must answer
    /// a request sealed with it. From then on every request is sealed.
    pub fn attach(&self, key: &ChannelKey, within: Duration) -> Result<HelloReply, ChannelError> {
        let hello = self.hello(within)?;
        {
            let mut w = lock(&self.shared.write);
            w.key = Some(key.clone());
            w.next_seq = w
                .next_seq
                .max(sequence_floor())
                .max(hello.last_seq.saturating_add(1));
        }
        if hello.bound {
            // Not `Bind` again: a tenant could forge the refusal of a plain bind, but not
            // a sealed answer.
            self.health(Duration::from_secs(30))?;
        } else {
            let bind = BindRequest {
                key: key.as_bytes().to_vec(),
            };
            self.exchange(
                MsgType::Bind,
                &bind.encode(),
                false,
                "bind",
                Duration::from_secs(30),
            )?;
        }
        Ok(hello)
    }

    /// Loads a module image with parameters; returns the microseconds the guest kernel
    /// spent in `finit_module`.
    pub fn load(
        &self,
        name: &str,
        params: &str,
        image: &[u8],
        timeout: Duration,
    ) -> Result<u64, ChannelError> {
        let req = LoadRequest {
            name: name.to_string(),
            params: params.to_string(),
            image: image.to_vec(),
        };
        let f = self.request(MsgType::Load, req.encode(), "load", timeout)?;
        Ok(LoadReply::decode(&f.payload)?.kernel_us)
    }

    /// Unloads a module.
    pub fn unload(&self, name: &str, timeout: Duration) -> Result<(), ChannelError> {
        let req = UnloadRequest {
            name: name.to_string(),
        };
        self.request(MsgType::Unload, req.encode(), "unload", timeout)
            .map(drop)
    }

    /// The guest's loaded modules, from its own `/proc/modules`.
    pub fn list(&self, timeout: Duration) -> Result<Vec<LoadedModule>, ChannelError> {
        let f = self.request(MsgType::List, Vec::new(), "list", timeout)?;
        Ok(ListReply::decode(&f.payload)?.modules)
    }

    /// The guest's network interfaces, from its own kernel.
    pub fn interfaces(&self, timeout: Duration) -> Result<InterfacesReply, ChannelError> {
        let f = self.request(MsgType::Interfaces, Vec::new(), "interfaces", timeout)?;
        Ok(InterfacesReply::decode(&f.payload)?)
    }

    /// The agent's health report.
    pub fn health(&self, timeout: Duration) -> Result<HealthReply, ChannelError> {
        let f = self.request(MsgType::Health, Vec::new(), "health", timeout)?;
        Ok(HealthReply::decode(&f.payload)?)
    }

    /// Runs a command in the guest's tenant context; waits up to the command's own timeout
    /// plus `slack`.
    pub fn exec(&self, req: &ExecRequest, slack: Duration) -> Result<ExecReply, ChannelError> {
        let timeout = Duration::from_millis(u64::from(req.timeout_ms)) + slack;
        let f = self.request(MsgType::Exec, req.encode(), "exec", timeout)?;
        Ok(ExecReply::decode(&f.payload)?)
    }

    /// Starts the first-boot script (once per boot; asked again, the agent answers its
    /// state without running it again).
    pub fn run_user_data(
        &self,
        script: &str,
        timeout: Duration,
    ) -> Result<UserDataReply, ChannelError> {
        let req = RunUserData {
            script: script.to_string(),
        };
        let f = self.request(MsgType::RunUserData, req.encode(), "user_data", timeout)?;
        Ok(UserDataReply::decode(&f.payload)?)
    }

    /// Where the first-boot script is.
    pub fn user_data(&self, timeout: Duration) -> Result<UserDataReply, ChannelError> {
        let f = self.request(MsgType::UserData, Vec::new(), "user_data", timeout)?;
        Ok(UserDataReply::decode(&f.payload)?)
    }

    /// Asks the guest to power off (acknowledged before it does).
    pub fn poweroff(&self, timeout: Duration) -> Result<(), ChannelError> {
        self.request(MsgType::Poweroff, Vec::new(), "poweroff", timeout)
            .map(drop)
    }
}

/// The reader thread: routes each reply to its waiting request; ends at end of file.
fn read_replies(mut stream: UnixStream, shared: &Shared) {
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    let why = loop {
        match stream.read(&mut buf) {
            Ok(0) => break "the hypervisor closed the channel".to_string(),
            Ok(n) => reader.push(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break e.to_string(),
        }
        while let Some(item) = reader.next_frame() {
            match item {
                Ok(frame) => route(shared, frame),
                Err(e) => {
                    shared.count("corrupt_frame");
                    stray(shared, Err(e))
                }
            }
        }
    };
    *lock(&shared.closed) = Some(why.clone());
    for (_, w) in lock(&shared.pending).drain() {
        // The requester may have given up already; nothing else to tell.
        drop(w.tx.try_send(Err(ChannelError::Closed(why.clone()))));
    }
    shared.stray_arrived.notify_all();
}

fn stray(shared: &Shared, item: Result<Frame, FrameError>) {
    let mut strays = lock(&shared.strays);
    if strays.len() >= STRAYS_KEPT {
        strays.pop_front();
    }
    strays.push_back(item);
    shared.stray_arrived.notify_all();
}

/// Hands `frame` to the request it answers, if it is a valid answer to it.
fn route(shared: &Shared, frame: Frame) {
    let mut pending = lock(&shared.pending);
    let Some(waiter) = pending.get(&frame.id) else {
        drop(pending);
        return stray(shared, Ok(frame));
    };
    let is_error = frame.msg_type == MsgType::Error as u8;
    let opened = match &waiter.expect {
        Expect::Plain => Some(frame),
        Expect::Bind(_) if is_error => Some(frame),
        Expect::Bind(key) => open(key, 0, frame),
        Expect::Sealed(key, seq) => open(key, *seq, frame),
    };
    match opened {
        Some(f) => {
            if let Some(w) = pending.remove(&f.id) {
                // The requester may have timed out and left; the reply is then dropped.
                drop(w.tx.try_send(Ok(f)));
            }
        }
        // Not sealed by the agent for this request: forged (by tenant root writing to the
        // port) or stale. The request keeps waiting for the real answer.
        None => {
            drop(pending);
            shared.count("unsealed_reply");
            tracing::warn!("a guest sent a reply that is not sealed for its request");
        }
    }
}

fn open(key: &ChannelKey, seq: u64, frame: Frame) -> Option<Frame> {
    let (s, body) = key
        .open(Direction::ToHost, frame.msg_type, frame.id, &frame.payload)
        .ok()?;
    (s == seq).then(|| Frame {
        msg_type: frame.msg_type,
        id: frame.id,
        payload: body.to_vec(),
    })
}

/// A fresh random channel key (from the host's kernel).
pub fn new_key() -> std::io::Result<ChannelKey> {
    let mut bytes = [0u8; modvisor_guest_protocol::seal::KEY_LEN];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    ChannelKey::from_slice(&bytes).ok_or_else(|| std::io::Error::other("key length"))
}
