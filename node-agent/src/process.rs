//! A hypervisor process as a driver sees it: a child this agent started (reaped here) or a
//! process an earlier agent started and this one adopted (watched by pid), with its jail,
//! which is released once the process has ended. The drivers say what their process is
//! (`is_ours`) and what its end means (`classify`); the bookkeeping is here, once.

use crate::driver::{
    await_agent_socket, terminate, terminate_pid, DriverError, Guest, GuestSpec, GuestState,
    RunFiles,
};
use crate::jailing::GuestJail;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

/// How a hypervisor process ended.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// Our child exited with this status.
    Exited(ExitStatus),
    /// An adopted process is gone (its status went to the agent that started it).
    Vanished,
}

/// A hypervisor process and its jail.
#[derive(Debug)]
pub struct HypervisorProcess {
    child: Option<Child>,
    adopted: Option<u32>,
    jail: GuestJail,
    ended: Option<GuestState>,
}

impl HypervisorProcess {
    /// A process this agent spawned in `jail`.
    pub fn spawned(child: Child, jail: GuestJail) -> Self {
        HypervisorProcess {
            child: Some(child),
            adopted: None,
            jail,
            ended: None,
        }
    }

    /// Process `pid`, started by an earlier agent in `jail`.
    pub fn adopted(pid: u32, jail: GuestJail) -> Self {
        HypervisorProcess {
            child: None,
            adopted: Some(pid),
            jail,
            ended: None,
        }
    }

    /// Its jail.
    pub fn jail(&self) -> &GuestJail {
        &self.jail
    }

    /// Its host pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id()).or(self.adopted)
    }

    fn finish(&mut self, state: GuestState) -> GuestState {
        self.child = None;
        self.adopted = None;
        self.jail.release();
        self.ended = Some(state.clone());
        state
    }

    /// What it is doing. `is_ours` tells whether an adopted pid is still this process;
    /// `classify` names its end, once, before the jail (and its OOM count) goes.
    pub fn status(
        &mut self,
        is_ours: impl Fn(u32, &GuestJail) -> bool,
        classify: impl FnOnce(End, &GuestJail) -> GuestState,
    ) -> GuestState {
        if let Some(s) = &self.ended {
            return s.clone();
        }
        if let Some(pid) = self.adopted {
            if is_ours(pid, &self.jail) {
                return GuestState::Running;
            }
            let state = classify(End::Vanished, &self.jail);
            return self.finish(state);
        }
        let Some(child) = self.child.as_mut() else {
            return GuestState::Exited;
        };
        match child.try_wait() {
            Ok(None) => GuestState::Running,
            Ok(Some(status)) => {
                let state = classify(End::Exited(status), &self.jail);
                self.finish(state)
            }
            Err(e) => GuestState::Crashed {
                reason: format!("cannot observe the hypervisor: {e}"),
            },
        }
    }

    /// Stops it: SIGTERM, up to `grace`, then SIGKILL. `settle` names how a child that was
    /// stopped ended (an adopted one ends `Exited`).
    pub fn stop(
        &mut self,
        grace: Duration,
        is_ours: impl Fn(u32, &GuestJail) -> bool,
        settle: impl FnOnce(ExitStatus, &GuestJail) -> GuestState,
    ) -> GuestState {
        if let Some(s) = &self.ended {
            return s.clone();
        }
        if let Some(pid) = self.adopted {
            terminate_pid(pid, grace, || is_ours(pid, &self.jail));
            return self.finish(GuestState::Exited);
        }
        let Some(child) = self.child.as_mut() else {
            return GuestState::Exited;
        };
        let state = match terminate(child, grace) {
            Some(status) => settle(status, &self.jail),
            None => GuestState::Exited,
        };
        self.finish(state)
    }
}

impl Drop for HypervisorProcess {
    /// A child still running is killed with its jail; an adopted process is left alone
    /// (the next agent adopts it again).
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
            self.jail.release();
        }
    }
}

