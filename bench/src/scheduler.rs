//! `modvisor bench scheduler`: placements per second through the real scheduling code and
//! store path (one durable transaction per placement, then batches) with many node records
//! and VMs, on sled or (`--store etcd://...`) etcd, next to a peer measured in the same
//! run on the same store: the same number of bare durable transactions (the floor under
//! any placement). Then the leader's reconciler settles the fleet on simulated nodes, and
//! its idle cost and one new VM's placement are measured (`idle`). With `--latency`,
//! create-to-Running
//! latency of one VM through a real control plane and node agent (qemu driver).

use anyhow::{bail, Result};
use clap::Args;
use modvisor_control_plane::auth::TokenKeys;
use modvisor_control_plane::model::{CreateTenant, Quota, RegisterNode, Resources, VmSpec};
use modvisor_control_plane::store::{Datastore, Placement, Registrant, StoreLocation, Strategy};
use std::time::Instant;

/// Arguments of `modvisor bench scheduler`.
#[derive(Debug, Args)]
pub struct BenchSchedulerArgs {
    /// Node records.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// VMs in the store (all Pending).
    #[arg(long, default_value_t = 100_000)]
    pub vms: usize,
    /// Placements timed one at a time.
    #[arg(long, default_value_t = 100)]
    pub placements: usize,
    /// Placements timed as one batch.
    #[arg(long, default_value_t = 20_000)]
    pub batch: usize,
    /// Also measure create-to-Running of one VM with each driver available here.
    #[arg(long)]
    pub latency: bool,
    /// The store: sled in a scratch directory by default, or `etcd://HOST:PORT,...`
    /// (under a root of this run's own).
    #[arg(long)]
    pub store: Option<StoreLocation>,
    /// How long the settled leader's idle CPU is measured (seconds; a minute shorter
    /// than its resync at the most, the window avoiding the resyncs).
    #[arg(long, default_value_t = 30)]
    pub idle_seconds: u64,
    /// Skip the second half (settling the fleet through the leader's reconciler on
    /// simulated nodes, its idle cost and one new VM's placement).
    #[arg(long)]
    pub skip_idle: bool,
}

