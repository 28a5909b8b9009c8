//! The `qemu` driver: each guest is a `qemu-system-x86_64` process with the kernel and
//! initramfs, COM1 written to a console log and COM2 served on a Unix socket for the guest
//! agent. KVM acceleration where the host has hardware virtualization, TCG otherwise.
//!
//! Jailed (the default in the node agent), QEMU runs in its own jail and under its own
//! seccomp sandbox (`-sandbox`, a denylist; see the jailer's README): the jailer's
//! allowlist is for our vmm only.

use crate::driver::{
    guest_dir, is_live_with_arg, DriverError, Guest, GuestSpec, GuestState, HypervisorDriver,
    RunFiles,
};
use crate::guest_files::{read_tail, tail_line};
use crate::hostcaps;
use crate::jailing::{jail_for_adoption, GuestJail, NodeJails};
use crate::process::{
    start_guest, End, GuestPaths, HypervisorGuest, HypervisorKind, HypervisorProcess,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's binary translator (no hardware support needed).
    Tcg,
}

/// The `qemu` driver.
#[derive(Debug, Clone)]
pub struct QemuDriver {
    binary: PathBuf,
    accel: Accel,
    jails: Option<Arc<NodeJails>>,
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

impl QemuDriver {
    /// The driver with `qemu-system-x86_64` from `$MODVISOR_QEMU` or `PATH`, using KVM when
    /// the host has hardware virtualization and TCG otherwise.
    pub fn detect() -> Result<Self, DriverError> {
        let binary = std::env::var_os("MODVISOR_QEMU")
            .map(PathBuf::from)
            .or_else(|| which("qemu-system-x86_64"))
            .ok_or_else(|| DriverError::Unavailable {
                driver: "qemu",
                reason: "qemu-system-x86_64 not found (apt-get install qemu-system-x86)".into(),
            })?;
        let accel = if hostcaps::hardware_virtualization() && hostcaps::kvm_device_usable() {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        Ok(QemuDriver {
            binary,
            accel,
            jails: None,
        })
    }

    /// The same driver, running every guest in a jail of `jails` (`None`: unjailed).
    pub fn with_jails(mut self, jails: impl Into<Option<Arc<NodeJails>>>) -> Self {
        self.jails = jails.into();
        self
    }

    /// The acceleration in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    fn command(&self, spec: &GuestSpec, jail: &GuestJail, files: &RunFiles) -> Command {
        let path = |p: &Path| jail.path(spec, p);
        let mut cmd = jail.command();
        cmd.arg("-name")
            .arg(format!("modvisor-{}", spec.id))
            .args(["-machine", "pc"])
            .args(["-nodefaults", "-no-user-config", "-no-reboot"])
            .args(["-display", "none", "-monitor", "none"]);
        match self.accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
        if jail.is_jailed() {
            cmd.args(["-sandbox", modvisor_jailer::seccomp::QEMU_SANDBOX]);
        }
        cmd.arg("-m")
            .arg(spec.memory_mib.to_string())
            .arg("-smp")
            .arg(spec.vcpus.to_string())
            .arg("-kernel")
            .arg(path(&spec.kernel))
            .arg("-initrd")
            .arg(path(&spec.initrd))
            .arg("-append")
            .arg(&spec.cmdline)
            // COM1 on a socket the node agent connects to (the console both ways), and
            // every byte of it in the console log as well, connected or not.
            .arg("-chardev")
            .arg(format!(
                "socket,id=console,path={},server=on,wait=off,logfile={},logappend=on",
                path(&console_socket_of(&files.console)).display(),
                path(&files.console).display()
            ))
            .args(["-serial", "chardev:console"]);
        if spec.virtio_channel {
            // The agent's channel on a virtio-serial port it finds by name; COM2 beside
            // it for an agent without the virtio driver.
            cmd.args(["-device", "virtio-serial-pci,id=vser0"])
                .arg("-chardev")
                .arg(format!(
                    "socket,id=agent,path={},server=on,wait=off",
                    path(&files.socket).display()
                ))
                .arg("-device")
                .arg(format!(
                    "virtserialport,bus=vser0.0,chardev=agent,name={}",
                    modvisor_guest_protocol::AGENT_PORT
                ))
                .arg("-serial")
                .arg(format!(
                    "unix:{},server=on,wait=off",
                    path(&serial_socket_of(&files.socket)).display()
                ));
        } else {
            cmd.arg("-serial").arg(format!(
                "unix:{},server=on,wait=off",
                path(&files.socket).display()
            ));
        }
        if let Some(nic) = &spec.nic {
            // The tap is already on its bridge in the node's namespace: QEMU gets its
            // descriptor, not a name (its jail has an empty network namespace). No
            // option ROM: the kernel is booted directly.
            cmd.arg("-netdev")
                .arg(format!("tap,id=net0,fd={TAP_FD}"))
                .arg("-device")
                .arg(format!(
                    "virtio-net-pci,netdev=net0,mac={},romfile=",
                    nic.mac
                ));
            modvisor_jailer::handoff::inherit_fd(&mut cmd, nic.tap.clone(), TAP_FD);
        }
        cmd
    }
}

/// The descriptor number a guest's tap has in QEMU.
const TAP_FD: std::os::fd::RawFd = 3;

impl HypervisorDriver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn networking(&self) -> bool {
        true
    }

