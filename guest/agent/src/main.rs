//! `modvisor-guest-agent`: PID 1 of the guest. Mounts the pseudo file systems, opens the
//! host channel (`/dev/ttyS1`, raw), and serves requests until told to power off.

#![forbid(unsafe_code)]

use modvisor_guest_agent::{Agent, Next};
use nix::mount::{mount, MsFlags};
use nix::sys::termios;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

const CHANNEL: &str = "/dev/ttyS1";

fn mount_pseudo_filesystems() {
    for (src, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(
            Some(src),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID,
            None::<&str>,
        ) {
            if e != nix::errno::Errno::EBUSY {
                println!("modvisor-guest-agent: mounting {target}: {e}");
            }
        }
    }
}

fn open_channel(path: &str) -> std::io::Result<std::fs::File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(path)?;
    if let Ok(mut t) = termios::tcgetattr(&file) {
        termios::cfmakeraw(&mut t);
        t.control_chars[termios::SpecialCharacterIndices::VMIN as usize] = 1;
        t.control_chars[termios::SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(&file, termios::SetArg::TCSANOW, &t)?;
    }
    Ok(file)
}

fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let pid1 = std::process::id() == 1;
    if pid1 {
        mount_pseudo_filesystems();
    }
    let channel = std::env::args()
        .nth(1)
        .unwrap_or_else(|| CHANNEL.to_string());
    println!(
        "modvisor-guest-agent {} on kernel {}: serving {channel}",
        modvisor_guest_agent::VERSION,
        modvisor_guest_agent::procfs::kernel_release()
    );
    let mut agent = Agent::default();
    loop {
        match open_channel(&channel).and_then(|mut f| agent.serve(&mut f)) {
            Ok(Next::PowerOff) => {
                println!("modvisor-guest-agent: powering off");
                if pid1 {
                    power_off();
                }
                return;
            }
            Ok(Next::Continue) => {}
            Err(e) => println!("modvisor-guest-agent: channel {channel}: {e}"),
        }
        if !pid1 {
            return;
        }
        // PID 1 must never exit: reopen the channel after a pause.
        std::thread::sleep(Duration::from_millis(200));
    }
}
