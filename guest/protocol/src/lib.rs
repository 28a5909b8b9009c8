//! The host <-> guest-agent protocol of modvisor: versioned frames over a byte stream
//! (the guest's second serial port).
//!
//! ```text
//! offset  size  field
//! 0       4     magic "MVGA" (lets a reader resynchronise after garbage)
//! 4       1     version (2)
//! 5       1     type (see [`MsgType`])
//! 6       2     reserved, 0
//! 8       4     request id, little endian (a reply carries its request's id)
//! 12      4     payload length N, little endian, at most [`MAX_PAYLOAD`]
//! 16      N     payload (see [`message`])
//! 16+N    4     CRC-32 (IEEE) of bytes 4 .. 16+N, little endian
//! ```
//!
//! A reader that meets a bad magic skips to the next magic; a bad checksum or an unknown
//! type is answered with an [`message::ErrorReply`] and the reader goes on; a length over
//! [`MAX_PAYLOAD`] is answered likewise and the reader resynchronises on the next magic.
//!
//! The checksum catches line noise, not an adversary: once the host has bound the agent to
//! this boot's key (`Bind`), every other request and its reply are sealed ([`seal`]), so a
//! frame that tenant root writes to the port (or injects with `TIOCSTI`) is refused.

#![forbid(unsafe_code)]

/// The name of the agent's virtio-serial port (`virtserialport,name=...` on the host,
/// `/sys/class/virtio-ports/*/name` in the guest).
pub const AGENT_PORT: &str = "org.modvisor.agent";

pub mod exec;
pub mod frame;
pub mod interfaces;
pub mod message;
pub mod net;
pub mod seal;
pub mod user_data;

pub use frame::{Frame, FrameError, FrameReader, HEADER_LEN, MAGIC, MAX_PAYLOAD, VERSION};
pub use message::MsgType;