/// The files through which a hypervisor serves its guest.
#[derive(Debug, Clone)]
pub struct GuestPaths {
    /// The console log (first serial port).
    pub console: PathBuf,
    /// The agent socket (a virtio-serial port, or the second serial port).
    pub socket: PathBuf,
    /// The second serial port's socket when `socket` is a virtio-serial port.
    pub agent_fallback: Option<PathBuf>,
    /// The hypervisor's own log.
    pub log: PathBuf,
}

/// What sets one hypervisor's processes apart: how to recognise one that an earlier agent
/// started, and what its end means.
pub trait HypervisorKind: Send + std::fmt::Debug {
    /// Whether `pid` (an adopted process) is still the hypervisor of guest `id`.
    fn is_ours(&self, id: &str, pid: u32, jail: &GuestJail, paths: &GuestPaths) -> bool;
    /// What the end of the process means.
    fn classify(&self, end: End, jail: &GuestJail, paths: &GuestPaths) -> GuestState;
    /// How a child that was asked to stop ended.
    fn stopped(&self, status: ExitStatus, jail: &GuestJail, paths: &GuestPaths) -> GuestState;
    /// The Unix socket of the guest's console (both ways), when the hypervisor serves one.
    fn console_socket(&self, paths: &GuestPaths) -> Option<PathBuf> {
        let _ = paths;
        None
    }
}

/// Starts `cmd` (a hypervisor for guest `spec`) in `jail` with its output going to the
/// run files' log, and waits until it serves the guest's agent socket: the guest has
/// started.
pub fn start_guest<K: HypervisorKind + 'static>(
    spec: &GuestSpec,
    mut jail: GuestJail,
    cmd: &mut std::process::Command,
    files: RunFiles,
    kind: K,
    what: &str,
) -> Result<Box<dyn Guest>, DriverError> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(files.stdout)
        .stderr(files.stderr);
    let child = jail.spawn(cmd).map_err(|e| DriverError::Start {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    let mut guest = HypervisorGuest::new(
        &spec.id,
        HypervisorProcess::spawned(child, jail),
        GuestPaths {
            console: files.console,
            socket: files.socket,
            agent_fallback: files.agent_fallback,
            log: files.log,
        },
        kind,
    );
    // The hypervisor creates the socket once it has set up its devices.
    await_agent_socket(
        &mut guest,
        &format!("{what} for {}", spec.id),
        Duration::from_secs(15),
    )?;
    Ok(Box::new(guest))
}

/// A guest run by a hypervisor process of kind `K` (QEMU or our vmm).
#[derive(Debug)]
pub struct HypervisorGuest<K> {
    id: String,
    process: HypervisorProcess,
    paths: GuestPaths,
    kind: K,
}

impl<K: HypervisorKind> HypervisorGuest<K> {
    /// Guest `id` served by `process` through `paths`.
    pub fn new(id: &str, process: HypervisorProcess, paths: GuestPaths, kind: K) -> Self {
        HypervisorGuest {
            id: id.to_string(),
            process,
            paths,
            kind,
        }
    }
}

impl<K: HypervisorKind> Guest for HypervisorGuest<K> {
    fn id(&self) -> &str {
        &self.id
    }

    fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    fn status(&mut self) -> GuestState {
        let (id, paths, kind) = (&self.id, &self.paths, &self.kind);
        self.process.status(
            |pid, jail| kind.is_ours(id, pid, jail, paths),
            |end, jail| kind.classify(end, jail, paths),
        )
    }

    fn stop(&mut self, grace: Duration) -> GuestState {
        let (id, paths, kind) = (&self.id, &self.paths, &self.kind);
        self.process.stop(
            grace,
            |pid, jail| kind.is_ours(id, pid, jail, paths),
            |status, jail| kind.stopped(status, jail, paths),
        )
    }

    fn console_path(&self) -> &Path {
        &self.paths.console
    }

    fn console_socket(&self) -> Option<PathBuf> {
        self.kind.console_socket(&self.paths)
    }

    fn agent_socket(&self) -> &Path {
        &self.paths.socket
    }

    fn agent_fallback_socket(&self) -> Option<PathBuf> {
        self.paths.agent_fallback.clone()
    }
}
