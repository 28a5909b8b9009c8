//! The guest initramfs: `/init` is the guest agent; nothing else runs in the guest.

use crate::cpio::{self, Entry};
use flate2::{Compression, GzBuilder};
use std::io::Write;

/// The guest agent, a static x86-64 Linux binary built with this crate.
pub fn agent_binary() -> &'static [u8] {
    include_bytes!(env!("MODVISOR_GUEST_AGENT_BIN"))
}

/// The gzip-compressed newc initramfs holding the agent as `/init` plus `extra` files
/// (path, bytes). Equal inputs give equal bytes.
pub fn build_initramfs(extra: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut entries = vec![
        Entry::dir("dev", 0o755),
        Entry::char_device("dev/console", 0o600, 5, 1),
        Entry::char_device("dev/null", 0o666, 1, 3),
        Entry::file("init", 0o755, agent_binary().to_vec()),
        Entry::dir("proc", 0o555),
        Entry::dir("sys", 0o555),
        Entry::dir("tmp", 0o1777),
    ];
    for (path, bytes) in extra {
        entries.push(Entry::file(
            path.trim_start_matches('/'),
            0o644,
            bytes.to_vec(),
        ));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let archive = cpio::archive(&entries);
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), Compression::best());
    gz.write_all(&archive)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_is_a_static_x86_64_executable() {
        let bin = agent_binary();
        assert_eq!(&bin[..4], b"\x7fELF");
        assert_eq!(bin[4], 2, "ELF64");
        assert_eq!(u16::from_le_bytes([bin[18], bin[19]]), 62, "x86-64");
        // A static executable has no PT_INTERP program header.
        let phoff = u64::from_le_bytes(bin[32..40].try_into().unwrap()) as usize;
        let phentsize = u16::from_le_bytes([bin[54], bin[55]]) as usize;
        let phnum = u16::from_le_bytes([bin[56], bin[57]]) as usize;
        for i in 0..phnum {
            let p_type = u32::from_le_bytes(bin[phoff + i * phentsize..][..4].try_into().unwrap());
            assert_ne!(p_type, 3, "the agent must not need a dynamic loader");
        }
    }

    #[test]
    fn initramfs_is_reproducible() {
        let a = build_initramfs(&[("etc/motd", b"hi")]).unwrap();
        let b = build_initramfs(&[("etc/motd", b"hi")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..2], &[0x1f, 0x8b], "gzip");
        let c = build_initramfs(&[("etc/motd", b"ho")]).unwrap();
        assert_ne!(a, c);
    }
}
