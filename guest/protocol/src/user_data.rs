//! `RunUserData` and `UserData`: the tenant's first-boot script, run once per boot by the
//! agent in the tenant context, and what became of it.

use crate::message::{DecodeError, Reader, Writer};

/// Where the script is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptState {
    /// Not started in this boot.
    NotStarted,
    /// Running.
    Running,
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// It could not be started (errno).
    NotRun(i32),
}

/// Reply to `RunUserData` (after starting it, or finding it started) and to `UserData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDataReply {
    /// Where the script is.
    pub state: ScriptState,
    /// Milliseconds it ran (so far, while running).
    pub duration_ms: u64,
}

impl UserDataReply {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, value) = match self.state {
            ScriptState::NotStarted => (0, 0),
            ScriptState::Running => (1, 0),
            ScriptState::Exited(c) => (2, c),
            ScriptState::Signaled(s) => (3, s),
            ScriptState::NotRun(e) => (4, e),
        };
        Writer::new()
            .u32(kind)
            .i32(value)
            .u64(self.duration_ms)
            .finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let state = match (r.u32()?, r.i32()?) {
            (0, _) => ScriptState::NotStarted,
            (1, _) => ScriptState::Running,
            (2, c) => ScriptState::Exited(c),
            (3, s) => ScriptState::Signaled(s),
            (4, e) => ScriptState::NotRun(e),
            _ => return Err(DecodeError("unknown script state")),
        };
        let v = UserDataReply {
            state,
            duration_ms: r.u64()?,
        };
        r.end()?;
        Ok(v)
    }
}

/// `RunUserData` request: the script (run with `sh -c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUserData {
    /// The script.
    pub script: String,
}

impl RunUserData {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new().str(&self.script).finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let v = RunUserData { script: r.str()? };
        r.end()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for state in [
            ScriptState::NotStarted,
            ScriptState::Running,
            ScriptState::Exited(3),
            ScriptState::Signaled(9),
            ScriptState::NotRun(2),
        ] {
            let r = UserDataReply {
                state,
                duration_ms: 42,
            };
            assert_eq!(UserDataReply::decode(&r.encode()).unwrap(), r);
        }
        let run = RunUserData {
            script: "echo hi".into(),
        };
        assert_eq!(RunUserData::decode(&run.encode()).unwrap(), run);
        assert!(UserDataReply::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
