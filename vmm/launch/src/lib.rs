//! The launch contract of modvisor's vmm: how it is started ([`LaunchArgs`]), how it ends
//! ([`ExitCode`]) and what it reports ([`StateReport`], [`VmState`]). The vmm and the
//! node agent's `kvm` driver both use these types; neither matches strings.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::PathBuf;

/// How a vmm process ended, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The VM halted or shut down (also when stopped by a signal).
    Clean,
    /// The VM could not be built (bad kernel, no KVM, unusable socket path).
    Setup,
    /// The guest or KVM failed: triple fault, emulation failure, failed entry.
    Crashed,
}

impl ExitCode {
    /// The process exit status.
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Clean => 0,
            ExitCode::Setup => 2,
            ExitCode::Crashed => 3,
        }
    }

    /// The exit code a status means, if it is one of the vmm's.
    pub fn from_code(code: i32) -> Option<Self> {
        [ExitCode::Clean, ExitCode::Setup, ExitCode::Crashed]
            .into_iter()
            .find(|c| c.code() == code)
    }
}

/// What a VM is doing, as the vmm reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason")]
pub enum VmState {
    /// The vCPUs run.
    Running,
    /// The vCPUs are parked by a pause request.
    Paused,
    /// Every vCPU halted with interrupts off (or was never started): nothing can wake it.
    Halted,
    /// The guest reset or powered off through a device, or the VM was stopped.
    ShutDown(String),
    /// The guest or KVM failed.
    Crashed(String),
    /// The VM could not be built; the process exits with [`ExitCode::Setup`]. Only ever in
    /// the state file.
    SetupFailed(String),
}

impl VmState {
    /// Whether the VM has ended.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Running | Self::Paused)
    }

    /// The exit code of a vmm whose VM ended in this state.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Crashed(_) => ExitCode::Crashed,
            Self::SetupFailed(_) => ExitCode::Setup,
            _ => ExitCode::Clean,
        }
    }

    /// Why it ended, for the states that say.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::ShutDown(r) | Self::Crashed(r) | Self::SetupFailed(r) => Some(r),
            _ => None,
        }
    }

    /// A one-line description.
    pub fn describe(&self) -> String {
        match self {
            Self::Running => "running".into(),
            Self::Paused => "paused".into(),
            Self::Halted => "halted".into(),
            Self::ShutDown(r) => format!("shut down: {r}"),
            Self::Crashed(r) => format!("crashed: {r}"),
            Self::SetupFailed(r) => format!("could not be built: {r}"),
        }
    }
}

/// What the vmm's API answers and what it writes to its state file when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReport {
    /// State and, when it ended, the reason.
    #[serde(flatten)]
    pub state: VmState,
    /// Milliseconds since the vCPUs started.
    #[serde(default)]
    pub uptime_ms: u64,
    /// Console bytes dropped because the console cap was reached.
    #[serde(default)]
    pub console_dropped: u64,
}

impl StateReport {
    /// The report of a VM that could not be built.
    pub fn setup_failed(reason: impl Into<String>) -> Self {
        StateReport {
            state: VmState::SetupFailed(reason.into()),
            uptime_ms: 0,
            console_dropped: 0,
        }
    }

    /// The report as the state file holds it (one JSON line).
    pub fn to_file_text(&self) -> String {
        match serde_json::to_string(self) {
            Ok(s) => format!("{s}\n"),
            // A report of strings and integers always encodes; say so if it ever does not.
            Err(e) => format!("{{\"state\":\"Crashed\",\"reason\":\"unencodable report: {e}\"}}\n"),
        }
    }

    /// Reads a state file's text.
    pub fn from_file_text(text: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(text)
    }
}

/// The command line of one vmm process (after the program and its prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchArgs {
    /// A vmlinux ELF (PVH entry when it has one) or a bzImage.
    pub kernel: PathBuf,
    /// An initrd.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// vCPUs (1..=32).
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// File that receives the console (COM1).
    pub console: PathBuf,
    /// Unix socket (the vmm listens) bridged to the guest agent's channel (COM2).
    pub agent_socket: Option<PathBuf>,
    /// Unix socket for the control API.
    pub api_socket: Option<PathBuf>,
    /// File that receives the final [`StateReport`].
    pub state_file: Option<PathBuf>,
    /// Stop the VM (as ShutDown) after this many seconds.
    pub timeout_secs: Option<u64>,
}

