//! The guest initramfs: `/init` is the guest agent; the tenant's userland is busybox.

use crate::cpio::{self, Entry};
use crate::userland::Userland;
use flate2::{Compression, GzBuilder};
use std::io::Write;

/// The guest agent, a static x86-64 Linux binary built with this crate.
pub fn agent_binary() -> &'static [u8] {
    include_bytes!(env!("MODVISOR_GUEST_AGENT_BIN"))
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
const GROUP: &str = "root:x:0:\n";
const PROFILE: &str =
    "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport HOME=/root\nPS1='\\u@\\h:\\w\\$ '\n";

/// The gzip-compressed newc initramfs: the agent as `/init`, busybox and its applets from
/// `userland`, a minimal `/etc`, plus `extra` files (path, bytes). Equal inputs give
/// equal bytes.
pub fn build_initramfs(userland: &Userland, extra: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let busybox = std::fs::read(&userland.busybox)?;
    let mut entries = vec![
        Entry::dir("bin", 0o755),
        Entry::file("bin/busybox", 0o755, busybox),
        Entry::dir("dev", 0o755),
        Entry::char_device("dev/console", 0o600, 5, 1),
        Entry::char_device("dev/null", 0o666, 1, 3),
        Entry::dir("etc", 0o755),
        Entry::file("etc/group", 0o644, GROUP.into()),
        Entry::file("etc/passwd", 0o644, PASSWD.into()),
        Entry::file("etc/profile", 0o644, PROFILE.into()),
        Entry::file("init", 0o755, agent_binary().to_vec()),
        Entry::dir("proc", 0o555),
        Entry::dir("root", 0o700),
        Entry::dir("run", 0o755),
        Entry::dir("sbin", 0o755),
        Entry::dir("sys", 0o555),
        Entry::dir("tmp", 0o1777),
        Entry::dir("usr", 0o755),
        Entry::dir("usr/bin", 0o755),
        Entry::dir("usr/sbin", 0o755),
        Entry::dir("var", 0o755),
    ];
    for applet in &userland.applets {
        if applet != "bin/busybox" {
            entries.push(Entry::symlink(applet, "/bin/busybox"));
        }
    }
    for (path, bytes) in extra {
        let path = path.trim_start_matches('/');
        // Its directories first: the kernel unpacks no file into a missing directory.
        let mut dir = std::path::Path::new(path).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            entries.push(Entry::dir(&d.to_string_lossy(), 0o755));
            dir = d.parent();
        }
        entries.push(Entry::file(path, 0o644, bytes.to_vec()));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.dedup_by(|a, b| a.name == b.name);
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

    /// A userland whose "busybox" is a few bytes of text (the archive's layout is what is
    /// tested; real guests boot the real one in the node agent's tests).
    fn two_applet_userland(dir: &std::path::Path) -> Userland {
        let busybox = dir.join("busybox");
        std::fs::write(&busybox, b"not really busybox").unwrap();
        Userland {
            version: "test".into(),
            busybox,
            applets: vec!["bin/sh".into(), "sbin/ip".into()],
        }
    }

    #[test]
    fn initramfs_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let u = two_applet_userland(dir.path());
        let a = build_initramfs(&u, &[("etc/motd", b"hi")]).unwrap();
        let b = build_initramfs(&u, &[("etc/motd", b"hi")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..2], &[0x1f, 0x8b], "gzip");
        let c = build_initramfs(&u, &[("etc/motd", b"ho")]).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn applets_link_to_busybox() {
        let dir = tempfile::tempdir().unwrap();
        let u = two_applet_userland(dir.path());
        let gz = build_initramfs(&u, &[]).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let pos = raw.windows(7).position(|w| w == b"sbin/ip").unwrap();
        let gz = build_initramfs(&u, &[("lib/x/y.ko", b"ko")]).unwrap();
        let mut with_extra = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut with_extra)
            .unwrap();
        let at = |name: &[u8]| with_extra.windows(name.len()).position(|w| w == name);
        let (lib, x, ko) = (at(b"lib\0"), at(b"lib/x\0"), at(b"lib/x/y.ko\0"));
        assert!(
            lib < x && x < ko && lib.is_some(),
            "directories come before the file"
        );
        // mode field of that entry's header: a symbolic link.
        assert_eq!(&raw[pos - 110 + 14..pos - 110 + 22], b"0000a1ff");
        assert!(raw.windows(12).any(|w| w == b"/bin/busybox"));
    }
}
