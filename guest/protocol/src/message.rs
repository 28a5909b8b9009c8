//! Message types and their payloads.
//!
//! Payloads are little-endian fields: `u32`/`u64`/`i32` as fixed-width integers, strings
//! and byte strings as a `u32` length followed by the bytes, lists as a `u32` count
//! followed by the items. Replies have the request's type with the high bit set.

use std::fmt;

/// Message types. Requests go host -> guest; replies (`| 0x80`) guest -> host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// Who are you? -> [`HelloReply`].
    Hello = 0x01,
    /// Load a module -> [`LoadReply`], or [`ErrorReply`].
    Load = 0x02,
    /// Unload a module -> empty reply, or [`ErrorReply`].
    Unload = 0x03,
    /// List loaded modules -> [`ListReply`].
    List = 0x04,
    /// Are you well? -> [`HealthReply`].
    Health = 0x05,
    /// Power the guest off -> empty reply, then the guest powers off.
    Poweroff = 0x06,
    /// Give the agent this boot's channel key -> empty reply (sealed). Unsealed; taken
    /// once per boot, before any tenant process runs ([`BindRequest`]).
    Bind = 0x07,
    /// Run a command in the tenant context -> [`crate::exec::ExecReply`].
    Exec = 0x08,
    /// Start the first-boot script (once per boot) -> [`crate::user_data::UserDataReply`].
    RunUserData = 0x09,
    /// Where the first-boot script is -> [`crate::user_data::UserDataReply`].
    UserData = 0x0a,
    /// The guest's network interfaces -> [`crate::interfaces::InterfacesReply`].
    Interfaces = 0x0b,
    /// Reply to Hello.
    HelloReply = 0x81,
    /// Reply to Load.
    LoadReply = 0x82,
    /// Reply to Unload.
    UnloadReply = 0x83,
    /// Reply to List.
    ListReply = 0x84,
    /// Reply to Health.
    HealthReply = 0x85,
    /// Reply to Poweroff.
    PoweroffReply = 0x86,
    /// Reply to Bind.
    BindReply = 0x87,
    /// Reply to Exec.
    ExecReply = 0x88,
    /// Reply to RunUserData.
    RunUserDataReply = 0x89,
    /// Reply to UserData.
    UserDataReply = 0x8a,
    /// Reply to Interfaces.
    InterfacesReply = 0x8b,
    /// A request failed, or could not be read.
    Error = 0xff,
}

impl MsgType {
    /// The type for a raw byte, if known.
    pub fn from_u8(b: u8) -> Option<Self> {
        use MsgType::*;
        Some(match b {
            0x01 => Hello,
            0x02 => Load,
            0x03 => Unload,
            0x04 => List,
            0x05 => Health,
            0x06 => Poweroff,
            0x07 => Bind,
            0x08 => Exec,
            0x09 => RunUserData,
            0x0a => UserData,
            0x0b => Interfaces,
            0x81 => HelloReply,
            0x82 => LoadReply,
            0x83 => UnloadReply,
            0x84 => ListReply,
            0x85 => HealthReply,
            0x86 => PoweroffReply,
            0x87 => BindReply,
            0x88 => ExecReply,
            0x89 => RunUserDataReply,
            0x8a => UserDataReply,
            0x8b => InterfacesReply,
            0xff => Error,
            _ => return None,
        })
    }

    /// The reply type of a request type.
    pub fn reply(self) -> MsgType {
        MsgType::from_u8(self as u8 | 0x80).unwrap_or(MsgType::Error)
    }
}

/// A payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed payload: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Builds a payload.
#[derive(Debug, Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a `u32`.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u64`.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends an `i32`.
    pub fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a length-prefixed byte string.
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0
            .extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
    /// Appends a length-prefixed UTF-8 string.
    pub fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }
    /// The payload.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a payload, bounds-checked.
