//! The VM's state machine, shared by the vCPU threads, the devices and the API:
//! Running <-> Paused, then exactly one final state (Halted, ShutDown or Crashed).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the VM is doing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason")]
pub enum VmState {
    /// The vCPUs run.
    Running,
    /// The vCPUs are parked by a pause request.
    Paused,
    /// Every vCPU halted with interrupts off (or was never started): nothing can wake the VM.
    Halted,
    /// The guest reset or powered off through a device, or the VM was stopped.
    ShutDown(String),
    /// The guest or KVM failed: triple fault, emulation failure, failed entry.
    Crashed(String),
}

impl VmState {
    /// Whether the VM has ended.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Halted | Self::ShutDown(_) | Self::Crashed(_))
    }

    /// The process exit code this state maps to: 0 for a clean end, [`EXIT_CRASHED`] for
    /// a crash.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Crashed(_) => EXIT_CRASHED,
            _ => 0,
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
        }
    }
}

/// Exit code of `modvisor vmm` when the guest crashed.
pub const EXIT_CRASHED: i32 = 3;
/// Exit code of `modvisor vmm` when the VM could not be built.
pub const EXIT_SETUP: i32 = 2;

/// What the API reports about the VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VmReport {
    /// State and, when it ended, the reason.
    #[serde(flatten)]
    pub state: VmState,
    /// Milliseconds since the vCPUs started.
    pub uptime_ms: u64,
    /// Console bytes dropped because the console cap was reached.
    pub console_dropped: u64,
}

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Park the vCPUs.
    Pause,
    /// Let them run again.
    Resume,
    /// End the VM (state ShutDown).
    Stop,
}

/// The control request conflicts with the state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the VM is {0}")]
pub struct Conflict(pub String);

#[derive(Debug)]
struct Inner {
    state: VmState,
    console_dropped: u64,
}

/// The shared state with its condition variable.
#[derive(Debug)]
pub struct VmStatus {
    inner: Mutex<Inner>,
    changed: Condvar,
    started: Instant,
}

impl Default for VmStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl VmStatus {
    /// A running VM.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: VmState::Running,
                console_dropped: 0,
            }),
            changed: Condvar::new(),
            started: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a thread panicked while holding it; the state itself
        // is always consistent (single assignments), so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> VmState {
        self.lock().state.clone()
    }

    /// The state, uptime and counters.
    pub fn report(&self) -> VmReport {
        let g = self.lock();
        VmReport {
            state: g.state.clone(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            console_dropped: g.console_dropped,
        }
    }

    /// Records console bytes dropped at the cap.
    pub fn add_console_dropped(&self, n: u64) {
        self.lock().console_dropped += n;
    }

    /// Ends the VM with `state` unless it already ended (the first end wins).
    pub fn finish(&self, state: VmState) {
        let mut g = self.lock();
        if !g.state.is_final() {
            tracing::info!(state = %state.describe(), "VM ended");
            g.state = state;
            self.changed.notify_all();
        }
    }

    /// Applies a control request.
    pub fn apply(&self, action: Action) -> Result<VmState, Conflict> {
        let mut g = self.lock();
        if g.state.is_final() {
            return Err(Conflict(g.state.describe()));
        }
        g.state = match action {
            Action::Pause => VmState::Paused,
            Action::Resume => VmState::Running,
            Action::Stop => VmState::ShutDown("stopped through the API".into()),
        };
        self.changed.notify_all();
        Ok(g.state.clone())
    }

    /// Blocks while paused; returns the state once it is not Paused.
    pub fn wait_unpaused(&self) -> VmState {
        let mut g = self.lock();
        while g.state == VmState::Paused {
            g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.state.clone()
    }

    /// Waits up to `timeout` for the VM to end; returns the state then.
    pub fn wait_final(&self, timeout: Duration) -> VmState {
        let g = self.lock();
        let (g, _) = self
            .changed
            .wait_timeout_while(g, timeout, |i| !i.state.is_final())
            .unwrap_or_else(|e| e.into_inner());
        g.state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_end_wins_and_maps_to_exit_codes() {
        let s = VmStatus::new();
        assert_eq!(s.apply(Action::Pause), Ok(VmState::Paused));
        assert_eq!(s.apply(Action::Resume), Ok(VmState::Running));
        s.finish(VmState::Crashed("triple fault".into()));
        s.finish(VmState::Halted);
        assert_eq!(s.state(), VmState::Crashed("triple fault".into()));
        assert_eq!(s.state().exit_code(), EXIT_CRASHED);
        assert_eq!(VmState::Halted.exit_code(), 0);
        assert!(s.apply(Action::Resume).is_err());
        let json = serde_json::to_value(s.report()).unwrap();
        assert_eq!(json["state"], "Crashed");
        assert_eq!(json["reason"], "triple fault");
    }
}
