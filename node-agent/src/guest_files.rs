//! Files in a guest's own directory (`<run dir>/guest`), which its jailed hypervisor may
//! write: the console log, the agent socket, the vmm's state file. The agent runs as root,
//! so it never follows a symbolic link planted there, never blocks on a FIFO, and never
//! reads more than it needs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

fn refused(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// Opens `path` without following a symbolic link and without blocking; only a regular
/// file is accepted.
fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(refused(path, "not a regular file"));
    }
    Ok(f)
}

/// The last `max` bytes of the regular file at `path` (empty when it is missing, a link or
/// not a regular file).
pub fn read_tail(path: &Path, max: u64) -> Vec<u8> {
    let Ok(mut f) = open_regular(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let _ = f.take(max).read_to_end(&mut out);
    out
}

/// The end of a log (at most `max` bytes) as one line, for a crash reason.
pub fn tail_line(path: &Path, max: u64) -> String {
    String::from_utf8_lossy(&read_tail(path, max))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Connects to the Unix socket at `path` only if `path` itself is a socket (not a link to
/// one elsewhere): it is opened `O_PATH | O_NOFOLLOW`, checked, and connected to through
/// that very descriptor, so nothing can be swapped in between.
pub fn connect_socket(path: &Path) -> std::io::Result<UnixStream> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.file_type().is_socket() {
        return Err(refused(path, "not a socket"));
    }
    UnixStream::connect(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn links_and_fifos_planted_by_a_guest_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "host-only").unwrap();
        let console = dir.path().join("console.log");
        std::os::unix::fs::symlink(&secret, &console).unwrap();
        assert!(read_tail(&console, 1024).is_empty());
        // A FIFO would block a plain open until a writer came: it is refused at once.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(read_tail(&fifo, 1024).is_empty());
        std::fs::write(dir.path().join("log"), "a\nb   c\n".repeat(100)).unwrap();
        assert_eq!(tail_line(&dir.path().join("log"), 6), "b c");

        let real = dir.path().join("real.sock");
        let _listener = UnixListener::bind(&real).unwrap();
        assert!(connect_socket(&real).is_ok());
        let link = dir.path().join("agent.sock");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(connect_socket(&link).is_err(), "a link to another socket");
        assert!(connect_socket(&secret).is_err(), "not a socket");
    }
}