#[derive(Debug)]
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Reads `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Reader(payload)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// An `i32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<String, DecodeError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_string)
            .map_err(|_| DecodeError("string is not UTF-8"))
    }
    /// A list count, refused when it could not possibly fit in the rest of the payload.
    pub fn count(&mut self, min_item_len: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.0.len() {
            return Err(DecodeError("list count exceeds the payload"));
        }
        Ok(n)
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Fails unless everything was read.
    pub fn end(self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

/// `Hello` reply: who the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    /// The guest kernel's release (`uname -r`).
    pub kernel_release: String,
    /// The agent's version.
    pub agent_version: String,
    /// Milliseconds since the guest kernel booted.
    pub uptime_ms: u64,
    /// Whether the agent holds this boot's channel key (then every request but `Hello`
    /// and `Bind` must be sealed with it).
    pub bound: bool,
    /// The sequence number of the last sealed request the agent accepted (the next must
    /// be greater).
    pub last_seq: u64,
}

impl HelloReply {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new()
            .str(&self.kernel_release)
            .str(&self.agent_version)
            .u64(self.uptime_ms)
            .u32(u32::from(self.bound))
            .u64(self.last_seq)
            .finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let v = HelloReply {
            kernel_release: r.str()?,
            agent_version: r.str()?,
            uptime_ms: r.u64()?,
            bound: r.u32()? != 0,
            last_seq: r.u64()?,
        };
        r.end()?;
        Ok(v)
    }
}

/// `Bind` request: the channel key of this boot.
#[derive(Clone, PartialEq, Eq)]
pub struct BindRequest {
    /// The key ([`crate::seal::KEY_LEN`] bytes).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for BindRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BindRequest { key: <redacted> }")
    }
}

impl BindRequest {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new().bytes(&self.key).finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let v = BindRequest {
            key: r.bytes()?.to_vec(),
        };
        r.end()?;
        Ok(v)
    }
}

/// `Load` request: a module image and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRequest {
    /// Module name (for messages; the kernel takes the name from the image).
    pub name: String,
    /// Parameters, `key=value` separated by spaces.
    pub params: String,
    /// The .ko bytes.
    pub image: Vec<u8>,
}

impl LoadRequest {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new()
            .str(&self.name)
            .str(&self.params)
            .bytes(&self.image)
            .finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let v = LoadRequest {
            name: r.str()?,
            params: r.str()?,
            image: r.bytes()?.to_vec(),
        };
        r.end()?;
        Ok(v)
    }
}

/// `Load` reply: how long the guest kernel took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReply {
    /// Microseconds spent in `finit_module`/`init_module` inside the guest (what a plain
    /// `insmod` of the same file costs there, less reading the file).
    pub kernel_us: u64,
}

impl LoadReply {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new().u64(self.kernel_us).finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let v = LoadReply {
            kernel_us: r.u64()?,
        };
        r.end()?;
        Ok(v)
    }
}

/// `Unload` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnloadRequest {
    /// Module name as in `/proc/modules`.
    pub name: String,
}

impl UnloadRequest {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new().str(&self.name).finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let v = UnloadRequest { name: r.str()? };
        r.end()?;
        Ok(v)
    }
}

/// One line of the guest's `/proc/modules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedModule {
    /// Module name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Reference count.
    pub refcount: u32,
    /// Modules that use this one.
    pub used_by: Vec<String>,
    /// `Live`, `Loading` or `Unloading`.
    pub state: String,
    /// The kernel's taint flags for it (`O`, `E`, ...; empty when it taints nothing).
    pub taint: String,
}

/// `List` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListReply {
    /// Loaded modules, in `/proc/modules` order.
    pub modules: Vec<LoadedModule>,
}

