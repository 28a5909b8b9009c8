//! One VM: builds KVM state, memory, boot structures, devices and vCPUs from a
//! [`VmConfig`], runs the vCPU threads and watches them until the VM ends.

use crate::boot::{self, LoadedKernel};
use crate::cpu::{self, EntryMode};
use crate::cpuid::{self, CpuProfile};
use crate::devices::agent::{self, AgentBridge};
use crate::devices::bus::IoBus;
use crate::devices::console::ConsoleSink;
use crate::devices::{EventFdTrigger, Serial};
use crate::layout::{E820Entry, MemoryLayout};
use crate::memory::{self, GuestMemoryMmap};
use crate::mptable::{self, MAX_VCPUS};
use crate::state::{VmState, VmStatus};
use crate::vcpu::{self, ActivityCell, VcpuActivity};
use crate::VmmError;
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// A vmlinux ELF or a bzImage.
    pub kernel: PathBuf,
    /// An initrd, placed at the top of low RAM.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// vCPUs (1..=32).
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Where COM1 output goes (created or truncated).
    pub console: PathBuf,
    /// Most console bytes kept; the rest is dropped and counted.
    pub console_limit: u64,
    /// The Unix socket bridged to COM2; without one the guest has no COM2.
    pub agent_socket: Option<PathBuf>,
    /// CPU features shown to the guest.
    pub cpu_profile: CpuProfile,
    /// Enter an ELF kernel through its PVH note when it has one.
    pub allow_pvh: bool,
}

/// How the VM was booted, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSummary {
    /// Entry mode.
    pub mode: EntryMode,
    /// Entry address.
    pub entry: u64,
    /// The e820 map given to the guest.
    pub e820: Vec<E820Entry>,
}

const TSS_ADDRESS: usize = 0xfffb_d000;
const COM1_GSI: u32 = 4;
const COM2_GSI: u32 = 3;
/// How often the monitor kicks vCPUs to look for dead halts and pause requests.
const KICK_PERIOD: Duration = Duration::from_millis(100);

/// A built VM, ready to run.
pub struct Vm {
    _kvm: Kvm,
    _vm: VmFd,
    _mem: GuestMemoryMmap,
    vcpus: Vec<VcpuFd>,
    bus: Arc<IoBus>,
    com1: Arc<Mutex<Serial>>,
    status: Arc<VmStatus>,
    _agent: Option<AgentBridge>,
    boot: BootSummary,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("vcpus", &self.vcpus.len())
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

fn kvm_err(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { ioctl, source }
}

fn serial(gsi: u32, vm: &VmFd, out: Box<dyn std::io::Write + Send>) -> Result<Serial, VmmError> {
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Device {
        what: "serial eventfd",
        detail: e.to_string(),
    })?;
    vm.register_irqfd(&evt, gsi).map_err(kvm_err("KVM_IRQFD"))?;
    Ok(Serial::new(EventFdTrigger(evt), out))
}

