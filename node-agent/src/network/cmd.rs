//! iproute2 and nftables, run in a network namespace: `ip -n NS`, `bridge -n NS`,
//! `ip netns exec NS nft -f -`. Each failure says which command failed and what it printed.

use super::NetworkError;
use std::io::Write;
use std::process::{Command, Stdio};

/// A named network namespace (`/run/netns/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns(pub String);

impl Netns {
    /// Its file, for `setns`.
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.0)
    }

    /// Whether it exists.
    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Creates it unless it exists (another node agent creating the same one at the same
    /// time, such as the underlay's, is no failure).
    pub fn ensure(&self) -> Result<(), NetworkError> {
        match self.exists() {
            true => Ok(()),
            false => run(Command::new("ip").args(["netns", "add", &self.0]), None)
                .map(drop)
                .or_else(|e| if self.exists() { Ok(()) } else { Err(e) }),
        }
    }

    /// Runs `ip -n NS ARGS` to create link `name` unless it exists (or appeared
    /// meanwhile, created by another node agent).
    pub fn create_link(&self, name: &str, args: &[&str]) -> Result<(), NetworkError> {
        if self.links()?.iter().any(|l| l == name) {
            return Ok(());
        }
        match self.ip(args) {
            Ok(_) => Ok(()),
            Err(_) if self.links()?.iter().any(|l| l == name) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes it (whatever is in it goes too).
    pub fn remove(&self) -> Result<(), NetworkError> {
        if self.exists() {
            run(Command::new("ip").args(["netns", "delete", &self.0]), None)?;
        }
        Ok(())
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetworkError> {
        run(Command::new("ip").args(["-n", &self.0]).args(args), None)
    }

    /// `bridge -n NS ARGS`.
    pub fn bridge(&self, args: &[&str]) -> Result<String, NetworkError> {
        run(
            Command::new("bridge").args(["-n", &self.0]).args(args),
            None,
        )
    }

    /// `nft -f -` in the namespace, fed `script` (applied atomically).
    pub fn nft(&self, script: &str) -> Result<String, NetworkError> {
        run(self.exec("nft").args(["-f", "-"]), Some(script))
    }

    /// `nft ARGS` in the namespace (listings).
    pub fn nft_args(&self, args: &[&str]) -> Result<String, NetworkError> {
        run(self.exec("nft").args(args), None)
    }

    /// `sysctl -w KEY=VALUE` in the namespace (written under /proc/sys, which follows the
    /// namespace of the writer).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetworkError> {
        run(
            self.exec("sysctl")
                .args(["-q", "-w", &format!("{key}={value}")]),
            None,
        )
        .map(drop)
    }

    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    /// The names of the links in the namespace.
    pub fn links(&self) -> Result<Vec<String>, NetworkError> {
        Ok(self
            .ip(&["-o", "link", "show"])?
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect())
    }
}

/// Runs `cmd` (stdin `input`, if any); its stdout, or an error naming it with its stderr.
pub fn run(cmd: &mut Command, input: Option<&str>) -> Result<String, NetworkError> {
    let what = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let fail = |reason: String| NetworkError::Command {
        command: what.clone(),
        reason,
    };
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(format!("writing its input: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "{}: {}",
            out.status,
            stderr.split_whitespace().collect::<Vec<_>>().join(" ")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
