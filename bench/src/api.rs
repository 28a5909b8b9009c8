//! `modvisor bench api`: drives a control plane running in a child process from this
//! (separate) load-generating process over loopback, and prints throughput and latency
//! percentiles next to a peer measured in the same run.
//!
//! Peers: `GET /healthz` on the same server (the HTTP stack's floor) for reads, and for
//! creates the durable-write floor of the store under test: raw sled `insert` + `flush`
//! from this process, or, with `--store etcd://...`, etcd's own puts through the same
//! client (etcd-client) at the same concurrency.

use anyhow::{bail, Context, Result};
use clap::Args;
use modvisor_control_plane::auth::{Role, TokenKeys};
use modvisor_control_plane::store::{Datastore, StoreLocation};
use modvisor_control_plane_api::types::{CreateTenant, PowerState, Quota, VmSpec};
use modvisor_control_plane_api::{routes, ApiClient};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `modvisor bench api`.
#[derive(Debug, Args)]
pub struct BenchApiArgs {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// VMs the tenant owns while GET /v1/vms is measured.
    #[arg(long, default_value_t = 100)]
    pub vms: usize,
    /// HTTP worker threads of the server (default: one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// The server's store (default: sled in a scratch directory); `etcd://...` needs a
    /// build with `--features etcd` and an empty root prefix.
    #[arg(long)]
    pub store: Option<StoreLocation>,
}

/// What one measurement saw.
pub(crate) struct Figures {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Figures {
    /// The figures of `latencies` (microseconds, of the requests that succeeded) and
    /// `errors` over `elapsed_secs`; percentiles of no latencies are NaN.
    pub(crate) fn from_latencies(mut latencies: Vec<u32>, errors: u64, elapsed_secs: f64) -> Self {
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map(|us| f64::from(*us) / 1000.0)
                .unwrap_or(f64::NAN)
        };
        Figures {
            ok: latencies.len() as u64,
            errors,
            per_sec: latencies.len() as f64 / elapsed_secs,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
        }
    }
}

/// A control plane in a child process, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_server(
    dir: &Path,
    workers: Option<usize>,
    cpus: Option<&str>,
    store: Option<&StoreLocation>,
) -> Result<Server> {
    let exe = std::env::current_exe().context("locating the modvisor binary")?;
    let mut cmd = match cpus {
        // Pinned with util-linux's taskset, so that the server has these CPUs to itself.
        Some(list) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(list).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.arg("control-plane")
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("MODVISOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(w) = workers {
        cmd.arg("--workers").arg(w.to_string());
    }
    if let Some(store) = store {
        cmd.arg("--store").arg(store.to_string());
    }
    let child = cmd.spawn().context("starting the control plane")?;
    let mut server = Server {
        child,
        base: String::new(),
    };
    let addr_file = dir.join(modvisor_control_plane::server::ADDR_FILE);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            server.base = format!("http://{}", addr.trim());
            return Ok(server);
        }
        if let Some(status) = server.child.try_wait()? {
            bail!("the control plane exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the control plane did not start within 30 s")
}

/// Runs `op` on `connections` concurrent tasks for `seconds` and summarizes latencies.
pub(crate) async fn drive<F, Fut>(connections: usize, seconds: u64, op: F) -> Figures
where
    F: Fn(u64) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let local = tokio::task::LocalSet::new();
    for _ in 0..connections {
        let (op, counter, errors) = (op.clone(), counter.clone(), errors.clone());
        tasks.push(local.spawn_local(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                if op(n).await {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let all: Vec<u32> = local
        .run_until(async {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap_or_default());
            }
            all
        })
        .await;
    Figures::from_latencies(
        all,
        errors.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    )
}

/// Durable writes straight into sled from `threads` threads: the floor under `POST`.
fn sled_floor(dir: &Path, threads: usize, seconds: u64) -> Result<Figures> {
    let db = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let key = format!("{i}-{n}");
                    n += 1;
                    if db.insert(key.as_bytes(), vec![0u8; 400]).is_ok() && db.flush().is_ok() {
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                }
                lat
            })
        })
        .collect();
    let all: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    if all.is_empty() {
        bail!("sled floor wrote nothing");
    }
    Ok(Figures::from_latencies(
        all,
        0,
        start.elapsed().as_secs_f64(),
    ))
}

/// Puts straight into etcd from `connections` concurrent tasks (etcd-client, as the
/// server uses it): the floor under `POST` on etcd.
#[cfg(feature = "etcd")]
fn etcd_floor(endpoints: &[String], connections: usize, seconds: u64) -> Result<Figures> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = etcd_client::Client::connect(endpoints, None)
            .await
            .context("connecting to etcd")?;
        let put = move |n: u64| {
            let mut kv = client.kv_client();
            async move {
                kv.put(format!("/bench-floor/{n}"), vec![0u8; 400], None)
                    .await
                    .is_ok()
            }
        };
        let figures = drive(connections, seconds, put).await;
        if figures.ok == 0 {
            bail!("etcd floor wrote nothing");
        }
        Ok(figures)
    })
}

#[cfg(not(feature = "etcd"))]
fn etcd_floor(_: &[String], _: usize, _: u64) -> Result<Figures> {
    bail!("this build has no etcd support: build modvisor with `--features etcd`")
}

