//! `modvisor bench flood`: one tenant floods the API while another works at a steady
//! pace; prints the quiet tenant's latency unloaded, under the flood with the flooding
//! tenant held to its default rate limits, and (the peer) under the same flood with the
//! flooder's limits lifted.
//!
//! The control plane runs in a child process; the flooder is this process's async load
//! generator, the quiet tenant a separate thread with its own connection. On a machine
//! with few CPUs the load generator competes with the server for them: the figures say
//! how the whole machine fares, as a tenant would see it.

use crate::api::{drive, row, start_server, vm_spec, Figures};
use anyhow::{bail, Context, Result};
use clap::Args;
use modvisor_control_plane::auth::{Role, TokenKeys};
use modvisor_control_plane_api::types::{CreateTenant, Quota};
use modvisor_control_plane_api::{routes, ApiClient};
use std::time::{Duration, Instant};

/// Arguments of `modvisor bench flood`.
#[derive(Debug, Args)]
pub struct BenchFloodArgs {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent connections of the flooding tenant.
    #[arg(long, default_value_t = 64)]
    pub flood_connections: usize,
    /// Requests per second of the quiet tenant (one connection, evenly paced).
    #[arg(long, default_value_t = 50)]
    pub quiet_rate: u32,
    /// HTTP worker threads of the server (default: one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Keep the clients off the server's CPUs (as a flooder on another host would be):
    /// the server on the last CPU, this process (both tenants' clients) on the others.
    /// Needs at least two CPUs and util-linux's `taskset`.
    #[arg(long)]
    pub pin: bool,
}

/// The CPU lists of the server and of the clients when pinned.
fn cpu_split() -> Result<(String, String)> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        bail!("--pin needs at least two CPUs; this machine has {n}");
    }
    let clients = if n == 2 {
        "0".to_string()
    } else {
        format!("0-{}", n - 2)
    };
    Ok(((n - 1).to_string(), clients))
}

/// Pins every thread of this process to `cpus` (threads started later inherit it).
fn pin_self(cpus: &str) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus])
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset could not pin the load generator to CPUs {cpus}: {status}");
    }
    Ok(())
}

/// The quiet tenant: `GET /v1/vms` at `rate` per second for `seconds`, on its own thread.
fn quiet(base: String, token: String, rate: u32, seconds: u64) -> Result<Figures> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{base}{}?limit=100", routes::VMS);
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let (mut lat, mut errors) = (Vec::new(), 0u64);
    let mut next = start;
    while next < deadline {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        let served = match http.get(&url).bearer_auth(&token).send() {
            Ok(r) if r.status().is_success() => r.bytes().is_ok(),
            _ => false,
        };
        if served {
            lat.push(t.elapsed().as_micros() as u32);
        } else {
            errors += 1;
        }
        next += period;
    }
    if lat.is_empty() {
        bail!("the quiet tenant got no answer");
    }
    Ok(Figures::from_latencies(
        lat,
        errors,
        start.elapsed().as_secs_f64(),
    ))
}

/// The quiet tenant measured while `flood` (if any) runs on this thread.
fn measure(
    args: &BenchFloodArgs,
    base: &str,
    quiet_token: &str,
    flood: Option<(&reqwest::Client, &str)>,
) -> Result<(Figures, Option<Figures>)> {
    let (b, t, rate, secs) = (
        base.to_string(),
        quiet_token.to_string(),
        args.quiet_rate,
        args.seconds,
    );
    let quiet = std::thread::spawn(move || quiet(b, t, rate, secs));
    let flooded = match flood {
        Some((http, token)) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (http, url, token) = (
                http.clone(),
                format!("{base}{}?limit=100", routes::VMS),
                token.to_string(),
            );
            Some(
                rt.block_on(drive(args.flood_connections, args.seconds, move |_| {
                    let req = http.get(&url).bearer_auth(&token).send();
                    async move {
                        match req.await {
                            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                            // A 429 is the answer the limit gives: read it (keeping the
                            // connection), count it.
                            Ok(r) => r.bytes().await.map(|_| false).unwrap_or(false),
                            Err(_) => false,
                        }
                    }
                })),
            )
        }
        None => None,
    };
    let quiet = quiet
        .join()
        .map_err(|_| anyhow::anyhow!("the quiet tenant's thread panicked"))??;
    Ok((quiet, flooded))
}