impl Vm {
    /// Builds the VM described by `config`.
    pub fn new(config: &VmConfig) -> Result<Self, VmmError> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(VmmError::Config(format!(
                "{} vCPUs requested; 1..={MAX_VCPUS} supported",
                config.vcpus
            )));
        }
        let layout = MemoryLayout::new(u64::from(config.memory_mib) << 20)?;
        let kvm = crate::open_kvm()?;
        for (cap, name) in [
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::Pit2, "KVM_CAP_PIT2"),
            (Cap::Irqfd, "KVM_CAP_IRQFD"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmmError::Unavailable(format!("KVM lacks {name}")));
            }
        }
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;

        let mem = memory::create(&layout)?;
        memory::register(&vm, &mem)?;

        let kernel: LoadedKernel = boot::load_kernel(&mem, &config.kernel, config.allow_pvh)?;
        let cmdline_len = boot::load_cmdline(&mem, &config.cmdline)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(&mem, &layout, &kernel, path)?),
            None => None,
        };
        match kernel.mode {
            EntryMode::Linux64 => {
                let params = boot::build_boot_params(&layout, &kernel, cmdline_len, initrd);
                boot::write_boot_params(&mem, &params)?;
            }
            EntryMode::Pvh => boot::write_pvh_info(&mem, &layout, initrd)?,
        }
        mptable::write(&mem, config.vcpus)?;

        let status = Arc::new(VmStatus::new());
        let console = std::fs::File::create(&config.console).map_err(|e| VmmError::Device {
            what: "console file",
            detail: format!("{}: {e}", config.console.display()),
        })?;
        let sink = ConsoleSink::new(console, config.console_limit, status.clone());
        let com1 = Arc::new(Mutex::new(serial(COM1_GSI, &vm, Box::new(sink))?));
        let (com2, agent) = match &config.agent_socket {
            Some(path) => {
                let (sink, rx, dropped) = agent::channel();
                let com2 = Arc::new(Mutex::new(serial(COM2_GSI, &vm, Box::new(sink))?));
                let bridge = AgentBridge::start(path, com2.clone(), rx, dropped)?;
                (Some(com2), Some(bridge))
            }
            None => (None, None),
        };
        let bus = Arc::new(IoBus::new(com1.clone(), com2, status.clone())?);

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for i in 0..config.vcpus {
            let fd = vm
                .create_vcpu(u64::from(i))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let cpuid = cpuid::filter(
                &supported,
                u32::from(i),
                u32::from(config.vcpus),
                config.cpu_profile,
            );
            fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
            cpu::setup_common(&fd)?;
            if i == 0 {
                cpu::setup_boot_vcpu(&fd, &mem, kernel.mode, kernel.entry)?;
            }
            vcpus.push(fd);
        }
        let boot = BootSummary {
            mode: kernel.mode,
            entry: kernel.entry,
            e820: layout.e820(),
        };
        tracing::info!(
            vcpus = config.vcpus,
            memory_mib = config.memory_mib,
            mode = ?boot.mode,
            entry = format_args!("{:#x}", boot.entry),
            "VM built"
        );
        Ok(Self {
            _kvm: kvm,
            _vm: vm,
            _mem: mem,
            vcpus,
            bus,
            com1,
            status,
            _agent: agent,
            boot,
        })
    }

    /// The shared state (for the API).
    pub fn status(&self) -> Arc<VmStatus> {
        self.status.clone()
    }

    /// How the VM boots.
    pub fn boot(&self) -> &BootSummary {
        &self.boot
    }

    /// Port and MMIO accesses no device claimed so far.
    pub fn unclaimed_accesses(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.bus.unknown.ports.load(Relaxed),
            self.bus.unknown.mmio.load(Relaxed),
        )
    }

    /// Runs the vCPUs until the VM ends, or until `timeout` (then the VM is stopped as
    /// ShutDown). Returns the final state.
    pub fn run(&mut self, timeout: Option<Duration>) -> VmState {
        if let Err(e) = vcpu::install_kick_handler() {
            self.status.finish(VmState::Crashed(format!(
                "installing the vCPU kick handler: {e}"
            )));
            return self.status.state();
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut threads: Vec<(JoinHandle<()>, Arc<ActivityCell>)> = Vec::new();
        for (i, fd) in self.vcpus.drain(..).enumerate() {
            let activity = Arc::new(ActivityCell::default());
            let (bus, status, act) = (self.bus.clone(), self.status.clone(), activity.clone());
            let index = i as u8;
            match std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || vcpu::run(index, fd, bus, status, act))
            {
                Ok(h) => threads.push((h, activity)),
                Err(e) => {
                    self.status
                        .finish(VmState::Crashed(format!("spawning vCPU {i}: {e}")));
                    break;
                }
            }
        }
        loop {
            let state = self.status.wait_final(KICK_PERIOD);
            if state.is_final() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.status
                    .finish(VmState::ShutDown("the run timeout expired".into()));
                break;
            }
            if state == VmState::Paused {
                kick_all(&threads);
                continue;
            }
            let acts: Vec<VcpuActivity> = threads.iter().map(|(_, a)| a.get()).collect();
            if acts.contains(&VcpuActivity::DeadHalt)
                && acts.iter().all(|a| *a != VcpuActivity::Live)
            {
                self.status.finish(VmState::Halted);
                break;
            }
            kick_all(&threads);
        }
        // Stop every vCPU: kick until each thread has returned (bounded).
        let stop_deadline = Instant::now() + Duration::from_secs(5);
        while threads.iter().any(|(_, a)| a.get() != VcpuActivity::Exited)
            && Instant::now() < stop_deadline
        {
            kick_all(&threads);
            std::thread::sleep(Duration::from_millis(5));
        }
        for (h, a) in threads {
            if a.get() == VcpuActivity::Exited {
                let _ = h.join();
            } else {
                tracing::warn!("a vCPU thread did not stop; leaving it");
            }
        }
        if let Ok(mut c) = self.com1.lock() {
            let _ = c.writer_mut().flush();
        }
        self.status.state()
    }
}

fn kick_all(threads: &[(JoinHandle<()>, Arc<ActivityCell>)]) {
    for (h, a) in threads {
        if a.get() != VcpuActivity::Exited {
            // SAFETY: the handle has not been joined, so the pthread_t is valid; the
            // signal has a no-op handler installed.
            unsafe {
                libc::pthread_kill(h.as_pthread_t(), vcpu::kick_signal());
            }
        }
    }
}
