//! iproute2 and nftables, run in a network namespace: `ip -n NS`, `bridge -n NS`,
//! `ip netns exec NS nft -f -`. Each failure says which command failed and what it printed.

use super::NetworkError;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a namespace that another `ip netns add` is creating may take to be mounted.
const MOUNT_WITHIN: Duration = Duration::from_secs(10);

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
    /// time, such as the underlay's, is no failure), and returns once it is a namespace:
    /// `ip netns add` creates the file before it mounts the namespace on it, and `ip -n`
    /// on the bare file in between fails ("Invalid argument").
    pub fn ensure(&self) -> Result<(), NetworkError> {
        if !self.exists() {
            if let Err(e) = run(Command::new("ip").args(["netns", "add", &self.0]), None) {
                if !self.exists() {
                    return Err(e);
                }
            }
        }
        self.await_mounted(MOUNT_WITHIN)
    }

    /// Waits up to `within` until its file is a mounted network namespace.
    fn await_mounted(&self, within: Duration) -> Result<(), NetworkError> {
        let path = self.path();
        let deadline = Instant::now() + within;
        loop {
            let is_namespace = nix::sys::statfs::statfs(&path)
                .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
            if is_namespace {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NetworkError::NotANamespace {
                    path,
                    waited: within,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The file `ip netns add` creates before it mounts the namespace on it.
    fn bare_file(name: &str) -> Netns {
        let ns = Netns(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all("/run/netns").expect("/run/netns (tests run as root)");
        std::fs::write(ns.path(), b"").expect("a bare file under /run/netns");
        ns
    }

    #[test]
    fn ensure_waits_until_a_namespace_being_added_is_mounted() {
        let ns = bare_file("mvtest-mounting");
        // The other `ip netns add`, slowed down between its two steps.
        let path = ns.path();
        let mounter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            Command::new("unshare")
                .args(["--net", "mount", "--bind", "/proc/self/ns/net"])
                .arg(&path)
                .status()
        });
        let started = Instant::now();
        let ensured = ns.ensure();
        let waited = started.elapsed();
        let mounted = mounter.join().expect("mounting thread");
        let links = ns.links();
        if let Err(e) = ns.remove() {
            eprintln!("removing {}: {e}", ns.0);
        }
        assert!(mounted.expect("unshare").success());
        ensured.expect("ensure");
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert_eq!(links.expect("ip -n on the namespace"), ["lo"]);
    }

    #[test]
    fn a_file_that_never_becomes_a_namespace_is_a_clear_error() {
        let ns = bare_file("mvtest-bare");
        let waited = ns.await_mounted(Duration::from_millis(100));
        if let Err(e) = std::fs::remove_file(ns.path()) {
            eprintln!("removing {}: {e}", ns.0);
        }
        let e = waited.expect_err("a bare file is no namespace");
        assert!(matches!(e, NetworkError::NotANamespace { .. }), "{e}");
        assert!(e.to_string().contains("ip netns delete"), "{e}");
    }
}
