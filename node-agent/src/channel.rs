//! The host side of the guest-agent channel: requests over the Unix socket that the
//! hypervisor bridges to the guest's second serial port.
//!
//! Nothing the guest sends is trusted: replies are matched by request id, garbage is
//! skipped by the frame reader, and every wait has a deadline.

use modvisor_guest_protocol::message::{
    DecodeError, ErrorReply, HealthReply, HelloReply, ListReply, LoadReply, LoadRequest,
    LoadedModule, UnloadRequest,
};
use modvisor_guest_protocol::{Frame, FrameReader, MsgType};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

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
}

impl From<DecodeError> for ChannelError {
    fn from(e: DecodeError) -> Self {
        ChannelError::Protocol(e.to_string())
    }
}

/// A connection to one guest's agent.
pub struct AgentClient {
    stream: UnixStream,
    reader: FrameReader,
    next_id: u32,
}

impl AgentClient {
    /// Connects to the agent socket, retrying until `within` has passed.
    pub fn connect(socket: &Path, within: Duration) -> Result<Self, ChannelError> {
        let deadline = Instant::now() + within;
        loop {
            match crate::guest_files::connect_socket(socket) {
                Ok(stream) => {
                    return Ok(AgentClient {
                        stream,
                        reader: FrameReader::new(),
                        next_id: 1,
                    })
                }
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Writes raw bytes to the channel (tests use this to send hostile frames).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ChannelError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next frame (or frame error) from the guest, waiting up to `timeout`.
    pub fn read_frame(
        &mut self,
        timeout: Duration,
    ) -> Result<Result<Frame, modvisor_guest_protocol::FrameError>, ChannelError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64 * 1024];
        loop {
            if let Some(item) = self.reader.next_frame() {
                return Ok(item);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout {
                    what: "read",
                    secs: timeout.as_secs(),
                });
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(ChannelError::Io(std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the hypervisor closed the channel",
                    )))
                }
                Ok(n) => self.reader.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send(&mut self, t: MsgType, payload: Vec<u8>) -> Result<u32, ChannelError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.stream
            .write_all(&Frame::new(t, id, payload).encode())?;
        Ok(id)
    }

    /// Waits for the reply to request `id`, skipping anything else.
    fn reply(
        &mut self,
        id: u32,
        what: &'static str,
        timeout: Duration,
    ) -> Result<Frame, ChannelError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Honoured also while buffered frames (others' or broken ones) keep coming.
            if left.is_zero() {
                return Err(ChannelError::Timeout {
                    what,
                    secs: timeout.as_secs(),
                });
            }
            let frame = match self.read_frame(left) {
                Err(ChannelError::Timeout { .. }) => {
                    return Err(ChannelError::Timeout {
                        what,
                        secs: timeout.as_secs(),
                    })
                }
                Err(e) => return Err(e),
                Ok(Err(_)) => continue, // a corrupted frame from the guest: not ours
                Ok(Ok(f)) => f,
            };
            if frame.id != id {
                continue;
            }
            if frame.msg_type == MsgType::Error as u8 {
                let e = ErrorReply::decode(&frame.payload)?;
                return Err(ChannelError::Agent {
                    code: e.code,
                    errno: e.errno,
                    message: e.message,
                });
            }
            return Ok(frame);
        }
    }

    /// Sends a request and waits for its reply.
    pub fn request(
        &mut self,
        t: MsgType,
        payload: Vec<u8>,
        what: &'static str,
        timeout: Duration,
    ) -> Result<Frame, ChannelError> {
        let id = self.send(t, payload)?;
        let frame = self.reply(id, what, timeout)?;
        if frame.msg_type != t.reply() as u8 {
            return Err(ChannelError::Protocol(format!(
                "reply to {what} has type 0x{:02x}",
                frame.msg_type
            )));
        }
        Ok(frame)
    }

    /// Says hello until the agent answers (it may still be booting), up to `within`.
    pub fn hello(&mut self, within: Duration) -> Result<HelloReply, ChannelError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout {
                    what: "hello",
                    secs: within.as_secs(),
                });
            }
            match self.request(
                MsgType::Hello,
                Vec::new(),
                "hello",
                left.min(Duration::from_secs(1)),
            ) {
                Ok(f) => return Ok(HelloReply::decode(&f.payload)?),
                Err(ChannelError::Timeout { .. }) => continue,
                // Bytes sent while the guest booted may reach the agent as a broken frame.
                Err(ChannelError::Agent { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Loads a module image with parameters; returns the microseconds the guest kernel
    /// spent in `finit_module`.
    pub fn load(
        &mut self,
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
    pub fn unload(&mut self, name: &str, timeout: Duration) -> Result<(), ChannelError> {
        let req = UnloadRequest {
            name: name.to_string(),
        };
        self.request(MsgType::Unload, req.encode(), "unload", timeout)
            .map(drop)
    }

    /// The guest's loaded modules, from its own `/proc/modules`.
    pub fn list(&mut self, timeout: Duration) -> Result<Vec<LoadedModule>, ChannelError> {
        let f = self.request(MsgType::List, Vec::new(), "list", timeout)?;
        Ok(ListReply::decode(&f.payload)?.modules)
    }

    /// The agent's health report.
    pub fn health(&mut self, timeout: Duration) -> Result<HealthReply, ChannelError> {
        let f = self.request(MsgType::Health, Vec::new(), "health", timeout)?;
        Ok(HealthReply::decode(&f.payload)?)
    }

    /// Asks the guest to power off (acknowledged before it does).
    pub fn poweroff(&mut self, timeout: Duration) -> Result<(), ChannelError> {
        self.request(MsgType::Poweroff, Vec::new(), "poweroff", timeout)
            .map(drop)
    }
}
