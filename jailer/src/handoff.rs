//! Descriptors handed to a jailed process: a tap device opened inside another network
//! namespace (the device lives there; the jail's own network namespace stays empty), and
//! a descriptor placed at a fixed number in the child (after the jail's plan has marked
//! every inherited descriptor close-on-exec).
//!
//! A tap opened here is not persistent: it goes when the last descriptor on it closes,
//! that is when the hypervisor holding it ends.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` with the flags member of its union (40 bytes).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens tap `name` in the network namespace at `netns` (creating the device) and returns
/// its descriptor (close-on-exec).
pub fn open_tap_in(netns: &Path, name: &str) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    let ns = File::open(netns)?;
    let name = name.to_string();
    std::thread::scope(|s| {
        s.spawn(move || -> std::io::Result<OwnedFd> {
            // Only this thread enters the namespace; it ends right after.
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let tun = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")?;
            let mut req = IfReqFlags {
                name: [0; libc::IFNAMSIZ],
                flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
                _pad: [0; 22],
            };
            req.name[..name.len()].copy_from_slice(name.as_bytes());
            // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out
            // as (40 bytes, name then flags); the descriptor is a tun device we own.
            let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(OwnedFd::from(tun))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the tap thread panicked")))
    })
}

/// Makes `fd` descriptor `target` of the process `cmd` starts. Register it after
/// [`crate::Jail::command`]'s own hook (hooks run in order), which marks every inherited
/// descriptor close-on-exec.
pub fn inherit_fd(cmd: &mut Command, fd: Arc<OwnedFd>, target: RawFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (dup2,
    // fcntl) on a descriptor the `Arc` keeps open until the command is dropped.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            let _keep = &fd;
            let rc = if raw == target {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, target)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
