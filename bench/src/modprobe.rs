//! `modvisor bench modprobe`: a module request through the whole path (API, store,
//! reconciler, node: fetch, vetting, channel, `finit_module` in the guest) until the API
//! says `Loaded`, next to its peer, the same module's `finit_module` inside a guest of the
//! same kind (the time the guest kernel spends, as the agent measures it), in one run.

use anyhow::{bail, Result};
use clap::Args;
use modvisor_control_plane_api::types::{ModuleRequestBody, Quota, RequestState};
use modvisor_control_plane_api::ApiClient;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Arguments of `modvisor bench modprobe`.
#[derive(Debug, Args)]
pub struct BenchModprobeArgs {
    /// Loads (and unloads) of tcp_bbr measured on each path.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Waits until VM `id`'s request for `name` is in `want`; fails on Rejected or Failed.
fn wait_state(api: &ApiClient, id: &str, name: &str, want: RequestState) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let reqs = api.module_requests(id)?;
        if let Some(r) = reqs.iter().find(|r| r.name == name) {
            if r.state == want {
                return Ok(());
            }
            if matches!(r.state, RequestState::Rejected | RequestState::Failed) {
                bail!(
                    "{name}: {:?}: {}",
                    r.state,
                    r.reason.clone().unwrap_or_default()
                );
            }
        }
        if Instant::now() > deadline {
            bail!("{name} never reached {want:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: BenchModprobeArgs) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be positive");
    }
    let t = Duration::from_secs(60);
    // The peer: finit_module in a guest of our own, the image sent by its agent.
    let dir = tempfile::tempdir()?;
    let own = modvisor_node_agent::standalone::boot(dir.path(), "bench-modprobe", 1, 256, |m| {
        eprintln!("{m}")
    })?;
    let bbr = std::fs::read(
        own.kernel
            .module_path("tcp_bbr")
            .ok_or_else(|| anyhow::anyhow!("no tcp_bbr.ko in the guest kernel"))?,
    )?;
    let (mut finit, mut channel) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let start = Instant::now();
        let kernel_us = own.client.load("tcp_bbr", "", &bbr, t)?;
        channel.push(start.elapsed().as_secs_f64() * 1000.0);
        finit.push(kernel_us as f64 / 1000.0);
        own.client.unload("tcp_bbr", t)?;
    }
    let throughput = {
        // The channel's raw rate: a large payload (the agent's own health answer is tiny,
        // so the load's transfer less the guest kernel's time stands for it).
        let (load, kernel) = (p50(channel.clone()), p50(finit.clone()));
        bbr.len() as f64 / 1e6 / ((load - kernel).max(0.001) / 1000.0)
    };
    let mut own = own;
    own.guest.stop(Duration::from_secs(5));
    // The whole path.
    let up = crate::up::UpWithNode::start(true)?;
    // The bench polls the request's state every 2 ms: above a tenant's default limits.
    let quota = Quota {
        api_requests_per_sec: 100_000,
        api_burst: 100_000,
        module_requests_per_vm_per_min: 100_000,
        ..up.admin.get_tenant("tenant-a")?.quota
    };
    up.admin.set_quota("tenant-a", &quota)?;
    let (id, _) = up.running_vm("bench-modprobe")?;
    let body = ModuleRequestBody {
        name: "tcp_bbr".into(),
        params: BTreeMap::new(),
    };
    let mut whole = Vec::new();
    let measured = (|| -> Result<()> {
        for _ in 0..args.rounds {
            let start = Instant::now();
            up.tenant.request_module(&id, &body)?;
            wait_state(&up.tenant, &id, "tcp_bbr", RequestState::Loaded)?;
            whole.push(start.elapsed().as_secs_f64() * 1000.0);
            up.tenant.unload_module(&id, "tcp_bbr")?;
            wait_state(&up.tenant, &id, "tcp_bbr", RequestState::Unloaded)?;
        }
        Ok(())
    })();
    up.remove_vm(&id);
    measured?;
    let (f, c, w) = (p50(finit), p50(channel), p50(whole));
    println!(
        "tcp_bbr ({} bytes), {} loads each, p50; guest under QEMU, agent channel on the emulated 16550",
        bbr.len(),
        args.rounds
    );
    println!("{:<64} {:>10}", "path", "ms");
    println!(
        "{:<64} {f:>10.2}",
        "peer: finit_module in the guest (the kernel's own time)"
    );
    println!(
        "{:<64} {c:>10.2}",
        "the agent's load over the channel (transfer + finit_module)"
    );
    println!(
        "{:<64} {w:>10.2}",
        "request -> Loaded through the API (store, reconciler, node, vetting)"
    );
    println!(
        "ratio: whole path = {:.1} x finit_module; channel ~ {throughput:.2} MB/s (16550)",
        w / f
    );
    Ok(())
}