impl ListReply {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new().u32(self.modules.len() as u32);
        for m in &self.modules {
            w = w
                .str(&m.name)
                .u64(m.size)
                .u32(m.refcount)
                .u32(m.used_by.len() as u32);
            for u in &m.used_by {
                w = w.str(u);
            }
            w = w.str(&m.state);
        }
        // The taints follow the list, one per module: a reply from an agent that
        // predates them simply ends after the list.
        w = w.u32(self.modules.len() as u32);
        for m in &self.modules {
            w = w.str(&m.taint);
        }
        w.finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let n = r.count(4 + 8 + 4 + 4 + 4)?;
        let mut modules = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?;
            let size = r.u64()?;
            let refcount = r.u32()?;
            let k = r.count(4)?;
            let mut used_by = Vec::with_capacity(k);
            for _ in 0..k {
                used_by.push(r.str()?);
            }
            let state = r.str()?;
            modules.push(LoadedModule {
                name,
                size,
                refcount,
                used_by,
                state,
                taint: String::new(),
            });
        }
        if !r.is_empty() {
            if r.count(4)? != modules.len() {
                return Err(DecodeError("taints do not match the modules"));
            }
            for m in &mut modules {
                m.taint = r.str()?;
            }
        }
        r.end()?;
        Ok(ListReply { modules })
    }
}

/// `Health` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReply {
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    /// Available memory in KiB (`MemAvailable`).
    pub mem_available_kib: u64,
    /// Frames the agent could not use since it started.
    pub bad_frames: u64,
    /// `Load` requests the agent has received since it started (any outcome).
    pub load_requests: u64,
}

impl HealthReply {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new()
            .u64(self.uptime_ms)
            .u64(self.mem_available_kib)
            .u64(self.bad_frames)
            .u64(self.load_requests)
            .finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let v = HealthReply {
            uptime_ms: r.u64()?,
            mem_available_kib: r.u64()?,
            bad_frames: r.u64()?,
            load_requests: r.u64()?,
        };
        r.end()?;
        Ok(v)
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// The frame's checksum was wrong.
    BadChecksum = 1,
    /// The frame was larger than the protocol allows.
    TooLarge = 2,
    /// The frame's type is not a request this agent knows.
    UnknownType = 3,
    /// The payload could not be decoded.
    BadPayload = 4,
    /// The kernel refused; `errno` says why.
    Kernel = 5,
    /// The protocol version is not spoken here.
    BadVersion = 6,
    /// A request that must be sealed came before the agent was bound.
    Unbound = 7,
    /// A sealed request whose tag or sequence number was wrong (forged or replayed).
    AuthFailed = 8,
    /// A `Bind` with a key other than the one the agent holds.
    AlreadyBound = 9,
    /// Too many commands are running; try again later.
    Busy = 10,
    /// A command could not be started; `errno` says why.
    Spawn = 11,
}

/// `Error` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: u32,
    /// The errno for `Kernel` failures, else 0.
    pub errno: i32,
    /// A human message.
    pub message: String,
}

impl ErrorReply {
    /// An error reply.
    pub fn new(code: ErrorCode, errno: i32, message: impl Into<String>) -> Self {
        ErrorReply {
            code: code as u32,
            errno,
            message: message.into(),
        }
    }
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new()
            .u32(self.code)
            .i32(self.errno)
            .str(&self.message)
            .finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let v = ErrorReply {
            code: r.u32()?,
            errno: r.i32()?,
            message: r.str()?,
        };
        r.end()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let l = ListReply {
            modules: vec![LoadedModule {
                name: "wireguard".into(),
                size: 118784,
                refcount: 0,
                used_by: vec![],
                state: "Live".into(),
                taint: "OE".into(),
            }],
        };
        assert_eq!(ListReply::decode(&l.encode()).unwrap(), l);
        // From an agent that predates taints: the list alone.
        let without = l.encode();
        let list_only = &without[..without.len() - (4 + 4 + 2)];
        let mut old = l.clone();
        old.modules[0].taint.clear();
        assert_eq!(ListReply::decode(list_only).unwrap(), old);
        let req = LoadRequest {
            name: "dummy".into(),
            params: "numdummies=2".into(),
            image: vec![1, 2, 3],
        };
        assert_eq!(LoadRequest::decode(&req.encode()).unwrap(), req);
    }

    #[test]
    fn hostile_payloads_are_errors() {
        assert!(ListReply::decode(&u32::MAX.to_le_bytes()).is_err());
        assert!(LoadRequest::decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(HelloReply::decode(&[]).is_err());
        let mut extra = UnloadRequest { name: "x".into() }.encode();
        extra.push(0);
        assert!(UnloadRequest::decode(&extra).is_err());
    }
}
