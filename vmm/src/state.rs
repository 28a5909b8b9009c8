//! The VM's state machine, shared by the vCPU threads, the devices and the API:
//! Running <-> Paused, then exactly one final state (Halted, ShutDown or Crashed).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use modvisor_vmm_launch::{ExitCode, StateReport, VmState};

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
    pub fn report(&self) -> StateReport {
        let g = self.lock();
        StateReport {
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
        assert_eq!(s.state().exit_code(), ExitCode::Crashed);
        assert_eq!(VmState::Halted.exit_code(), ExitCode::Clean);
        assert!(s.apply(Action::Resume).is_err());
        let json = serde_json::to_value(s.report()).unwrap();
        assert_eq!(json["state"], "Crashed");
        assert_eq!(json["reason"], "triple fault");
    }
}
