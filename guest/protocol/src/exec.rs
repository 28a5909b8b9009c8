//! `Exec`: a command run in the tenant context, with its output.

use crate::message::{DecodeError, Reader, Writer};

/// `Exec` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments (`argv[0]` is looked up in `PATH`).
    pub argv: Vec<String>,
    /// Environment added to the tenant's defaults (`PATH`, `HOME`, `TERM`).
    pub env: Vec<(String, String)>,
    /// Bytes given on stdin (then stdin is closed).
    pub stdin: Vec<u8>,
    /// Killed (with its process group) after this many milliseconds.
    pub timeout_ms: u32,
    /// Bytes kept of stdout and of stderr each; the rest is read and dropped.
    pub output_limit: u32,
}

impl ExecRequest {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new().u32(self.argv.len() as u32);
        for a in &self.argv {
            w = w.str(a);
        }
        w = w.u32(self.env.len() as u32);
        for (k, v) in &self.env {
            w = w.str(k).str(v);
        }
        w.bytes(&self.stdin)
            .u32(self.timeout_ms)
            .u32(self.output_limit)
            .finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let n = r.count(4)?;
        let mut argv = Vec::with_capacity(n);
        for _ in 0..n {
            argv.push(r.str()?);
        }
        let n = r.count(8)?;
        let mut env = Vec::with_capacity(n);
        for _ in 0..n {
            env.push((r.str()?, r.str()?));
        }
        let v = ExecRequest {
            argv,
            env,
            stdin: r.bytes()?.to_vec(),
            timeout_ms: r.u32()?,
            output_limit: r.u32()?,
        };
        r.end()?;
        Ok(v)
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
}

/// `Exec` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecReply {
    /// How it ended.
    pub end: ExecEnd,
    /// It was killed at its timeout.
    pub timed_out: bool,
    /// stdout, up to the limit.
    pub stdout: Vec<u8>,
    /// stderr, up to the limit.
    pub stderr: Vec<u8>,
    /// stdout was longer than the limit.
    pub stdout_truncated: bool,
    /// stderr was longer than the limit.
    pub stderr_truncated: bool,
}

impl ExecReply {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, value) = match self.end {
            ExecEnd::Exited(c) => (0, c),
            ExecEnd::Signaled(s) => (1, s),
        };
        Writer::new()
            .u32(kind)
            .i32(value)
            .u32(u32::from(self.timed_out))
            .u32(u32::from(self.stdout_truncated))
            .u32(u32::from(self.stderr_truncated))
            .bytes(&self.stdout)
            .bytes(&self.stderr)
            .finish()
    }
    /// Decodes.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        let end = match (r.u32()?, r.i32()?) {
            (0, c) => ExecEnd::Exited(c),
            (1, s) => ExecEnd::Signaled(s),
            _ => return Err(DecodeError("unknown end of a command")),
        };
        let v = ExecReply {
            end,
            timed_out: r.u32()? != 0,
            stdout_truncated: r.u32()? != 0,
            stderr_truncated: r.u32()? != 0,
            stdout: r.bytes()?.to_vec(),
            stderr: r.bytes()?.to_vec(),
        };
        r.end()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_round_trips() {
        let req = ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("A".into(), "b".into())],
            stdin: b"in".to_vec(),
            timeout_ms: 5000,
            output_limit: 1 << 20,
        };
        assert_eq!(ExecRequest::decode(&req.encode()).unwrap(), req);
        let rep = ExecReply {
            end: ExecEnd::Signaled(9),
            timed_out: true,
            stdout: b"out".to_vec(),
            stderr: vec![],
            stdout_truncated: true,
            stderr_truncated: false,
        };
        assert_eq!(ExecReply::decode(&rep.encode()).unwrap(), rep);
        assert!(ExecRequest::decode(&[0xff; 4]).is_err());
        assert!(ExecReply::decode(&[2, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
