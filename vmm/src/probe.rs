//! Probe guests: tiny x86-64 programs, assembled from the sources in `vmm/probes/` with
//! binutils (`as`, `ld`) into ELF images the VMM boots like a vmlinux. The 64-bit probes
//! enter through the Linux 64-bit boot protocol (long mode, `rsi` = zero page); the
//! `PvhReady` probe enters through a PVH note, so QEMU can boot the very same file.

use std::path::{Path, PathBuf};
use std::process::Command;

const COMMON: &str = include_str!("../probes/common.s");
const LINK_SCRIPT: &str = include_str!("../probes/link.ld");

/// The probe guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Prints `modvisor probe: hello from the guest` on COM1 and halts.
    Hello,
    /// Reports the e820 map and command line from its zero page, then halts.
    BootParams,
    /// Echoes COM2 input back to COM2 until it reads `q`, then halts.
    Echo,
    /// Starts every vCPU with INIT/SIPI; each reports its LAPIC and CPUID APIC ids.
    Smp,
    /// Triple-faults.
    TripleFault,
    /// Hammers unclaimed ports and MMIO, floods the console with 2 MiB, halts.
    Hostile,
    /// PVH entry: prints `modvisor probe: ready`, masks the PICs and idles with interrupts
    /// on (it stays running until it is stopped).
    PvhReady,
}

impl Probe {
    /// The probe's file stem.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::BootParams => "bootparams",
            Self::Echo => "echo",
            Self::Smp => "smp",
            Self::TripleFault => "triple",
            Self::Hostile => "hostile",
            Self::PvhReady => "pvh_ready",
        }
    }

    /// The assembly source (with the shared helpers for 64-bit probes).
    pub fn source(self) -> String {
        let own = match self {
            Self::Hello => include_str!("../probes/hello.s"),
            Self::BootParams => include_str!("../probes/bootparams.s"),
            Self::Echo => include_str!("../probes/echo.s"),
            Self::Smp => include_str!("../probes/smp.s"),
            Self::TripleFault => include_str!("../probes/triple.s"),
            Self::Hostile => include_str!("../probes/hostile.s"),
            Self::PvhReady => return include_str!("../probes/pvh_ready.s").to_string(),
        };
        format!("{own}\n{COMMON}")
    }
}

/// Building a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The assembler or linker failed (binutils missing, or a bad source).
    #[error("{command}: {detail}")]
    Tool {
        /// The command.
        command: String,
        /// Its output or why it could not run.
        detail: String,
    },
}

fn run(cmd: &mut Command) -> Result<(), ProbeError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ProbeError::Tool {
        command: command.clone(),
        detail: format!("{e} (binutils' as and ld are needed to build probe guests)"),
    })?;
    if !out.status.success() {
        return Err(ProbeError::Tool {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Assembles and links `probe` in `dir`; returns the ELF's path.
pub fn build(probe: Probe, dir: &Path) -> Result<PathBuf, ProbeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProbeError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let src = dir.join(format!("{}.s", probe.name()));
    let obj = dir.join(format!("{}.o", probe.name()));
    let elf = dir.join(format!("{}.elf", probe.name()));
    let script = dir.join("probe.ld");
    std::fs::write(&src, probe.source()).map_err(io(&src))?;
    std::fs::write(&script, LINK_SCRIPT).map_err(io(&script))?;
    run(Command::new("as").arg("--64").arg("-o").arg(&obj).arg(&src))?;
    run(Command::new("ld")
        .args([
            "-m",
            "elf_x86_64",
            "-nostdlib",
            "-static",
            "--build-id=none",
        ])
        .args(["-z", "max-page-size=0x1000", "--no-warn-rwx-segments"])
        .arg("-T")
        .arg(&script)
        .arg("-o")
        .arg(&elf)
        .arg(&obj))?;
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_assembles() {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            Probe::Hello,
            Probe::BootParams,
            Probe::Echo,
            Probe::Smp,
            Probe::TripleFault,
            Probe::Hostile,
            Probe::PvhReady,
        ] {
            let elf = build(p, dir.path()).unwrap();
            let bytes = std::fs::read(elf).unwrap();
            assert_eq!(&bytes[..4], b"\x7fELF", "{p:?}");
        }
    }
}