pub(crate) fn row(name: &str, f: &Figures) {
    println!(
        "{name:<38} {:>10.0} {:>9.3} {:>9.3} {:>8} {:>6}",
        f.per_sec, f.p50_ms, f.p99_ms, f.ok, f.errors
    );
}

/// A one-vCPU, 128 MiB VM named `name`.
pub(crate) fn vm_spec(name: &str) -> VmSpec {
    VmSpec {
        name: name.into(),
        kernel_mode: Default::default(),
        vcpus: 1,
        memory_mib: 128,
        modules: Vec::new(),
        power_state: PowerState::Running,
        user_data: None,
        network: Some("none".into()),
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: BenchApiArgs) -> Result<()> {
    if args.connections == 0 || args.seconds == 0 {
        bail!("--connections and --seconds must be positive");
    }
    let tmp = tempfile::tempdir().context("creating a scratch directory")?;
    // A root of this run's own on etcd, so that the store starts empty.
    let store = args.store.clone().map(|s| match s {
        StoreLocation::Etcd { endpoints, root } => StoreLocation::Etcd {
            endpoints,
            root: format!("{root}/bench-{}", std::process::id()),
        },
        sled => sled,
    });
    let server = start_server(&tmp.path().join("cp"), args.workers, None, store.as_ref())?;
    // On etcd the replicas' key is in the store; on sled it is in the data directory.
    let keys = match &store {
        Some(location @ StoreLocation::Etcd { .. }) => {
            modvisor_control_plane::server::shared_secrets(&Datastore::new(location.open()?))?.0
        }
        _ => TokenKeys::load_or_create(&tmp.path().join("cp"))?,
    };
    let admin = keys.issue("bench-admin", Role::Admin, None, 3600)?.token;
    let tenant = keys
        .issue("bench", Role::Tenant, Some("bench"), 3600)?
        .token;
    let base = server.base.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;

    // Set-up through the typed client; the measured calls are raw HTTP from many
    // connections, on the same routes.
    let timeout = Duration::from_secs(30);
    ApiClient::new(&base, &admin, timeout)?
        .create_tenant(&CreateTenant {
            name: "bench".into(),
            quota: Some(Quota {
                max_vms: 1_000_000,
                max_vcpus: 1_000_000,
                max_memory_mib: 1_000_000_000,
                // The bench measures the server, not the limits.
                api_requests_per_sec: 1_000_000,
                api_burst: 1_000_000,
                max_concurrent_requests: 100_000,
                ..Quota::default()
            }),
        })
        .context("creating the bench tenant")?;
    let seeder = ApiClient::new(&base, &tenant, timeout)?;
    for i in 0..args.vms {
        seeder
            .create_vm(&vm_spec(&format!("seed-{i}")))
            .with_context(|| format!("seeding VM {i}"))?;
    }
    let (reads, floor, creates) = rt.block_on(async {
        let get = {
            let (http, base, tenant) = (http.clone(), base.clone(), tenant.clone());
            move |_| {
                let req = http
                    .get(format!("{base}{}?limit=100", routes::VMS))
                    .bearer_auth(&tenant)
                    .send();
                async move {
                    match req.await {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            }
        };
        let healthz = {
            let (http, base) = (http.clone(), base.clone());
            move |_| {
                let req = http.get(format!("{base}{}", routes::HEALTHZ)).send();
                async move {
                    match req.await {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            }
        };
        let post = {
            let (http, base, tenant) = (http.clone(), base.clone(), tenant.clone());
            move |n: u64| {
                let req = http
                    .post(format!("{base}{}", routes::VMS))
                    .bearer_auth(&tenant)
                    .json(&vm_spec(&format!("vm-{n}")))
                    .send();
                async move {
                    match req.await {
                        Ok(r) if r.status().as_u16() == 201 => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            }
        };
        let reads = drive(args.connections, args.seconds, get).await;
        let floor = drive(args.connections, args.seconds, healthz).await;
        let creates = drive(args.connections, args.seconds, post).await;
        Ok::<_, anyhow::Error>((reads, floor, creates))
    })?;
    drop(server);
    let (floor_name, durable) = match &store {
        Some(StoreLocation::Etcd { endpoints, .. }) => (
            format!("peer: etcd put ({} concurrent)", args.connections),
            etcd_floor(endpoints, args.connections, args.seconds)?,
        ),
        _ => (
            "peer: sled insert+flush (in process)".to_string(),
            sled_floor(
                &tmp.path().join("sled-floor"),
                args.connections,
                args.seconds,
            )?,
        ),
    };

    println!(
        "modvisor bench api: store {}, {} connections, {} s each, server and load generator on {} CPUs",
        store
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "sled (scratch)".into()),
        args.connections,
        args.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<38} {:>10} {:>9} {:>9} {:>8} {:>6}",
        "measurement", "req/s", "p50 ms", "p99 ms", "ok", "errors"
    );
    row(
        &format!("GET /v1/vms ({} VMs, authenticated)", args.vms),
        &reads,
    );
    row("peer: GET /healthz (no auth, no store)", &floor);
    row("POST /v1/vms (durable create)", &creates);
    row(&floor_name, &durable);
    println!(
        "ratios: GET /v1/vms = {:.2} x GET /healthz; POST /v1/vms = {:.2} x the store's raw durable writes",
        reads.per_sec / floor.per_sec,
        creates.per_sec / durable.per_sec
    );
    println!("targets: GET >= 15000/s with p99 < 5 ms; POST >= 2000/s");
    Ok(())
}
