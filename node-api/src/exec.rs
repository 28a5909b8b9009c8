//! `exec`: a command run in a VM's guest, in the tenant context. The same request and
//! result cross both hops (tenant -> control plane -> node), with the same limits, checked
//! on both sides by [`ExecRequest::check`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most arguments in `argv`.
pub const MAX_ARGS: usize = 256;
/// Most bytes in one argument or environment value.
pub const MAX_ARG_BYTES: usize = 4096;
/// Most environment variables.
pub const MAX_ENV: usize = 64;
/// Most bytes of stdin (UTF-8 text).
pub const MAX_STDIN_BYTES: usize = 48 * 1024;
/// The longest timeout, in seconds.
pub const MAX_TIMEOUT_S: u32 = 600;
/// The timeout when none is given, in seconds.
pub const DEFAULT_TIMEOUT_S: u32 = 30;
/// Bytes kept of stdout and of stderr, each.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// A command to run in a VM's guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in the guest's `PATH`
    /// (`/usr/sbin:/usr/bin:/sbin:/bin`). 1 to 256 arguments of up to 4096 bytes, no NUL.
    pub argv: Vec<String>,
    /// Text given on stdin (UTF-8, up to 48 KiB), then stdin is closed.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Seconds before the command (and its process group) is killed: 1 to 600, default 30.
    #[serde(default)]
    pub timeout_s: Option<u32>,
    /// Environment added to the defaults (`PATH`, `HOME=/root`, `TERM=linux`): up to 64
    /// names of `[A-Za-z_][A-Za-z0-9_]*`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// How a command ended, with its output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ExecResult {
    /// The exit code, when it exited (null when a signal ended it).
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It was killed at its timeout.
    pub timed_out: bool,
    /// stdout as UTF-8 (invalid bytes replaced), up to 1 MiB.
    pub stdout: String,
    /// stderr as UTF-8 (invalid bytes replaced), up to 1 MiB.
    pub stderr: String,
    /// stdout or stderr was longer than 1 MiB (or still open when the command ended) and
    /// was cut.
    pub truncated: bool,
}

/// What is wrong with an exec request: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInvalid {
    /// The field.
    pub field: &'static str,
    /// Why.
    pub detail: String,
}

fn invalid(field: &'static str, detail: impl Into<String>) -> ExecInvalid {
    ExecInvalid {
        field,
        detail: detail.into(),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

impl ExecRequest {
    /// Checks the limits; the timeout to use, in seconds.
    pub fn check(&self) -> Result<u32, ExecInvalid> {
        if self.argv.is_empty() || self.argv.len() > MAX_ARGS {
            return Err(invalid(
                "argv",
                format!("must hold 1 to {MAX_ARGS} arguments"),
            ));
        }
        if self.argv[0].is_empty() {
            return Err(invalid("argv", "the program (argv[0]) is empty"));
        }
        for a in &self.argv {
            if a.len() > MAX_ARG_BYTES || a.contains('\0') {
                return Err(invalid(
                    "argv",
                    format!("each argument is at most {MAX_ARG_BYTES} bytes, without NUL"),
                ));
            }
        }
        if self
            .stdin
            .as_ref()
            .is_some_and(|s| s.len() > MAX_STDIN_BYTES)
        {
            return Err(invalid("stdin", format!("at most {MAX_STDIN_BYTES} bytes")));
        }
        if self.env.len() > MAX_ENV {
            return Err(invalid("env", format!("at most {MAX_ENV} variables")));
        }
        for (k, v) in &self.env {
            if !is_env_name(k) {
                return Err(invalid("env", format!("{k:?} is not a variable name")));
            }
            if v.len() > MAX_ARG_BYTES || v.contains('\0') {
                return Err(invalid(
                    "env",
                    format!("the value of {k} is over {MAX_ARG_BYTES} bytes or holds NUL"),
                ));
            }
        }
        match self.timeout_s {
            None => Ok(DEFAULT_TIMEOUT_S),
            Some(t) if (1..=MAX_TIMEOUT_S).contains(&t) => Ok(t),
            Some(_) => Err(invalid(
                "timeout_s",
                format!("1 to {MAX_TIMEOUT_S} seconds"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin: None,
            timeout_s: None,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn limits() {
        assert_eq!(req(&["true"]).check(), Ok(DEFAULT_TIMEOUT_S));
        assert_eq!(req(&[]).check().unwrap_err().field, "argv");
        assert_eq!(req(&[""]).check().unwrap_err().field, "argv");
        assert_eq!(req(&["a\0b"]).check().unwrap_err().field, "argv");
        let mut r = req(&["true"]);
        r.timeout_s = Some(0);
        assert_eq!(r.check().unwrap_err().field, "timeout_s");
        r.timeout_s = Some(601);
        assert_eq!(r.check().unwrap_err().field, "timeout_s");
        r.timeout_s = Some(600);
        assert_eq!(r.check(), Ok(600));
        r.stdin = Some("x".repeat(MAX_STDIN_BYTES + 1));
        assert_eq!(r.check().unwrap_err().field, "stdin");
        r.stdin = None;
        r.env.insert("1BAD".into(), "v".into());
        assert_eq!(r.check().unwrap_err().field, "env");
        r.env.clear();
        r.env.insert("GOOD_1".into(), "v".into());
        assert!(r.check().is_ok());
    }
}