/// The bench's VM: 1 vCPU, 256 MiB, no network, no modules.
pub(crate) fn bench_vm(name: &str) -> VmSpec {
    VmSpec {
        name: name.into(),
        kernel_mode: Default::default(),
        vcpus: 1,
        memory_mib: 256,
        modules: vec![],
        power_state: Default::default(),
        user_data: None,
        network: Some("none".into()),
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: BenchSchedulerArgs) -> Result<()> {
    if args.placements == 0 || args.placements + args.batch > args.vms || args.nodes == 0 {
        bail!("need --nodes > 0 and 0 < --placements, --placements + --batch <= --vms");
    }
    let tmp = tempfile::tempdir()?;
    let location = match args.store.clone() {
        None => StoreLocation::Sled(tmp.path().join("db")),
        Some(StoreLocation::Etcd { endpoints, root }) => StoreLocation::Etcd {
            endpoints,
            root: format!("{root}/bench-scheduler-{}", std::process::id()),
        },
        Some(sled) => sled,
    };
    let store = Datastore::new(location.open()?);
    let t0 = Instant::now();
    let keys = TokenKeys::ephemeral()?;
    for i in 0..args.nodes {
        let name = format!("node-{i:05}");
        let (_, credential) = keys.node_credential(&name, 3600)?;
        let reg = RegisterNode {
            features: vec![modvisor_control_plane::model::NodeFeature::Networking],
            underlay_address: None,
            name,
            address: format!("http://127.0.0.1:{}", 10_000 + i % 50_000),
            capacity: Resources {
                vcpus: 64,
                memory_mib: 262_144,
            },
            driver: "qemu".into(),
            hardware_virtualization: false,
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            csr_pem: String::new(), // the store signs nothing
        };
        store.register_node(&reg, Registrant::Bootstrap, &credential)?;
    }
    let tenants = 100;
    let big = Quota {
        max_vms: 1_000_000,
        max_vcpus: 1_000_000,
        max_memory_mib: 1_000_000_000,
        ..Quota::default()
    };
    for t in 0..tenants {
        store.create_tenant(
            "bench",
            &CreateTenant {
                name: format!("t{t}"),
                quota: Some(big),
            },
        )?;
    }
    let mut ids = Vec::with_capacity(args.vms);
    for i in 0..args.vms {
        let spec = bench_vm(&format!("vm-{i}"));
        ids.push(
            store
                .create_vm("bench", &format!("t{}", i % tenants), &spec)?
                .id,
        );
    }
    eprintln!(
        "setup: {} nodes, {} VMs in {:.1} s",
        args.nodes,
        args.vms,
        t0.elapsed().as_secs_f64()
    );

    // One at a time (a transaction each), then in the reconciler's batches.
    let t = Instant::now();
    let mut placed = 0;
    for id in ids.iter().take(args.placements) {
        if let Placement::Placed(_) = store.place_vm(id, Strategy::Spread)? {
            placed += 1;
        }
    }
    let single_rate = placed as f64 / t.elapsed().as_secs_f64();
    let batch: Vec<String> = ids
        .iter()
        .skip(args.placements)
        .take(args.batch)
        .cloned()
        .collect();
    let t = Instant::now();
    let placed = store
        .place_batch(&batch, Strategy::Spread)?
        .iter()
        .filter(|(_, p)| matches!(p, Placement::Placed(_)))
        .count();
    let place_rate = placed as f64 / t.elapsed().as_secs_f64();

    // Peer: bare durable transactions on the same store (one write, one flush each).
    let t = Instant::now();
    for i in 0..args.placements {
        store.set_cordoned(
            "bench",
            &format!("node-{:05}", i % args.nodes),
            modvisor_control_plane::store::Cordon::Uncordon,
        )?;
    }
    let floor_rate = args.placements as f64 / t.elapsed().as_secs_f64();

    println!(
        "modvisor bench scheduler: {} node records, {} VMs, one core, store {location}",
        args.nodes, args.vms
    );
    println!("{:<58} {:>12}", "measurement", "per second");
    println!(
        "{:<58} {:>12.0}",
        "placements, one transaction each", single_rate
    );
    println!(
        "{:<58} {:>12.0}",
        match store.batch_limit() {
            n if n >= args.batch =>
                format!("placements, batches of {} (one transaction)", args.batch),
            n => format!(
                "placements, batches of {} ({n} per transaction)",
                args.batch
            ),
        },
        place_rate
    );
    println!(
        "{:<58} {:>12.0}",
        "peer: bare durable transactions (same store)", floor_rate
    );
    println!(
        "ratio: batched placements = {:.2} x bare transactions; target >= 20000 placements/s",
        place_rate / floor_rate
    );
    if !args.skip_idle {
        crate::idle::measure(&store, std::time::Duration::from_secs(args.idle_seconds))?.print();
    }
    if args.latency {
        latency()?;
    }
    Ok(())
}

/// Create-to-Running of one VM through `modvisor up` (control plane and one node agent).
fn latency() -> Result<()> {
    let up = crate::up::UpWithNode::start(false)?;
    let (id, secs) = up.running_vm("latency")?;
    up.remove_vm(&id);
    let accel = crate::up::qemu_accel();
    println!("create-to-Running, qemu driver ({accel}): {secs:.2} s");
    if modvisor_node_agent::hostcaps::hardware_virtualization() {
        println!(
            "create-to-Running, kvm driver: run the node agent with --driver kvm to measure it"
        );
    } else {
        println!("create-to-Running, kvm driver: not measurable here (a Linux guest under our vmm needs hardware virtualization)");
    }
    Ok(())
}
