//! Which of a guest's agent sockets its agent answers on: the virtio-serial port, or the
//! second serial port beside it for an agent without the virtio driver. Decided once per
//! boot, before any tenant process exists (the agent starts none before it is bound):
//! both are greeted at once and the first to answer is the channel; the choice is kept in
//! the run directory, and a node agent that restarts uses only that one (a tenant could
//! otherwise answer a greeting on the other port and be sent the key).

use crate::channel::{AgentClient, ChannelError};
use crate::driver::Guest;
use modvisor_guest_protocol::message::HelloReply;
use modvisor_guest_protocol::seal::ChannelKey;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHOICE_FILE: &str = "agent.channel";
const PRIMARY: &str = "primary";
const FALLBACK: &str = "fallback";

/// Forgets the channel of an earlier boot (call when a new boot starts).
pub fn forget_choice(run_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(run_dir.join(CHOICE_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Connects to the agent of `guest` (booted in `run_dir`) and attaches it to `key`.
pub fn attach_agent(
    run_dir: &Path,
    guest: &dyn Guest,
    key: &ChannelKey,
    within: Duration,
) -> Result<(AgentClient, HelloReply), ChannelError> {
    let primary = guest.agent_socket().to_path_buf();
    let chosen = match (
        std::fs::read_to_string(run_dir.join(CHOICE_FILE)),
        guest.agent_fallback_socket(),
    ) {
        (Ok(c), Some(fallback)) if c.trim() == FALLBACK => fallback,
        (Ok(_), _) | (Err(_), None) => primary,
        (Err(_), Some(fallback)) => {
            let (socket, name) = first_to_answer(primary, fallback, within)?;
            std::fs::write(run_dir.join(CHOICE_FILE), name)?;
            socket
        }
    };
    let c = AgentClient::connect(&chosen, Duration::from_secs(10))?;
    let hello = c.attach(key, within)?;
    Ok((c, hello))
}

/// Greets the agent on both sockets; the one that answers first, and its name.
fn first_to_answer(
    primary: PathBuf,
    fallback: PathBuf,
    within: Duration,
) -> Result<(PathBuf, &'static str), ChannelError> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (socket, name) in [(primary, PRIMARY), (fallback, FALLBACK)] {
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("agent-greeting".into())
            .spawn(move || {
                let greeted = AgentClient::connect(&socket, Duration::from_secs(10))
                    .and_then(|c| c.hello(within).map(drop));
                // The loser's answer finds nobody waiting: its connection closes with it.
                if tx.send((socket, name, greeted)).is_err() {
                    tracing::debug!(channel = name, "the agent answered on the other channel");
                }
            });
        if let Err(e) = spawned {
            return Err(ChannelError::Io(e));
        }
    }
    drop(tx);
    let mut last = None;
    for (socket, name, greeted) in rx.iter() {
        match greeted {
            Ok(()) => return Ok((socket, name)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ChannelError::Timeout {
        what: "hello",
        secs: within.as_secs(),
    }))
}
