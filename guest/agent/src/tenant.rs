//! The tenant context: where everything the tenant runs (console shell, exec, user_data)
//! runs, as root of its own namespaces but inside [`crate::confine`]'s restrictions.
//!
//! Once the host has bound the agent, the agent starts `modvisor-tenant-ns` (this binary
//! again, from `/proc/self/exe`), which makes a PID namespace and starts in it the tenant's
//! init (`modvisor-tenant-init`, PID 1 there): that makes the tenant's mount and cgroup
//! namespaces (a `/dev` without the agent's channel, its own `/proc`, the tenant cgroup as
//! its cgroup root), restricts itself and reaps orphans. Each tenant command starts as
//! `modvisor-tenant-exec`, which joins the tenant cgroup and namespaces, restricts itself,
//! and runs the command as its child (a process cannot enter a PID namespace itself, only
//! its children can). Tenant processes cannot see the agent: it is outside their PID
//! namespace. (The agent cannot make the PID namespace for its own children: a process
//! whose children go to another PID namespace can no longer start threads.)

use crate::confine;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// `argv[0]` of the process that makes the tenant's PID namespace and holds its init.
pub const TENANT_NS: &str = "modvisor-tenant-ns";
/// `argv[0]` of the tenant's init (PID 1 of the tenant's PID namespace).
pub const TENANT_INIT: &str = "modvisor-tenant-init";
/// `argv[0]` of the step that puts a command in the tenant context.
pub const TENANT_EXEC: &str = "modvisor-tenant-exec";
/// The tenant's cgroup (cgroup v2, under the agent's mount at [`CGROUP_ROOT`]).
pub const TENANT_CGROUP: &str = "/sys/fs/cgroup/modvisor-tenant";
/// Where the agent mounts cgroup v2.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The agent's private directory (a tmpfs of its mount namespace, absent from the
/// tenant's), holding its own device nodes for the channel and the console.
pub const AGENT_DIR: &str = "/run/modvisor-agent";

/// Where tenant processes run.
pub trait TenantContext: Send + Sync {
    /// Starts what the tenant runs from boot (the console shell); called once, when the
    /// host has bound the agent.
    fn start(&self);
    /// A command that runs `argv` in the tenant context.
    fn command(&self, argv: &[String]) -> std::io::Result<Command>;
    /// The console, for output meant to be seen there (the first-boot script's).
    fn console_output(&self) -> Option<std::fs::File> {
        None
    }
}

/// Commands run as they are (an agent outside a guest: development and host tests).
#[derive(Debug, Default)]
pub struct Unconfined;

impl TenantContext for Unconfined {
    fn start(&self) {}
    fn command(&self, argv: &[String]) -> std::io::Result<Command> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty argv"))?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        Ok(cmd)
    }
}

/// No tenant context could be made: nothing of the tenant's runs.
#[derive(Debug, Default)]
pub struct Refused;

impl TenantContext for Refused {
    fn start(&self) {}
    fn command(&self, _: &[String]) -> std::io::Result<Command> {
        Err(std::io::Error::other(
            "the agent could not set up the tenant context at boot (see the console)",
        ))
    }
}

/// The tenant context of a guest (the agent is PID 1).
#[derive(Debug)]
pub struct Confined {
    init_pid: OnceLock<u32>,
    console: PathBuf,
}

impl Confined {
    /// A context whose console shell runs on the tty at `console` (a node the agent made
    /// in [`AGENT_DIR`]).
    pub fn new(console: PathBuf) -> Self {
        Confined {
            init_pid: OnceLock::new(),
            console,
        }
    }

    /// Starts the tenant's namespaces; the host PID of the tenant's init.
    fn start_init(&self) -> std::io::Result<u32> {
        let mut keeper = Command::new("/proc/self/exe")
            .arg0(TENANT_NS)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = keeper
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe from the tenant's namespaces"))?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        // It runs for ever, holding the tenant's init as its child.
        drop(keeper);
        line.trim()
            .strip_prefix("ready ")
            .and_then(|pid| pid.parse().ok())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "the tenant's namespaces did not come up ({line:?})"
                ))
            })
    }
}

impl TenantContext for Confined {
    fn start(&self) {
        match self.start_init() {
            Ok(pid) => {
                if self.init_pid.set(pid).is_err() {
                    println!("modvisor-guest-agent: the tenant context was started twice");
                }
                println!("modvisor-guest-agent: tenant context ready (init pid {pid})");
            }
            Err(e) => {
                println!("modvisor-guest-agent: no tenant context: {e}");
                return;
            }
        }
        let console = self.console.clone();
        let Some(&pid) = self.init_pid.get() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("console-shell".into())
            .spawn(move || console_shell(pid, &console));
        if let Err(e) = spawned {
            println!("modvisor-guest-agent: no console shell: {e}");
        }
    }

    fn command(&self, argv: &[String]) -> std::io::Result<Command> {
        let pid = self
            .init_pid
            .get()
            .ok_or_else(|| std::io::Error::other("the tenant context is not running"))?;
        if argv.is_empty() {
            return Err(std::io::Error::other("empty argv"));
        }
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(TENANT_EXEC)
            .arg(pid.to_string())
            .arg("--")
            .args(argv);
        Ok(cmd)
    }

    fn console_output(&self) -> Option<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NOFOLLOW)
            .open(&self.console)
            .ok()
    }
}

