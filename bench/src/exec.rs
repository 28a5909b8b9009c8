//! `modvisor bench exec`: the round trip of `exec true` through the whole path (tenant ->
//! control plane -> node -> guest agent -> tenant context -> `true`) next to its floor, the
//! guest agent's own health round trip on the channel, measured in the same run. Between
//! them, `exec true` on the channel alone shows what the tenant context costs in the guest.

use anyhow::{bail, Result};
use clap::Args;
use modvisor_control_plane_api::types::ExecRequest;
use modvisor_guest_protocol::exec as wire;
use modvisor_node_agent::channel::AgentClient;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Arguments of `modvisor bench exec`.
#[derive(Debug, Args)]
pub struct BenchExecArgs {
    /// Round trips measured on each path (after 3 unmeasured ones).
    #[arg(long, default_value_t = 50)]
    pub rounds: usize,
}

/// p50 and p99 of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}

/// Times `f` `rounds` times after 3 warm-up calls; milliseconds each.
fn time(rounds: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..3 {
        f()?;
    }
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

fn exec_true(client: &AgentClient) -> Result<()> {
    let req = wire::ExecRequest {
        argv: vec!["true".into()],
        env: Vec::new(),
        stdin: Vec::new(),
        timeout_ms: 10_000,
        output_limit: 4096,
    };
    let reply = client.exec(&req, Duration::from_secs(10))?;
    if reply.end != wire::ExecEnd::Exited(0) {
        bail!("`true` ended {:?}", reply.end);
    }
    Ok(())
}

/// Runs the benchmark and prints its table.
pub fn run(args: BenchExecArgs) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be positive");
    }
    let t = Duration::from_secs(10);
    // The floor and the in-guest cost: a guest of our own, its agent on the channel.
    let dir = tempfile::tempdir()?;
    let mut own = modvisor_node_agent::standalone::boot(dir.path(), "bench-exec", 1, 256, |m| {
        eprintln!("{m}")
    })?;
    let health = time(args.rounds, || Ok(own.client.health(t).map(drop)?))?;
    let channel_exec = time(args.rounds, || exec_true(&own.client))?;
    own.guest.stop(Duration::from_secs(5));
    // The whole path: `modvisor up` with a node, a VM, the API.
    let up = crate::up::UpWithNode::start(false)?;
    let (id, _) = up.running_vm("bench-exec")?;
    let req = ExecRequest {
        argv: vec!["true".into()],
        stdin: None,
        timeout_s: Some(10),
        env: BTreeMap::new(),
    };
    let api_exec = time(args.rounds, || {
        let r = up.tenant.exec(&id, &req)?;
        if r.exit_code != Some(0) {
            bail!("`true` answered {r:?}");
        }
        Ok(())
    });
    up.remove_vm(&id);
    let api_exec = api_exec?;
    let (h50, h99) = percentiles(health);
    let (c50, c99) = percentiles(channel_exec);
    let (a50, a99) = percentiles(api_exec);
    let accel = crate::up::qemu_accel();
    println!(
        "exec round trips, {} each, guest under QEMU ({accel})",
        args.rounds
    );
    println!("{:<62} {:>9} {:>9}", "path", "p50 ms", "p99 ms");
    println!(
        "{:<62} {h50:>9.2} {h99:>9.2}",
        "peer (floor): agent health on the channel"
    );
    println!(
        "{:<62} {c50:>9.2} {c99:>9.2}",
        "exec true on the channel (agent + tenant context)"
    );
    println!(
        "{:<62} {a50:>9.2} {a99:>9.2}",
        "exec true through the API (control plane, node, agent)"
    );
    println!(
        "ratio p50: whole path = {:.1} x the floor; in the guest alone = {:.1} x",
        a50 / h50,
        c50 / h50
    );
    Ok(())
}
