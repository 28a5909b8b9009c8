//! A writer of the "newc" cpio format (`070701`), the format of Linux initramfs images.
//!
//! Each entry is a 110-byte ASCII header of thirteen 8-digit hex fields, the NUL-terminated
//! name padded to 4 bytes, then the data padded to 4 bytes; the archive ends with the entry
//! `TRAILER!!!`. Every field this writer sets is fixed by its input (mtime 0, uid/gid 0,
//! inode numbers in order), so equal inputs give equal bytes.

/// File type bits of `st_mode`.
pub mod mode {
    /// Directory.
    pub const DIR: u32 = 0o040000;
    /// Regular file.
    pub const FILE: u32 = 0o100000;
    /// Character device.
    pub const CHAR: u32 = 0o020000;
    /// Symbolic link.
    pub const SYMLINK: u32 = 0o120000;
}

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive, without a leading `/`.
    pub name: String,
    /// `st_mode`: type bits and permissions.
    pub mode: u32,
    /// Device numbers (major, minor) for device nodes.
    pub rdev: (u32, u32),
    /// File contents.
    pub data: Vec<u8>,
}

impl Entry {
    /// A directory.
    pub fn dir(name: &str, perm: u32) -> Self {
        Entry {
            name: name.into(),
            mode: mode::DIR | perm,
            rdev: (0, 0),
            data: Vec::new(),
        }
    }
    /// A regular file.
    pub fn file(name: &str, perm: u32, data: Vec<u8>) -> Self {
        Entry {
            name: name.into(),
            mode: mode::FILE | perm,
            rdev: (0, 0),
            data,
        }
    }
    /// A symbolic link to `target` (newc stores the target as the entry's data).
    pub fn symlink(name: &str, target: &str) -> Self {
        Entry {
            name: name.into(),
            mode: mode::SYMLINK | 0o777,
            rdev: (0, 0),
            data: target.as_bytes().to_vec(),
        }
    }
    /// A character device node.
    pub fn char_device(name: &str, perm: u32, major: u32, minor: u32) -> Self {
        Entry {
            name: name.into(),
            mode: mode::CHAR | perm,
            rdev: (major, minor),
            data: Vec::new(),
        }
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(out: &mut Vec<u8>, ino: u32, e: &Entry) {
    let nlink = if e.mode & mode::DIR == mode::DIR {
        2
    } else {
        1
    };
    let fields = [
        ino,
        e.mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        e.data.len() as u32,
        0, // devmajor
        0, // devminor
        e.rdev.0,
        e.rdev.1,
        e.name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(e.name.as_bytes());
    out.push(0);
    pad4(out);
}

/// The archive of `entries`, in the order given, with its trailer.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        header(&mut out, i as u32 + 1, e);
        out.extend_from_slice(&e.data);
        pad4(&mut out);
    }
    header(&mut out, 0, &Entry::file("TRAILER!!!", 0, Vec::new()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let a = archive(&[Entry::file("init", 0o755, b"abc".to_vec())]);
        assert!(a.starts_with(b"070701"));
        assert_eq!(&a[110..115], b"init\0");
        // name (5) pads the 110-byte header to 116; data "abc" padded to 4.
        assert_eq!(&a[116..119], b"abc");
        assert_eq!(a.len() % 4, 0);
        let trailer = a.windows(10).position(|w| w == b"TRAILER!!!").unwrap();
        assert_eq!(&a[trailer - 110..trailer - 104], b"070701");
        // mode field of the first entry: regular file 0755.
        assert_eq!(&a[14..22], b"000081ed");
    }
}