/// A root shell on the console tty, in the tenant context, started again whenever it
/// ends (like a getty with autologin: whoever reaches the console through the API is the
/// tenant).
fn console_shell(init_pid: u32, tty: &Path) {
    let mut pause = Duration::from_secs(1);
    loop {
        let began = std::time::Instant::now();
        let started = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NOFOLLOW)
            .open(tty)
            .and_then(|t| Ok((t.try_clone()?, t.try_clone()?, t)))
            .and_then(|(i, o, e)| {
                Command::new("/proc/self/exe")
                    .arg0(TENANT_EXEC)
                    .arg(init_pid.to_string())
                    .args(["--", "setsid", "-c", "sh", "-l"])
                    .env_clear()
                    .env("PATH", crate::exec::TENANT_PATH)
                    .env("HOME", "/root")
                    .env("TERM", "linux")
                    .stdin(i)
                    .stdout(o)
                    .stderr(e)
                    .spawn()
            })
            .and_then(|mut c| c.wait());
        if let Err(e) = started {
            println!("modvisor-guest-agent: console shell: {e}");
        }
        // A shell that keeps failing at once is started less and less often.
        pause = if began.elapsed() < Duration::from_secs(5) {
            (pause * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_secs(1)
        };
        std::thread::sleep(pause);
    }
}

/// `modvisor-tenant-exec <init pid> -- argv...`: enters the tenant context, runs argv
/// there as its child and ends as the child ended (the same exit code, or killed by the
/// same signal).
pub fn exec_main(args: &[String]) -> i32 {
    let (pid, argv) = match args {
        [pid, dashdash, argv @ ..] if dashdash == "--" && !argv.is_empty() => (pid, argv),
        _ => {
            eprintln!("{TENANT_EXEC}: usage: {TENANT_EXEC} PID -- COMMAND...");
            return 125;
        }
    };
    if let Err(e) = enter(pid).and_then(|()| confine::restrict_self().map_err(|e| e.to_string())) {
        eprintln!("{TENANT_EXEC}: {e}");
        return 125;
    }
    let status = match Command::new(&argv[0]).args(&argv[1..]).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", argv[0]);
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    ended_as(status)
}

/// Ends this process as `status` says its child ended.
fn ended_as(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return code;
    }
    let Some(sig) = status.signal() else {
        return 125;
    };
    if let Ok(signal) = nix::sys::signal::Signal::try_from(sig) {
        // Terminates here unless the signal is ignored (SIGPIPE is, in Rust programs).
        if let Err(e) = nix::sys::signal::raise(signal) {
            eprintln!("{TENANT_EXEC}: {e}");
        }
    }
    128 + sig
}

/// Joins the tenant cgroup, then the cgroup and mount namespaces of the tenant's init, and
/// its PID namespace for the children to come.
fn enter(init_pid: &str) -> Result<(), String> {
    use nix::sched::{setns, CloneFlags};
    let pid: u32 = init_pid
        .parse()
        .map_err(|_| format!("bad pid {init_pid:?}"))?;
    join_tenant_cgroup()?;
    // All opened first: /proc is the tenant's once the mount namespace is joined.
    let mut namespaces = Vec::new();
    for (ns, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{pid}/ns/{ns}");
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        namespaces.push((path, f, flag));
    }
    for (path, f, flag) in namespaces {
        setns(&f, flag).map_err(|e| format!("joining {path}: {e}"))?;
    }
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

fn join_tenant_cgroup() -> Result<(), String> {
    let procs = format!("{TENANT_CGROUP}/cgroup.procs");
    match std::fs::write(&procs, "0") {
        Ok(()) => Ok(()),
        // A guest kernel without cgroup v2 runs the tenant uncontained: said at boot.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{procs}: {e}")),
    }
}

/// `modvisor-tenant-ns`: makes the tenant's PID namespace, starts the tenant's init in it,
/// says `ready <its pid>` on stdout once it is ready, and waits for ever.
pub fn ns_main() -> i32 {
    let started = confine::protect_self()
        .map_err(|e| e.to_string())
        .and_then(|()| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
                .map_err(|e| format!("unshare: {e}"))
        })
        .and_then(|()| {
            Command::new("/proc/self/exe")
                .arg0(TENANT_INIT)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("starting the tenant's init: {e}"))
        });
    let mut init = match started {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{TENANT_NS}: {e}");
            return 1;
        }
    };
    let mut line = String::new();
    if let Some(out) = init.stdout.take() {
        if let Err(e) = BufReader::new(out).read_line(&mut line) {
            eprintln!("{TENANT_NS}: {e}");
        }
    }
    if line.trim() == "ready" {
        println!("ready {}", init.id());
    } else {
        println!("failed");
    }
    match init.wait() {
        Ok(status) => eprintln!("{TENANT_NS}: the tenant's init ended: {status}"),
        Err(e) => eprintln!("{TENANT_NS}: {e}"),
    }
    1
}

/// `modvisor-tenant-init`: makes the tenant's namespaces, restricts itself, says `ready`
/// on stdout, then reaps orphans for ever.
pub fn init_main() -> i32 {
    if let Err(e) = join_tenant_cgroup()
        .and_then(|()| crate::namespace::make_tenant_namespaces())
        .and_then(|()| confine::protect_self().map_err(|e| e.to_string()))
        .and_then(|()| confine::restrict_self().map_err(|e| e.to_string()))
    {
        eprintln!("{TENANT_INIT}: {e}");
        return 1;
    }
    println!("ready");
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        if let Err(e) = nix::unistd::dup2_stdout(&null) {
            eprintln!("{TENANT_INIT}: {e}");
        }
    }
    loop {
        match nix::sys::wait::waitpid(None::<nix::unistd::Pid>, None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
