//! `modvisor-guest-agent`: PID 1 of the guest. Mounts the pseudo file systems, puts its
//! own protections and the usermode-helper restrictions in place, opens the host channel
//! (`ttyS1`, through a device node of its own, raw and exclusive), and serves requests
//! until told to power off. The same binary is the tenant's init and the step into the
//! tenant context (chosen by `argv[0]`, see `tenant`).

#![deny(unsafe_code)]

use modvisor_guest_agent::tenant::{self, Confined, TenantContext, Unconfined};
use modvisor_guest_agent::{confine, namespace, platform, Agent, Next, ReplySink};
use modvisor_guest_protocol::net::NetConfig;
use nix::sys::stat::{major, minor};
use nix::sys::termios;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The channel when the agent runs outside a guest without an argument.
const DEFAULT_CHANNEL: &str = "/dev/ttyS1";

/// Opens the channel: raw, exclusive, and (in a guest) only if `path` is the serial port
/// itself, not whatever may have been put at that path.
fn open_channel(path: &Path, want: Option<(u64, u64)>) -> std::io::Result<std::fs::File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if let Some((want_major, want_minor)) = want {
        let meta = file.metadata()?;
        let rdev = meta.rdev();
        if !meta.file_type().is_char_device()
            || (major(rdev), minor(rdev)) != (want_major, want_minor)
        {
            return Err(std::io::Error::other(format!(
                "{} is not the channel's serial port",
                path.display()
            )));
        }
    }
    if let Ok(mut t) = termios::tcgetattr(&file) {
        termios::cfmakeraw(&mut t);
        t.control_chars[termios::SpecialCharacterIndices::VMIN as usize] = 1;
        t.control_chars[termios::SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(&file, termios::SetArg::TCSANOW, &t)?;
        hold_exclusively(&file)?;
    }
    Ok(file)
}

/// `TIOCEXCL`: no further open of the tty (except by `CAP_SYS_ADMIN`, which is why every
/// request is sealed as well).
#[allow(unsafe_code)]
fn hold_exclusively(tty: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: TIOCEXCL takes no argument and acts only on the open tty `tty` owns.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCEXCL) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn power_off() -> ! {
    nix::unistd::sync();
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    println!("modvisor-guest-agent: power off: {e}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// What PID 1 does before serving: mounts, its own protection, the helpers' restriction,
/// its private device nodes and the tenant cgroup.
/// A step that fails is said on the console; the agent serves anyway.
fn prepare_guest() -> Option<(PathBuf, PathBuf, (u64, u64))> {
    namespace::mount_pseudo_filesystems();
    let say = |what: &str, r: Result<(), String>| {
        if let Err(e) = r {
            println!("modvisor-guest-agent: {what}: {e}");
        }
    };
    say(
        "protecting the agent",
        confine::protect_self().map_err(|e| e.to_string()),
    );
    say(
        "restricting usermode helpers",
        confine::restrict_usermode_helpers().map_err(|e| e.to_string()),
    );
    say("tenant cgroup", namespace::make_tenant_cgroup());
    // Before any tenant process: the devices, then the network the host described.
    for failure in platform::load_platform_modules(Path::new(platform::PLATFORM_DIR)) {
        println!("modvisor-guest-agent: platform module {failure}");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(config) = NetConfig::from_cmdline(&cmdline) {
        match platform::configure_network(&config) {
            Ok(done) => println!("modvisor-guest-agent: network {done}"),
            Err(e) => println!("modvisor-guest-agent: network: {e}"),
        }
    }
    // The virtio-serial port when the host gave one (and its driver loaded), else COM2.
    let channel_dev =
        namespace::virtio_port(modvisor_guest_protocol::AGENT_PORT, Duration::from_secs(3))
            .unwrap_or(namespace::CHANNEL_DEV);
    match namespace::make_agent_dir(channel_dev) {
        Ok((channel, console)) => Some((channel, console, channel_dev)),
        Err(e) => {
            println!("modvisor-guest-agent: agent directory: {e}");
            None
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    if let Some(short) = invoked_as.strip_prefix("modvisor-") {
        // What `ps` shows (15 bytes at most), rather than "exe" of /proc/self/exe.
        if let Ok(name) = std::ffi::CString::new(short) {
            if let Err(e) = nix::sys::prctl::set_name(&name) {
                eprintln!("{invoked_as}: {e}");
            }
        }
    }
    if invoked_as == tenant::TENANT_NS {
        std::process::exit(tenant::ns_main());
    }
    if invoked_as == tenant::TENANT_INIT {
        std::process::exit(tenant::init_main());
    }
    if invoked_as == tenant::TENANT_EXEC {
        std::process::exit(tenant::exec_main(&args[1..]));
    }
    let pid1 = std::process::id() == 1;
    let (channel, rdev, context): (PathBuf, _, Arc<dyn TenantContext>) = if pid1 {
        match prepare_guest() {
            Some((channel, console, dev)) => (channel, Some(dev), Arc::new(Confined::new(console))),
            // Without its own nodes the agent still serves the host, and runs nothing of
            // the tenant's (no context could keep the channel from it).
            None => (
                PathBuf::from(DEFAULT_CHANNEL),
                Some(namespace::CHANNEL_DEV),
                Arc::new(tenant::Refused),
            ),
        }
    } else {
        let path = args
            .get(1)
            .cloned()
            .unwrap_or_else(|| DEFAULT_CHANNEL.into());
        (PathBuf::from(path), None, Arc::new(Unconfined))
    };
    println!(
        "modvisor-guest-agent {} on kernel {}: serving {}",
        modvisor_guest_agent::VERSION,
        modvisor_guest_agent::procfs::kernel_release(),
        channel.display()
    );
    let mut agent = Agent::new(context);
    loop {
        // Held open across the host's absences (a virtio port reads end-of-file while
        // nobody is connected on the host): the agent keeps the port to itself.
        let served = open_channel(&channel, rdev).and_then(|f| {
            let sink = ReplySink::new(f.try_clone()?);
            let mut input = f;
            loop {
                match agent.serve(&mut input, &sink)? {
                    Next::Continue if pid1 => std::thread::sleep(Duration::from_millis(200)),
                    next => return Ok(next),
                }
            }
        });
        match served {
            Ok(Next::PowerOff) => {
                println!("modvisor-guest-agent: powering off");
                if pid1 {
                    power_off();
                }
                return;
            }
            Ok(Next::Continue) => {}
            Err(e) => println!("modvisor-guest-agent: channel {}: {e}", channel.display()),
        }
        if !pid1 {
            return;
        }
        // PID 1 must never exit: reopen the channel after a pause.
        std::thread::sleep(Duration::from_millis(200));
    }
}
