//! `--wait`: polling the API until what a command asked for has happened, has failed, or
//! the timeout has passed (each a different exit).

use anyhow::{bail, Result};
use clap::Args;
use std::time::{Duration, Instant};

/// How often a wait asks again.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// `--wait` and `--timeout`, for commands whose effect comes later.
#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Wait until it has happened (exit non-zero when it fails or the timeout passes).
    #[arg(long)]
    pub wait: bool,
    /// Seconds `--wait` waits at most.
    #[arg(long, default_value_t = 300, value_name = "SECS", requires = "wait")]
    pub timeout: u64,
}

/// Where a waited-for change stands.
pub enum Progress<T> {
    /// It happened: the value to print.
    Done(T),
    /// It cannot happen any more, and why.
    Failed(String),
    /// Not yet: where it stands now, in words.
    Pending(String),
}

/// Asks `poll` until it is done (its value), has failed, or `args.timeout` has passed
/// (both errors, saying where it stood). Says on stderr what it waits for whenever that
/// changes.
pub fn until<T>(
    args: WaitArgs,
    what: &str,
    mut poll: impl FnMut() -> Result<Progress<T>>,
) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut said = String::new();
    loop {
        match poll()? {
            Progress::Done(v) => return Ok(v),
            Progress::Failed(why) => bail!("{what}: failed: {why}"),
            Progress::Pending(now) => {
                if Instant::now() >= deadline {
                    bail!("{what}: not within {} s; now {now}", args.timeout);
                }
                if now != said {
                    eprintln!("waiting until {what}: {now}");
                    said = now;
                }
            }
        }
        std::thread::sleep(POLL_EVERY);
    }
}
