//! `modvisor bench modprobe`: a module request through the whole path (API, store,
//! reconciler, node: fetch, vetting, channel, `finit_module` in the guest) until the API
//! says `Loaded`, next to its peer, the same module's `finit_module` inside a guest of the
//! same kind (the time the guest kernel spends, as the agent measures it), in one run:
//! for tcp_bbr (one module) and for wireguard's closure (wireguard and the modules it
//! needs, each loaded in dependency order, on a fresh VM each round).

use anyhow::{bail, Result};
use clap::Args;
use modvisor_control_plane_api::types::{ModuleRequestBody, Quota, RequestState};
use modvisor_control_plane_api::ApiClient;
use modvisor_node_agent::standalone::ChannelPort;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Arguments of `modvisor bench modprobe`.
#[derive(Debug, Args)]
pub struct BenchModprobeArgs {
    /// Loads (and unloads) of tcp_bbr measured on each path.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Loads of wireguard's closure measured on each path (each on a fresh VM through
    /// the API, since a tenant cannot unload the dependencies; 0 leaves it out).
    #[arg(long, default_value_t = 3)]
    pub closure_rounds: usize,
}

/// The module whose closure is measured.
const CLOSURE_ROOT: &str = "wireguard";

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
    // The peer: finit_module in a guest of our own, the image sent by its agent, with
    // the channel on the emulated 16550 and on virtio-serial.
    let dir = tempfile::tempdir()?;
    let (serial, _) = own_guest_loads(dir.path(), ChannelPort::Serial, args.rounds, 0)?;
    let (virtio, closure) = own_guest_loads(
        dir.path(),
        ChannelPort::Virtio,
        args.rounds,
        args.closure_rounds,
    )?;
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
    // wireguard's closure, on a fresh VM each round.
    let mut closure_whole = Vec::new();
    for round in 0..args.closure_rounds {
        let (id, _) = up.running_vm(&format!("bench-closure-{round}"))?;
        let start = Instant::now();
        let loaded = up
            .tenant
            .request_module(
                &id,
                &ModuleRequestBody {
                    name: CLOSURE_ROOT.into(),
                    params: BTreeMap::new(),
                },
            )
            .map_err(anyhow::Error::from)
            .and_then(|_| wait_state(&up.tenant, &id, CLOSURE_ROOT, RequestState::Loaded));
        closure_whole.push(start.elapsed().as_secs_f64() * 1000.0);
        up.remove_vm(&id);
        loaded?;
    }
    let (f, w) = (p50(virtio.finit.clone()), p50(whole));
    println!(
        "tcp_bbr ({} bytes), {} loads each, p50; guests under QEMU",
        serial.module_bytes, args.rounds
    );
    println!("{:<64} {:>10}", "path", "ms");
    println!(
        "{:<64} {f:>10.2}",
        "peer: finit_module in the guest (the kernel's own time)"
    );
    println!(
        "{:<64} {:>10.2}",
        "the agent's load over the 16550 (transfer + finit_module)",
        p50(serial.channel.clone())
    );
    println!(
        "{:<64} {:>10.2}",
        "the agent's load over virtio-serial (transfer + finit_module)",
        p50(virtio.channel.clone())
    );
    println!(
        "{:<64} {w:>10.2}",
        "request -> Loaded through the API (store, reconciler, node, vetting)"
    );
    println!(
        "ratio: whole path = {:.2} x finit_module; channel ~ {:.2} MB/s on the 16550, ~ {:.2} MB/s on virtio-serial",
        w / f,
        serial.throughput(),
        virtio.throughput()
    );
    if let Some(c) = closure {
        let (f, w) = (p50(c.loads.finit.clone()), p50(closure_whole));
        println!();
        println!(
            "{CLOSURE_ROOT}'s closure ({} modules, {} bytes: {}), {} loads each, p50",
            c.names.len(),
            c.loads.module_bytes,
            c.names.join(" "),
            args.closure_rounds
        );
        println!("{:<64} {:>10}", "path", "ms");
        println!(
            "{:<64} {f:>10.2}",
            "peer: finit_module of each in the guest (the kernel's own time)"
        );
        println!(
            "{:<64} {:>10.2}",
            "the agent's loads over virtio-serial (transfer + finit_module)",
            p50(c.loads.channel.clone())
        );
        println!(
            "{:<64} {w:>10.2}",
            "request -> Loaded through the API (store, reconciler, node, vetting)"
        );
        println!("ratio: whole path = {:.2} x finit_module", w / f);
    }
    Ok(())
}

