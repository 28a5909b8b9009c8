//! One vCPU thread: `KVM_RUN` in a loop, each exit mapped to device I/O or a VM state.
//! The thread never panics on guest behaviour: every exit a guest can cause is handled,
//! and anything unexpected ends the VM as Crashed with the KVM reason.

use crate::devices::bus::IoBus;
use crate::state::{VmState, VmStatus};
use kvm_bindings::{KVM_MP_STATE_HALTED, KVM_MP_STATE_UNINITIALIZED};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// What the monitor knows about a vCPU after its last kick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuActivity {
    /// Running or able to run.
    Live = 0,
    /// Halted with interrupts off: only NMI/INIT could wake it, and no device sends those.
    DeadHalt = 1,
    /// Never started (an AP waiting for INIT/SIPI).
    Parked = 2,
    /// The thread has returned.
    Exited = 3,
}

impl VcpuActivity {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::DeadHalt,
            2 => Self::Parked,
            3 => Self::Exited,
            _ => Self::Live,
        }
    }
}

/// A vCPU's activity, published for the monitor.
#[derive(Debug, Default)]
pub struct ActivityCell(AtomicU8);

impl ActivityCell {
    /// The last published activity.
    pub fn get(&self) -> VcpuActivity {
        VcpuActivity::from_u8(self.0.load(Ordering::Acquire))
    }
    fn set(&self, a: VcpuActivity) {
        self.0.store(a as u8, Ordering::Release);
    }
}

/// The signal that kicks a vCPU out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler of [`kick_signal`], so a kick only interrupts `KVM_RUN`.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
}

/// Names a KVM internal-error suberror.
fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "emulation failure",
        2 => "exception while delivering an exception",
        3 => "failure delivering an event",
        4 => "unexpected exit reason",
        _ => "unknown suberror",
    }
}

enum Outcome {
    Continue,
    End(VmState),
    Interrupted,
    InternalError,
}

/// Runs `vcpu` until the VM ends. `index` names it in reasons and logs.
pub fn run(
    index: u8,
    mut vcpu: VcpuFd,
    bus: Arc<IoBus>,
    status: Arc<VmStatus>,
    activity: Arc<ActivityCell>,
) {
    loop {
        match status.state() {
            VmState::Paused if status.wait_unpaused().is_final() => break,
            VmState::Paused => {}
            s if s.is_final() => break,
            _ => {}
        }
        let outcome = match vcpu.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    bus.pio_read(port, data);
                    Outcome::Continue
                }
                VcpuExit::IoOut(port, data) => {
                    bus.pio_write(port, data);
                    Outcome::Continue
                }
                VcpuExit::MmioRead(addr, data) => {
                    bus.mmio_read(addr, data);
                    Outcome::Continue
                }
                VcpuExit::MmioWrite(addr, data) => {
                    bus.mmio_write(addr, data);
                    Outcome::Continue
                }
                VcpuExit::Hlt => Outcome::End(VmState::Halted),
                VcpuExit::Shutdown => Outcome::End(VmState::Crashed(format!(
                    "vCPU {index}: triple fault (KVM_EXIT_SHUTDOWN)"
                ))),
                VcpuExit::FailEntry(reason, cpu) => Outcome::End(VmState::Crashed(format!(
                    "vCPU {index}: KVM_EXIT_FAIL_ENTRY, hardware entry failure reason {reason:#x} on host cpu {cpu}"
                ))),
                VcpuExit::InternalError => Outcome::InternalError,
                VcpuExit::SystemEvent(kind, _) => Outcome::End(match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => {
                        VmState::ShutDown("the guest powered off".into())
                    }
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                        VmState::ShutDown("the guest reset the machine".into())
                    }
                    other => VmState::Crashed(format!(
                        "vCPU {index}: KVM_EXIT_SYSTEM_EVENT type {other}"
                    )),
                }),
                VcpuExit::Intr => Outcome::Interrupted,
                other => Outcome::End(VmState::Crashed(format!(
                    "vCPU {index}: unhandled KVM exit {other:?}"
                ))),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Outcome::Interrupted,
            Err(e) => Outcome::End(VmState::Crashed(format!("vCPU {index}: KVM_RUN: {e}"))),
        };
        match outcome {
            Outcome::Continue => {}
            Outcome::End(state) => {
                status.finish(state);
                break;
            }
            Outcome::InternalError => {
                status.finish(VmState::Crashed(describe_internal_error(index, &mut vcpu)));
                break;
            }
            Outcome::Interrupted => {
                let now = classify(&vcpu);
                activity.set(now);
            }
        }
    }
    activity.set(VcpuActivity::Exited);
}

/// After a kick: is this vCPU halted for good, never started, or live?
fn classify(vcpu: &VcpuFd) -> VcpuActivity {
    let Ok(mp) = vcpu.get_mp_state() else {
        return VcpuActivity::Live;
    };
    match mp.mp_state {
        KVM_MP_STATE_UNINITIALIZED => VcpuActivity::Parked,
        KVM_MP_STATE_HALTED => match vcpu.get_regs() {
            Ok(r) if r.rflags & (1 << 9) == 0 => VcpuActivity::DeadHalt,
            _ => VcpuActivity::Live,
        },
        _ => VcpuActivity::Live,
    }
}

fn describe_internal_error(index: u8, vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, so `internal` is the active
    // member of the union.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let suberror = internal.suberror;
    let ndata = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal.data[..ndata]
        .iter()
        .map(|d| format!("{d:#x}"))
        .collect();
    let rip = vcpu
        .get_regs()
        .map(|r| format!(" at rip {:#x}", r.rip))
        .unwrap_or_default();
    format!(
        "vCPU {index}: KVM_EXIT_INTERNAL_ERROR suberror {suberror} ({}){rip}, data [{}]",
        internal_error_name(suberror),
        data.join(", ")
    )
}