    fn acceleration(&self) -> String {
        match self.accel {
            Accel::Kvm => "kvm".into(),
            Accel::Tcg => "tcg (no hardware virtualization on this host)".into(),
        }
    }

    fn start(&self, spec: &GuestSpec) -> Result<Box<dyn Guest>, DriverError> {
        let mut files = RunFiles::prepare(spec, "qemu.log")?;
        let jail = match &self.jails {
            Some(jails) => {
                let devices: &[&str] = match self.accel {
                    Accel::Kvm => &["/dev/kvm"],
                    Accel::Tcg => &[],
                };
                jails.prepare(spec, &self.binary, devices, None)?
            }
            None => GuestJail::none(&self.binary),
        };
        if spec.virtio_channel {
            files.agent_fallback = Some(serial_socket_of(&files.socket));
        }
        let mut cmd = self.command(spec, &jail, &files);
        start_guest(spec, jail, &mut cmd, files, Qemu, "qemu")
    }

    fn adopt(&self, id: &str, pid: u32, run_dir: &Path) -> Option<Box<dyn Guest>> {
        let jail = jail_for_adoption(self.jails.as_deref(), &self.binary, id, pid, |_| {
            is_qemu_for(pid, id)
        })?;
        adopt_qemu(id, pid, run_dir, jail).map(|g| Box::new(g) as Box<dyn Guest>)
    }
}

/// QEMU as a hypervisor kind: recognised by its `-name modvisor-<id>`.
#[derive(Debug, Clone, Copy)]
pub struct Qemu;

/// A guest run by QEMU.
pub type QemuGuest = HypervisorGuest<Qemu>;

/// Whether `pid` is a live QEMU process for guest `id` (not a zombie, not another process
/// that reused the pid).
pub fn is_qemu_for(pid: u32, id: &str) -> bool {
    is_live_with_arg(pid, &format!("modvisor-{id}"))
}

/// Takes over a QEMU that an earlier node agent started for guest `id` in `run_dir` (in
/// `jail`).
pub fn adopt_qemu(id: &str, pid: u32, run_dir: &Path, jail: GuestJail) -> Option<QemuGuest> {
    is_qemu_for(pid, id).then(|| {
        HypervisorGuest::new(
            id,
            HypervisorProcess::adopted(pid, jail),
            GuestPaths {
                console: guest_dir(run_dir).join("console.log"),
                socket: guest_dir(run_dir).join("agent.sock"),
                // Long started: its sockets are all there.
                agent_fallback: Some(serial_socket_of(&guest_dir(run_dir).join("agent.sock")))
                    .filter(|p| p.exists()),
                log: run_dir.join("qemu.log"),
            },
            Qemu,
        )
    })
}

/// COM2's socket beside the agent socket, when that is a virtio-serial port.
fn serial_socket_of(agent_socket: &Path) -> PathBuf {
    agent_socket.with_file_name("agent-serial.sock")
}

/// The console socket beside the console log.
fn console_socket_of(console_log: &Path) -> PathBuf {
    console_log.with_file_name("console.sock")
}

/// What the end of the QEMU of a guest (console and log at these paths) means.
fn classify(end: End, jail: &GuestJail, console: &Path, log: &Path) -> GuestState {
    if let Some(reason) = jail.oom_reason() {
        return GuestState::Crashed { reason };
    }
    let status = match end {
        End::Vanished => {
            return GuestState::Crashed {
                reason: "the adopted qemu process ended".into(),
            }
        }
        End::Exited(status) => status,
    };
    if status.success() {
        let console = read_tail(console, 64 << 10);
        let text = String::from_utf8_lossy(&console);
        if let Some(line) = text.lines().find(|l| l.contains("Kernel panic")) {
            return GuestState::Crashed {
                reason: format!("guest kernel panic: {}", line.trim()),
            };
        }
        return GuestState::Exited;
    }
    let how = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => format!("qemu exited with status {c}"),
        (None, Some(s)) => format!("qemu was killed by signal {s}"),
        _ => "qemu ended".into(),
    };
    GuestState::Crashed {
        reason: format!("{how}: {}", tail_line(log, 400)),
    }
}

impl HypervisorKind for Qemu {
    fn is_ours(&self, id: &str, pid: u32, _: &GuestJail, _: &GuestPaths) -> bool {
        is_qemu_for(pid, id)
    }

    fn classify(&self, end: End, jail: &GuestJail, paths: &GuestPaths) -> GuestState {
        classify(end, jail, &paths.console, &paths.log)
    }

    fn console_socket(&self, paths: &GuestPaths) -> Option<PathBuf> {
        Some(console_socket_of(&paths.console))
    }

    /// QEMU ends on SIGTERM; however it ended then, it was stopped.
    fn stopped(&self, _: std::process::ExitStatus, _: &GuestJail, _: &GuestPaths) -> GuestState {
        GuestState::Exited
    }
}
