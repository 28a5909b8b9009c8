//! `modvisor vmm`: runs exactly one VM in this process until it halts, shuts down or
//! crashes. Its contract ([`modvisor_vmm_launch`]): the flags of [`VmmArgs`] (built by
//! `LaunchArgs`), an [`ExitCode`], and a [`StateReport`] in the state file; a one-line
//! reason goes to stderr too.

use crate::cpuid::CpuProfile;
use crate::devices::console::DEFAULT_LIMIT;
use crate::state::{ExitCode, StateReport, VmState};
use crate::{api, HardwareVirt, Vm, VmConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Arguments of `modvisor vmm`.
#[derive(Debug, Clone, clap::Args)]
pub struct VmmArgs {
    /// The kernel: a vmlinux ELF (PVH entry when it has one) or a bzImage.
    #[arg(long)]
    pub kernel: PathBuf,
    /// An initrd.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long)]
    pub cmdline: String,
    /// vCPUs (1..=32).
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 128)]
    pub memory_mib: u32,
    /// File that receives the console (COM1).
    #[arg(long)]
    pub console: PathBuf,
    /// Most console bytes kept; the rest is dropped and counted.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub console_limit: u64,
    /// Unix socket (we listen) bridged to the guest agent's channel (COM2).
    #[arg(long)]
    pub agent_socket: Option<PathBuf>,
    /// Unix socket for the control API (GET /vm, PUT /vm/state).
    #[arg(long)]
    pub api_socket: Option<PathBuf>,
    /// CPU features: `host` (all KVM offers) or `compat` (hides what an emulating host
    /// cannot run).
    #[arg(long, default_value = "host")]
    pub cpu_profile: CpuProfile,
    /// Enter ELF kernels at their 64-bit entry even when they have a PVH note.
    #[arg(long)]
    pub no_pvh: bool,
    /// File that receives the final state as JSON.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Stop the VM (as ShutDown) after this many seconds.
    #[arg(long)]
    pub timeout_secs: Option<u64>,
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATE.store(true, Ordering::Relaxed);
}

fn write_state_file(path: &Option<PathBuf>, report: &StateReport) {
    if let Some(p) = path {
        if let Err(e) = std::fs::write(p, report.to_file_text()) {
            eprintln!("modvisor vmm: writing the state file {}: {e}", p.display());
        }
    }
}

/// Runs the VM of `args`; returns the process exit code.
pub fn run(args: VmmArgs) -> i32 {
    tracing::info!("{}", HardwareVirt::detect().describe());
    let config = VmConfig {
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        cmdline: args.cmdline.clone(),
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        console: args.console.clone(),
        console_limit: args.console_limit,
        agent_socket: args.agent_socket.clone(),
        cpu_profile: args.cpu_profile,
        allow_pvh: !args.no_pvh,
    };
    let mut vm = match Vm::new(&config) {
        Ok(vm) => vm,
        Err(e) => {
            let reason = format!("{e}").replace('\n', " ");
            eprintln!("modvisor vmm: error: {reason}");
            write_state_file(&args.state_file, &StateReport::setup_failed(reason));
            return ExitCode::Setup.code();
        }
    };
    let status = vm.status();
    let _api = match &args.api_socket {
        Some(path) => match api::spawn(path, status.clone()) {
            Ok(server) => Some(server),
            Err(e) => {
                eprintln!("modvisor vmm: error: {e}");
                write_state_file(&args.state_file, &StateReport::setup_failed(e.to_string()));
                return ExitCode::Setup.code();
            }
        },
        None => None,
    };
    // SIGTERM and SIGINT stop the VM cleanly (ShutDown), as the node agent asks nicely
    // before it kills.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_terminate as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_terminate as *const () as libc::sighandler_t,
        );
    }
    let watcher = {
        let status = status.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                if TERMINATE.load(Ordering::Relaxed) {
                    status.finish(VmState::ShutDown("stopped by a signal".into()));
                    return;
                }
                if status.state().is_final() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            })
    };
    if let Err(e) = watcher {
        let reason = format!("the signal watcher thread: {e}");
        eprintln!("modvisor vmm: error: {reason}");
        write_state_file(&args.state_file, &StateReport::setup_failed(reason));
        return ExitCode::Setup.code();
    }
    let state = vm.run(args.timeout_secs.map(Duration::from_secs));
    write_state_file(&args.state_file, &vm.status().report());
    match &state {
        VmState::Crashed(_) => eprintln!("modvisor vmm: VM {}", state.describe()),
        _ => tracing::info!("VM {}", state.describe()),
    }
    state.exit_code().code()
}

#[cfg(test)]
mod tests {
    use super::VmmArgs;
    use clap::Parser;
    use modvisor_vmm_launch::LaunchArgs;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        vmm: VmmArgs,
    }

    #[test]
    fn the_launch_contract_parses_as_the_vmm_reads_it() {
        let launch = LaunchArgs {
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            cmdline: "console=ttyS0 quiet".into(),
            vcpus: 3,
            memory_mib: 256,
            console: "/c".into(),
            agent_socket: Some("/a.sock".into()),
            api_socket: Some("/api.sock".into()),
            state_file: Some("/s.json".into()),
            timeout_secs: Some(9),
        };
        let mut argv = vec![std::ffi::OsString::from("vmm")];
        argv.extend(launch.to_args());
        let parsed = Cli::try_parse_from(argv).unwrap().vmm;
        assert_eq!(parsed.kernel, launch.kernel);
        assert_eq!(parsed.initrd, launch.initrd);
        assert_eq!(parsed.cmdline, launch.cmdline);
        assert_eq!(parsed.vcpus, launch.vcpus);
        assert_eq!(parsed.memory_mib, launch.memory_mib);
        assert_eq!(parsed.console, launch.console);
        assert_eq!(parsed.agent_socket, launch.agent_socket);
        assert_eq!(parsed.api_socket, launch.api_socket);
        assert_eq!(parsed.state_file, launch.state_file);
        assert_eq!(parsed.timeout_secs, launch.timeout_secs);
    }
}
