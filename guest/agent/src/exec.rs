//! Running one command for the host: stdin given, stdout and stderr captured up to a
//! limit each (the rest read and dropped, so the command never blocks on a full pipe),
//! killed with its whole process group at its timeout.

use modvisor_guest_protocol::exec::{ExecEnd, ExecReply, ExecRequest};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// `PATH` of tenant commands.
pub const TENANT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How long output is still collected after the command ended (background processes it
/// left may hold its pipes open for ever; what they print later is not waited for).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// What a reader thread has collected of one stream.
#[derive(Default)]
struct Collected {
    kept: Vec<u8>,
    truncated: bool,
    ended: bool,
}

type Shared = Arc<(Mutex<Collected>, Condvar)>;

/// Reads `r` to its end on a thread, keeping the first `limit` bytes.
fn collect(mut r: impl Read + Send + 'static, limit: usize) -> Shared {
    let shared: Shared = Arc::default();
    let out = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("exec-output".into())
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut c = out.0.lock().unwrap_or_else(|p| p.into_inner());
                let room = limit.saturating_sub(c.kept.len());
                c.kept.extend_from_slice(&buf[..n.min(room)]);
                c.truncated |= n > room;
            }
            out.0.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
            out.1.notify_all();
        });
    if let Err(e) = spawned {
        println!("modvisor-guest-agent: no thread for command output: {e}");
        shared.0.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
    }
    shared
}

/// What was collected by `until`; output still coming then (from something the command
/// left running, holding its pipe) is cut there and marked truncated.
fn output(shared: &Shared, until: Instant) -> (Vec<u8>, bool) {
    let mut c = shared.0.lock().unwrap_or_else(|p| p.into_inner());
    while !c.ended {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            c.truncated = true;
            break;
        }
        c = shared
            .1
            .wait_timeout(c, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    (std::mem::take(&mut c.kept), c.truncated)
}

/// Runs `cmd` (already pointing at the program and its arguments) as `req` asks.
pub fn run(mut cmd: Command, req: &ExecRequest) -> std::io::Result<ExecReply> {
    cmd.env_clear()
        .env("PATH", TENANT_PATH)
        .env("HOME", "/root")
        .env("TERM", "linux")
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pgid = Pid::from_raw(child.id() as i32);
    let limit = req.output_limit as usize;
    let stdout = child.stdout.take().map(|s| collect(s, limit));
    let stderr = child.stderr.take().map(|s| collect(s, limit));
    if let Some(mut stdin) = child.stdin.take() {
        let input = req.stdin.clone();
        let fed = std::thread::Builder::new()
            .name("exec-input".into())
            .spawn(move || {
                // A command that does not read its input closes the pipe: not a failure.
                drop(stdin.write_all(&input));
            });
        if let Err(e) = fed {
            println!("modvisor-guest-agent: no thread for command input: {e}");
        }
    }
    let timeout = Duration::from_millis(u64::from(req.timeout_ms));
    // The child is waited for on a thread of its own: its end is seen at once, and the
    // timeout without polling.
    let (ended_tx, ended) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("exec-wait".into())
        .spawn(move || {
            // The exec may have given up waiting (it never does before killing the child).
            drop(ended_tx.send(child.wait()));
        })?;
    let (status, timed_out) = match ended.recv_timeout(timeout) {
        Ok(status) => (status?, false),
        Err(_) => {
            if let Err(e) = killpg(pgid, Signal::SIGKILL) {
                println!("modvisor-guest-agent: killing a command at its timeout: {e}");
            }
            let status = ended
                .recv()
                .map_err(|_| std::io::Error::other("the waiting thread ended"))??;
            (status, true)
        }
    };
    let until = Instant::now() + OUTPUT_GRACE;
    let (stdout, stdout_truncated) = stdout.map(|c| output(&c, until)).unwrap_or_default();
    let (stderr, stderr_truncated) = stderr.map(|c| output(&c, until)).unwrap_or_default();
    let end = match (status.code(), status.signal()) {
        (Some(code), _) => ExecEnd::Exited(code),
        (None, Some(sig)) => ExecEnd::Signaled(sig),
        (None, None) => ExecEnd::Exited(-1),
    };
    Ok(ExecReply {
        end,
        timed_out,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
    })
}
