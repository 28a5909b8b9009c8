//! A process held by a pidfd (pidfd_open(2)): signals sent through it reach that process
//! or none, never one that took its pid after it ended.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A process held by a pidfd.
pub struct PidFd(OwnedFd);

impl PidFd {
    /// The process `pid` now, or `None` when there is none (or pidfds are unsupported:
    /// then nothing is signalled, which is the safe side).
    pub fn open(pid: u32) -> Option<PidFd> {
        let pid = libc::pid_t::try_from(pid).ok()?;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1;
        // it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nothing else.
        Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `signal` to the process (an error once it has ended).
    pub fn signal(&self, signal: libc::c_int) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal(2) with a null siginfo reads no memory of ours; the
        // descriptor is valid while `self` lives.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_signals_its_own_process_and_none_after_it_ended() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let held = PidFd::open(child.id()).unwrap();
        held.signal(libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        // Reaped: the pid is free, and the pidfd no longer reaches anything.
        assert!(held.signal(libc::SIGTERM).is_err());
    }
}
