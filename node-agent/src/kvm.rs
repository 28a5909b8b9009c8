//! The `kvm` driver: each guest is a `modvisor vmm` process (our own KVM VMM), one per
//! VM, as Firecracker runs. COM1 goes to the console log, COM2 is served on the agent
//! socket exactly as the `qemu` driver serves it, and the VMM's final state (with a
//! crash reason) lands in a JSON state file.
//!
//! A vmm outlives a killed agent; the next agent adopts it through its jail (the agent
//! socket takes a new client).
//!
//! Jailed (the default in the node agent), the vmm runs in its own jail with `/dev/kvm`
//! and under the jailer's seccomp allowlist for our vmm.
//!
//! A full Linux guest needs hardware virtualization (VT-x/AMD-V); the node agent refuses
//! `--driver kvm` on a host without it.

use crate::driver::{
    guest_dir, is_live_with_arg, DriverError, Guest, GuestSpec, GuestState, HypervisorDriver,
    RunFiles,
};
use crate::guest_files::{read_tail, tail_line};
use crate::jailing::{jail_for_adoption, GuestJail, NodeJails};
use crate::process::{
    start_guest, End, GuestPaths, HypervisorGuest, HypervisorKind, HypervisorProcess,
};
use modvisor_vmm_launch::{ExitCode, LaunchArgs, StateReport, VmState};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `kvm` driver.
#[derive(Debug, Clone)]
pub struct KvmDriver {
    program: PathBuf,
    prefix: Vec<String>,
    jails: Option<Arc<NodeJails>>,
}

impl KvmDriver {
    /// A driver that runs `program prefix... --kernel ...` (normally the `modvisor`
    /// binary with the prefix `vmm`).
    pub fn new(program: PathBuf, prefix: Vec<String>) -> Self {
        KvmDriver {
            program,
            prefix,
            jails: None,
        }
    }

    /// The driver the node agent uses: the small `modvisor-vmm` binary when it sits beside
    /// this executable (`cargo build --release --workspace` puts it there), else this very
    /// `modvisor` binary as `modvisor vmm` (the same code, a larger binary to map).
    pub fn beside_this_executable() -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let small = exe.with_file_name("modvisor-vmm");
        Ok(if small.is_file() {
            KvmDriver::new(small, Vec::new())
        } else {
            KvmDriver::new(exe, vec!["vmm".into()])
        })
    }

    /// The program (and leading arguments) it runs for each VM.
    pub fn program(&self) -> (&Path, &[String]) {
        (&self.program, &self.prefix)
    }

    /// The same driver, running every vmm in a jail of `jails` under the vmm's seccomp
    /// allowlist (`None`: unjailed).
    pub fn with_jails(mut self, jails: impl Into<Option<Arc<NodeJails>>>) -> Self {
        self.jails = jails.into();
        self
    }
}

impl HypervisorDriver for KvmDriver {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn acceleration(&self) -> String {
        if crate::hostcaps::hardware_virtualization() {
            "kvm (hardware virtualization)".into()
        } else {
            "kvm without hardware virtualization: guest kernel code is emulated".into()
        }
    }

    fn start(&self, spec: &GuestSpec) -> Result<Box<dyn Guest>, DriverError> {
        if spec.nic.is_some() {
            return Err(DriverError::Unavailable {
                driver: "kvm",
                reason: "our vmm has no virtio-net device yet: a guest on a tenant network needs the qemu driver".into(),
            });
        }
        let files = RunFiles::prepare(spec, "vmm.log")?;
        let state = spec.guest_dir().join("state.json");
        let _ = std::fs::remove_file(&state);
        let jail = match &self.jails {
            Some(jails) => {
                let seccomp =
                    modvisor_jailer::seccomp::vmm_profile().map_err(|e| DriverError::Start {
                        what: format!("the jail of {}", spec.id),
                        reason: e.to_string(),
                    })?;
                jails.prepare(spec, &self.program, &["/dev/kvm"], Some(seccomp))?
            }
            None => GuestJail::none(&self.program),
        };
        let path = |p: &Path| jail.path(spec, p);
        let launch = LaunchArgs {
            kernel: path(&spec.kernel),
            initrd: Some(path(&spec.initrd)),
            cmdline: spec.cmdline.clone(),
            vcpus: u8::try_from(spec.vcpus).map_err(|_| DriverError::Start {
                what: format!("the vmm of {}", spec.id),
                reason: format!("{} vCPUs is more than the vmm runs", spec.vcpus),
            })?,
            memory_mib: spec.memory_mib,
            console: path(&files.console),
            agent_socket: Some(path(&files.socket)),
            api_socket: None,
            state_file: Some(path(&state)),
            timeout_secs: None,
        };
        let mut cmd = jail.command();
        cmd.args(&self.prefix)
            .args(launch.to_args())
            .env("MODVISOR_LOG", "warn");
        start_guest(spec, jail, &mut cmd, files, Vmm { state }, "vmm")
    }