/// Loads of tcp_bbr by the agent of a guest of our own (channel on `port`).
struct OwnLoads {
    module_bytes: usize,
    /// The guest kernel's own time of each load, ms.
    finit: Vec<f64>,
    /// Each load as the host sees it (transfer + finit_module), ms.
    channel: Vec<f64>,
}

impl OwnLoads {
    /// The channel's raw rate, MB/s: the module's bytes over the load's time less the
    /// kernel's (the agent's own health answer is too small to time a transfer).
    fn throughput(&self) -> f64 {
        let (load, kernel) = (p50(self.channel.clone()), p50(self.finit.clone()));
        self.module_bytes as f64 / 1e6 / ((load - kernel).max(0.001) / 1000.0)
    }
}

/// Loads of a module's closure by the agent of a guest of our own: each round loads
/// every module in dependency order and unloads them in reverse.
struct ClosureLoads {
    /// The modules, in load order.
    names: Vec<String>,
    /// Per round: the kernel's time summed over the closure, and the host's.
    loads: OwnLoads,
}

/// Loads of tcp_bbr (`rounds`) and of [`CLOSURE_ROOT`]'s closure (`closure_rounds`, when
/// not 0) by the agent of a guest of our own (channel on `port`).
fn own_guest_loads(
    dir: &std::path::Path,
    port: ChannelPort,
    rounds: usize,
    closure_rounds: usize,
) -> Result<(OwnLoads, Option<ClosureLoads>)> {
    let t = Duration::from_secs(60);
    let id = match port {
        ChannelPort::Serial => "bench-modprobe-serial",
        ChannelPort::Virtio => "bench-modprobe-virtio",
    };
    let mut own =
        modvisor_node_agent::standalone::boot_on(dir, id, 1, 256, port, |m| eprintln!("{m}"))?;
    let measured = (|| -> Result<(OwnLoads, Option<ClosureLoads>)> {
        let bbr = std::fs::read(
            own.kernel
                .module_path("tcp_bbr")
                .ok_or_else(|| anyhow::anyhow!("no tcp_bbr.ko in the guest kernel"))?,
        )?;
        let mut loads = OwnLoads {
            module_bytes: bbr.len(),
            finit: Vec::new(),
            channel: Vec::new(),
        };
        for _ in 0..rounds {
            let start = Instant::now();
            let kernel_us = own.client.load("tcp_bbr", "", &bbr, t)?;
            loads.channel.push(start.elapsed().as_secs_f64() * 1000.0);
            loads.finit.push(kernel_us as f64 / 1000.0);
            own.client.unload("tcp_bbr", t)?;
        }
        if closure_rounds == 0 {
            return Ok((loads, None));
        }
        let trust =
            modvisor_modules::TrustStore::from_kernel_image(&std::fs::read(&own.kernel.vmlinuz)?)?;
        let modules =
            modvisor_node_agent::platform::signed_closure(&own.kernel, &trust, &[CLOSURE_ROOT])?;
        let mut closure = ClosureLoads {
            names: modules.iter().map(|(n, _)| n.clone()).collect(),
            loads: OwnLoads {
                module_bytes: modules.iter().map(|(_, b)| b.len()).sum(),
                finit: Vec::new(),
                channel: Vec::new(),
            },
        };
        for _ in 0..closure_rounds {
            let (mut kernel_us, start) = (0, Instant::now());
            for (name, image) in &modules {
                kernel_us += own.client.load(name, "", image, t)?;
            }
            closure
                .loads
                .channel
                .push(start.elapsed().as_secs_f64() * 1000.0);
            closure.loads.finit.push(kernel_us as f64 / 1000.0);
            for (name, _) in modules.iter().rev() {
                own.client.unload(name, t)?;
            }
        }
        Ok((loads, Some(closure)))
    })();
    own.guest.stop(Duration::from_secs(5));
    measured
}