/// Runs the benchmark and prints its table.
pub fn run(args: BenchFloodArgs) -> Result<()> {
    if args.seconds == 0 || args.flood_connections == 0 || args.quiet_rate == 0 {
        bail!("--seconds, --flood-connections and --quiet-rate must be positive");
    }
    let tmp = tempfile::tempdir().context("creating a scratch directory")?;
    let dir = tmp.path().join("cp");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let split = if args.pin { Some(cpu_split()?) } else { None };
    let server = start_server(
        &dir,
        args.workers,
        split.as_ref().map(|(s, _)| s.as_str()),
        None,
    )?;
    if let Some((_, clients)) = &split {
        pin_self(clients)?;
    }
    let keys = TokenKeys::load_or_create(&dir)?;
    let admin = ApiClient::new(
        &server.base,
        &keys.issue("bench-admin", Role::Admin, None, 3600)?.token,
        Duration::from_secs(30),
    )?;
    let mut tokens = Vec::new();
    for name in ["quiet", "noisy"] {
        admin.create_tenant(&CreateTenant {
            name: name.into(),
            quota: None,
        })?;
        let token = keys.issue(name, Role::Tenant, Some(name), 3600)?.token;
        let client = ApiClient::new(&server.base, &token, Duration::from_secs(30))?;
        for i in 0..10 {
            client.create_vm(&vm_spec(&format!("{name}-{i}")))?;
        }
        tokens.push(token);
    }
    let (quiet_token, noisy_token) = (&tokens[0], &tokens[1]);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.flood_connections)
        .build()?;
    // Each measurement starts with full buckets.
    let settle = || std::thread::sleep(Duration::from_secs(3));

    let (alone, _) = measure(&args, &server.base, quiet_token, None)?;
    settle();
    let (limited, flood_limited) =
        measure(&args, &server.base, quiet_token, Some((&http, noisy_token)))?;
    let defaults = admin.get_tenant("noisy")?.quota;
    admin.set_quota(
        "noisy",
        &Quota {
            api_requests_per_sec: 1_000_000,
            api_burst: 1_000_000,
            max_concurrent_requests: 100_000,
            ..defaults
        },
    )?;
    settle();
    let (unlimited, flood_unlimited) =
        measure(&args, &server.base, quiet_token, Some((&http, noisy_token)))?;
    drop(server);

    println!(
        "modvisor bench flood: quiet tenant {} req/s on one connection; flooding tenant {} connections; {} s each; {} CPUs{}",
        args.quiet_rate,
        args.flood_connections,
        args.seconds,
        cpus,
        match &split {
            Some((server, clients)) => format!("; server pinned to CPU {server}, clients to {clients}"),
            None => String::new(),
        }
    );
    println!(
        "{:<38} {:>10} {:>9} {:>9} {:>8} {:>6}",
        "measurement", "req/s", "p50 ms", "p99 ms", "ok", "errors"
    );
    row("quiet tenant alone", &alone);
    row(
        &format!(
            "quiet, noisy flooding at its limits ({}/s)",
            defaults.api_requests_per_sec
        ),
        &limited,
    );
    if let Some(f) = &flood_limited {
        row("  noisy: served (errors = 429s)", f);
    }
    row("peer: quiet, noisy flooding unlimited", &unlimited);
    if let Some(f) = &flood_unlimited {
        row("  noisy: served", f);
    }
    println!(
        "ratios: quiet p99 under a limited flood = {:.2} x alone; under an unlimited flood = {:.2} x alone",
        limited.p99_ms / alone.p99_ms,
        unlimited.p99_ms / alone.p99_ms
    );
    Ok(())
}