impl LaunchArgs {
    /// The arguments, exactly as the vmm parses them.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            out.push(name.into());
            out.push(value);
        };
        flag("--kernel", self.kernel.clone().into());
        if let Some(p) = &self.initrd {
            flag("--initrd", p.clone().into());
        }
        flag("--cmdline", self.cmdline.clone().into());
        flag("--vcpus", self.vcpus.to_string().into());
        flag("--memory-mib", self.memory_mib.to_string().into());
        flag("--console", self.console.clone().into());
        if let Some(p) = &self.agent_socket {
            flag("--agent-socket", p.clone().into());
        }
        if let Some(p) = &self.api_socket {
            flag("--api-socket", p.clone().into());
        }
        if let Some(p) = &self.state_file {
            flag("--state-file", p.clone().into());
        }
        if let Some(s) = self.timeout_secs {
            flag("--timeout-secs", s.to_string().into());
        }
        out
    }
}

/// What the host CPU offers for virtualization, read from `/proc/cpuinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HardwareVirt {
    /// Intel VT-x (`vmx`).
    Vmx,
    /// AMD-V (`svm`).
    Svm,
    /// Neither: KVM here is nested or emulated, and guest kernel code runs slowly.
    None,
}

impl HardwareVirt {
    /// Reads `/proc/cpuinfo` (`None` when it cannot be read).
    pub fn detect() -> Self {
        match std::fs::read_to_string("/proc/cpuinfo") {
            Ok(info) => Self::from_cpuinfo(&info),
            Err(_) => Self::None,
        }
    }

    /// Parses the `flags` lines of a cpuinfo text.
    pub fn from_cpuinfo(info: &str) -> Self {
        let flags = info
            .lines()
            .filter(|l| l.starts_with("flags"))
            .flat_map(|l| l.split_whitespace());
        let mut found = Self::None;
        for f in flags {
            match f {
                "vmx" => return Self::Vmx,
                "svm" => found = Self::Svm,
                _ => {}
            }
        }
        found
    }

    /// Whether the host has VT-x or AMD-V.
    pub fn present(self) -> bool {
        self != Self::None
    }

    /// A one-line description for logs and reports.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Vmx => "hardware virtualization: Intel VT-x (vmx)",
            Self::Svm => "hardware virtualization: AMD-V (svm)",
            Self::None => "no hardware virtualization (no vmx/svm in /proc/cpuinfo): KVM here is nested/emulated; guest kernel code is instruction-emulated and slow",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_flags() {
        assert_eq!(
            HardwareVirt::from_cpuinfo("flags\t: fpu vmx sse\n"),
            HardwareVirt::Vmx
        );
        assert_eq!(
            HardwareVirt::from_cpuinfo("flags\t: fpu svm\n"),
            HardwareVirt::Svm
        );
        assert_eq!(
            HardwareVirt::from_cpuinfo("flags\t: fpu sse2\n"),
            HardwareVirt::None
        );
        assert_eq!(HardwareVirt::from_cpuinfo(""), HardwareVirt::None);
    }

    #[test]
    fn exit_codes_round_trip() {
        for c in [ExitCode::Clean, ExitCode::Setup, ExitCode::Crashed] {
            assert_eq!(ExitCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ExitCode::from_code(1), None);
    }

    #[test]
    fn reports_round_trip_through_the_state_file_form() {
        for state in [
            VmState::Halted,
            VmState::ShutDown("stopped by a signal".into()),
            VmState::Crashed("triple fault".into()),
            VmState::SetupFailed("no /dev/kvm".into()),
        ] {
            let r = StateReport {
                state,
                uptime_ms: 7,
                console_dropped: 1,
            };
            let back = StateReport::from_file_text(r.to_file_text().as_bytes()).unwrap();
            assert_eq!(back, r);
        }
        let json: serde_json::Value =
            serde_json::from_str(&StateReport::setup_failed("x").to_file_text()).unwrap();
        assert_eq!(json["state"], "SetupFailed");
        assert_eq!(json["reason"], "x");
    }
}