    fn adopt(&self, id: &str, pid: u32, run_dir: &Path) -> Option<Box<dyn Guest>> {
        let guest_files = guest_dir(run_dir);
        let console = guest_files.join("console.log");
        let jail = jail_for_adoption(self.jails.as_deref(), &self.program, id, pid, |j| {
            is_vmm_for(pid, j, &console)
        })?;
        if !is_vmm_for(pid, &jail, &console) {
            return None;
        }
        Some(Box::new(HypervisorGuest::new(
            id,
            HypervisorProcess::adopted(pid, jail),
            GuestPaths {
                console,
                socket: guest_files.join("agent.sock"),
                agent_fallback: None,
                log: run_dir.join("vmm.log"),
            },
            Vmm {
                state: guest_files.join("state.json"),
            },
        )))
    }
}

/// Our vmm as a hypervisor kind: its end is read from its exit code and state file.
#[derive(Debug, Clone)]
pub struct Vmm {
    /// The state file the vmm writes when it ends.
    state: PathBuf,
}

/// A guest run by `modvisor vmm`.
pub type VmmGuest = HypervisorGuest<Vmm>;

/// Whether `pid` is still the vmm of a guest: a process of its jail, or (unjailed) a live
/// process writing the guest's `console`.
fn is_vmm_for(pid: u32, jail: &GuestJail, console: &Path) -> bool {
    if jail.is_jailed() {
        jail.holds(pid)
    } else {
        is_live_with_arg(pid, &console.to_string_lossy())
    }
}

/// What the end of a guest's vmm (state file and log at these paths) means. An adopted
/// vmm's exit status went to the agent that started it: its state file says how it ended.
fn classify(end: End, jail: &GuestJail, state: &Path, log: &Path) -> GuestState {
    if let Some(reason) = jail.oom_reason() {
        return GuestState::Crashed { reason };
    }
    let report = StateReport::from_file_text(&read_tail(state, 64 << 10));
    let status = match end {
        End::Exited(status) => status,
        End::Vanished => {
            return match report {
                Ok(StateReport {
                    state: VmState::Halted | VmState::ShutDown(_),
                    ..
                }) => GuestState::Exited,
                Ok(r) => GuestState::Crashed {
                    reason: r.state.describe(),
                },
                Err(e) => GuestState::Crashed {
                    reason: format!("the adopted vmm ended without a readable state report: {e}"),
                },
            };
        }
    };
    match status.code().map(ExitCode::from_code) {
        Some(Some(ExitCode::Clean)) => GuestState::Exited,
        Some(Some(code @ (ExitCode::Crashed | ExitCode::Setup))) => GuestState::Crashed {
            reason: match report {
                Ok(r) => r.state.reason().unwrap_or("no reason given").to_string(),
                Err(e) => format!("vmm exit {code:?} without a readable state report: {e}"),
            },
        },
        Some(None) => GuestState::Crashed {
            reason: format!(
                "vmm ended with status {}: {}",
                status.code().unwrap_or(-1),
                tail_line(log, 300)
            ),
        },
        None if std::os::unix::process::ExitStatusExt::signal(&status)
            == Some(nix::sys::signal::Signal::SIGSYS as i32) =>
        {
            GuestState::Crashed {
                reason: "the vmm made a system call outside its seccomp allowlist and was killed (SIGSYS)".into(),
            }
        }
        None => GuestState::Crashed {
            reason: format!("vmm ended ({status}): {}", tail_line(log, 300)),
        },
    }
}

impl HypervisorKind for Vmm {
    fn is_ours(&self, _: &str, pid: u32, jail: &GuestJail, paths: &GuestPaths) -> bool {
        is_vmm_for(pid, jail, &paths.console)
    }

    fn classify(&self, end: End, jail: &GuestJail, paths: &GuestPaths) -> GuestState {
        classify(end, jail, &self.state, &paths.log)
    }

    /// The vmm stops its VM cleanly on SIGTERM; a kill after the grace is no crash.
    fn stopped(
        &self,
        status: std::process::ExitStatus,
        jail: &GuestJail,
        paths: &GuestPaths,
    ) -> GuestState {
        match classify(End::Exited(status), jail, &self.state, &paths.log) {
            GuestState::Crashed { .. } if status.code().is_none() => GuestState::Exited,
            other => other,
        }
    }
}
