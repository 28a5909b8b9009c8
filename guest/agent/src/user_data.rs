//! The tenant's first-boot script: started once per boot when the host asks (the host asks
//! once per VM, after the VM's requested modules are loaded), in the tenant context, with
//! its output on the console; its state is kept for the host to read.

use crate::tenant::TenantContext;
use modvisor_guest_protocol::user_data::{ScriptState, UserDataReply};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Progress {
    state: ScriptState,
    started: Option<Instant>,
    ran: Option<Duration>,
}

/// The script's state in this boot.
#[derive(Debug, Clone)]
pub struct FirstBoot(Arc<Mutex<Progress>>);

impl Default for FirstBoot {
    fn default() -> Self {
        FirstBoot(Arc::new(Mutex::new(Progress {
            state: ScriptState::NotStarted,
            started: None,
            ran: None,
        })))
    }
}

impl FirstBoot {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the script is.
    pub fn status(&self) -> UserDataReply {
        let p = *self.progress();
        let ran = p
            .ran
            .or_else(|| p.started.map(|s| s.elapsed()))
            .unwrap_or_default();
        UserDataReply {
            state: p.state,
            duration_ms: ran.as_millis() as u64,
        }
    }

    /// Starts `script` in `tenant` unless a script was started in this boot already; the
    /// state either way.
    pub fn run(&self, script: String, tenant: Arc<dyn TenantContext>) -> UserDataReply {
        {
            let mut p = self.progress();
            if p.state != ScriptState::NotStarted {
                drop(p);
                return self.status();
            }
            p.state = ScriptState::Running;
            p.started = Some(Instant::now());
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("user-data".into())
            .spawn(move || me.execute(&script, tenant.as_ref()));
        if let Err(e) = spawned {
            self.finish(ScriptState::NotRun(e.raw_os_error().unwrap_or(0)));
        }
        self.status()
    }

    fn finish(&self, state: ScriptState) {
        let mut p = self.progress();
        p.state = state;
        p.ran = p.started.map(|s| s.elapsed());
    }

    fn execute(&self, script: &str, tenant: &dyn TenantContext) {
        let argv = ["sh", "-c", script, "user-data"].map(str::to_string);
        let started = tenant.command(&argv).and_then(|mut cmd| {
            let (out, err) = match tenant.console_output() {
                Some(f) => (Stdio::from(f.try_clone()?), Stdio::from(f)),
                None => (Stdio::null(), Stdio::null()),
            };
            cmd.stdin(Stdio::null()).stdout(out).stderr(err);
            println!("modvisor-guest-agent: user_data started");
            cmd.spawn()
        });
        let state = match started.and_then(|mut child| child.wait()) {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(c), _) => ScriptState::Exited(c),
                (None, Some(s)) => ScriptState::Signaled(s),
                (None, None) => ScriptState::Exited(-1),
            },
            Err(e) => ScriptState::NotRun(e.raw_os_error().unwrap_or(0)),
        };
        self.finish(state);
        println!(
            "modvisor-guest-agent: user_data ended: {state:?} after {} ms",
            self.status().duration_ms
        );
    }
}
