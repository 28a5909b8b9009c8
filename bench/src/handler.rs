//! `modvisor bench handler`: the in-kernel request handler (`modules/sample/khttpd`, built
//! against the guest kernel's headers, signed with a key made for the run, trusted,
//! published and approved like any operator module) next to the same response from user
//! space in the same guest, driven from a second VM of the tenant over the tenant network
//! with the same body, connection count and duration.
//!
//! The user-space peer is `mvhttp serve` (`guest/mvhttp/`): one process, epoll,
//! keep-alive, the same header lines as khttpd, so the two differ only in where the
//! handler runs. busybox httpd (a process forked per connection) is a third row. Both
//! VMs share the host's cores, so the client's load moves requests/s; the server VM's own
//! CPU accounting (`/proc/stat`) gives each server's CPU time per request, which it does
//! not.

use crate::up::UpWithNode;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use modvisor_control_plane_api::types::{
    ExecRequest, KernelMode, ModulePolicy, ModuleRequestBody, RequestState,
};
use modvisor_modules::OperatorKey;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// `guest/mvhttp/`, built by this crate's build script.
const MVHTTP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mvhttp"));

/// khttpd's sources (`modules/sample/khttpd`), built against the node's guest kernel.
const KHTTPD_SOURCES: [(&str, &str); 2] = [
    (
        "khttpd.c",
        include_str!("../../modules/sample/khttpd/khttpd.c"),
    ),
    ("Kbuild", include_str!("../../modules/sample/khttpd/Kbuild")),
];

/// The ports the three servers listen on in the server VM.
const KHTTPD_PORT: u16 = 8080;
const MVHTTP_PORT: u16 = 8081;
const BUSYBOX_PORT: u16 = 8082;

/// The kernel's `USER_HZ`: `/proc/stat` counts in hundredths of a second.
const USER_HZ: f64 = 100.0;

/// Arguments of `modvisor bench handler`.
#[derive(Debug, Args)]
pub struct BenchHandlerArgs {
    /// Connections the load generator keeps busy, for every server alike.
    #[arg(long, default_value_t = 8)]
    pub connections: u32,
    /// Seconds of load per row.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Response body size, bytes (a module parameter carries it: at most 256).
    #[arg(long, default_value_t = 256)]
    pub body_bytes: usize,
    /// Rounds over every row (interleaved, so that a slow spell of the host hits all
    /// servers alike); each row shows its median round and the spread of req/s.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
}

/// A server and how the load reaches it.
#[derive(Clone, Copy)]
struct Load {
    name: &'static str,
    port: u16,
    path: &'static str,
    /// `keepalive` or `close` (`mvhttp load`'s word).
    mode: &'static str,
}

impl Load {
    const fn new(name: &'static str, port: u16, path: &'static str, mode: &'static str) -> Self {
        Load {
            name,
            port,
            path,
            mode,
        }
    }
}

/// One server under one kind of load (the median round, with every round's spread).
struct Row {
    name: &'static str,
    requests: u64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
    /// The server VM's busy CPU over the run (user, system), seconds, its idle baseline
    /// taken off.
    user_s: f64,
    system_s: f64,
    /// The fewest and most requests of a round.
    requests_range: (u64, u64),
}

impl Row {
    fn per_second(&self, seconds: u32) -> f64 {
        self.requests as f64 / f64::from(seconds)
    }

    /// Server-VM CPU time per request, microseconds.
    fn cpu_us_per_request(&self) -> f64 {
        if self.requests == 0 {
            return f64::NAN;
        }
        (self.user_s + self.system_s) * 1e6 / self.requests as f64
    }
}

/// The busy and idle jiffies of `/proc/stat`'s first line: (user+nice, system+irq+softirq).
fn cpu_jiffies(stat: &str) -> Result<(u64, u64)> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .with_context(|| format!("no cpu line in {stat:?}"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().with_context(|| format!("{line:?}")))
        .collect::<Result<_>>()?;
    if f.len() < 7 {
        bail!("a short cpu line: {line:?}");
    }
    Ok((f[0] + f[1], f[2] + f[5] + f[6]))
}

/// `mvhttp load`'s line, as `key=value` pairs.
fn load_figures(out: &str) -> Result<BTreeMap<String, u64>> {
    let line = out
        .lines()
        .find(|l| l.starts_with("requests="))
        .with_context(|| format!("no figures from the load generator: {out:?}"))?;
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').context("key=value")?;
            Ok((k.to_string(), v.parse()?))
        })
        .collect()
}

/// Runs `script` with `sh -c` in VM `id` (with `stdin`); its stdout.
fn exec(up: &UpWithNode, id: &str, script: &str, stdin: Option<String>) -> Result<String> {
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        stdin,
        timeout_s: Some(600),
        env: BTreeMap::new(),
    };
    let r = up.tenant.exec(id, &req)?;
    if r.exit_code != Some(0) {
        bail!("{script}: {r:?}");
    }
    Ok(r.stdout)
}

/// Builds khttpd for `release` and signs it with a key made for this run: the signed
/// module and the key's certificate.
fn signed_khttpd(release: &str, work: &Path) -> Result<(Vec<u8>, String)> {
    let cache = modvisor_guest::kernel::cache_dir();
    let headers = modvisor_guest::headers::fetch(&cache, release, |m| eprintln!("{m}"))
        .with_context(|| format!("fetching the headers of {release}"))?;
    let src = work.join("khttpd");
    std::fs::create_dir_all(&src)?;
    for (name, text) in KHTTPD_SOURCES {
        std::fs::write(src.join(name), text)?;
    }
    let built = modvisor_guest::module_build::build(
        &src,
        &headers,
        &work.join("build"),
        &work.join("out"),
    )?;
    let ko = built.first().context("the build made no module")?;
    let key = OperatorKey::generate("modvisor bench", 2048, Duration::from_secs(86_400))?;
    let signed = key.sign_module(&std::fs::read(&ko.path)?)?;
    Ok((signed, key.cert_pem()?))
}

/// Waits (up to four minutes) until khttpd's request in VM `id` is Loaded.
fn wait_loaded(up: &UpWithNode, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let requests = up.tenant.module_requests(id)?;
        if let Some(r) = requests.iter().find(|r| r.name == "khttpd") {
            match r.state {
                RequestState::Loaded => return Ok(()),
                s if s.is_terminal() => bail!("khttpd was not loaded: {s:?} {:?}", r.reason),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!("khttpd's request did not settle in four minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The servers' VM, its address and the client's VM, each with `mvhttp` in /tmp.
struct Pair<'a> {
    up: &'a UpWithNode,
    server: String,
    server_ip: String,
    client: String,
}

impl Pair<'_> {
    /// The server VM's busy jiffies (user, system), read in one exec.
    fn server_cpu(&self) -> Result<(u64, u64)> {
        cpu_jiffies(&exec(self.up, &self.server, "head -n 1 /proc/stat", None)?)
    }

    /// khttpd's own count of answers.
    fn khttpd_served(&self) -> Result<u64> {
        let out = exec(
            self.up,
            &self.server,
            "cat /sys/module/khttpd/parameters/requests_served",
            None,
        )?;
        out.trim()
            .parse()
            .with_context(|| format!("requests_served: {out:?}"))
    }

    /// `mvhttp load` from the client against `port`: its figures.
    fn load(
        &self,
        port: u16,
        path: &str,
        mode: &str,
        args: &BenchHandlerArgs,
        seconds: u32,
    ) -> Result<BTreeMap<String, u64>> {
        let script = format!(
            "/tmp/mvhttp load {} {port} {} {seconds} {mode} {path}",
            self.server_ip, args.connections
        );
        load_figures(&exec(self.up, &self.client, &script, None)?)
    }

    /// One row: the load, bracketed by the server VM's CPU counters; `baseline` (user,
    /// system jiffies per second when idle) taken off.
    fn row(
        &self,
        load: &Load,
        args: &BenchHandlerArgs,
        baseline: (f64, f64),
        warm_up: bool,
    ) -> Result<Row> {
        let Load {
            name,
            port,
            path,
            mode,
        } = *load;
        // Under TCG the first requests also translate code: a short warm-up first.
        if warm_up {
            self.load(port, path, mode, args, 2)?;
        }
        let served_before = (port == KHTTPD_PORT)
            .then(|| self.khttpd_served())
            .transpose()?;
        let before = self.server_cpu()?;
        let t = Instant::now();
        let f = self.load(port, path, mode, args, args.seconds)?;
        let after = self.server_cpu()?;
        let wall = t.elapsed().as_secs_f64();
        let get = |k: &str| {
            f.get(k)
                .copied()
                .with_context(|| format!("no {k} in {f:?}"))
        };
        let requests = get("requests")?;
        if let Some(before) = served_before {
            let served = self.khttpd_served()? - before;
            if served < requests {
                bail!("the load generator counted {requests} answers, khttpd sent {served}");
            }
        }
        let secs = |j: u64| j as f64 / USER_HZ;
        Ok(Row {
            name,
            requests,
            errors: get("errors")?,
            p50_us: get("p50_us")?,
            p99_us: get("p99_us")?,
            user_s: (secs(after.0 - before.0) - baseline.0 * wall).max(0.0),
            system_s: (secs(after.1 - before.1) - baseline.1 * wall).max(0.0),
            requests_range: (requests, requests),
        })
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: BenchHandlerArgs) -> Result<()> {
    // Each row is one exec, bounded at 600 s.
    if !(1..=256).contains(&args.connections) || !(1..=590).contains(&args.seconds) {
        bail!("--connections must be 1 to 256 and --seconds 1 to 590");
    }
    if !(1..=9).contains(&args.rounds) {
        bail!("--rounds must be 1 to 9");
    }
    if !(1..=256).contains(&args.body_bytes) {
        bail!("--body-bytes must be 1 to 256 (a module parameter carries the body)");
    }
    let up = UpWithNode::start(false)?;
    let release = up
        .admin
        .list_nodes()?
        .first()
        .map(|n| n.kernel_release.clone())
        .context("no node")?;
    let work = tempfile::tempdir()?;
    eprintln!("building khttpd against linux-headers-{release}");
    let (signed, cert) = signed_khttpd(&release, work.path())?;
    up.admin.put_trusted("bench", &cert)?;
    up.admin.publish_module("khttpd", &release, false, signed)?;
    up.admin.set_policy(
        "khttpd",
        &ModulePolicy {
            approved: true,
            tenants: vec!["tenant-a".into()],
            signers: vec!["bench".into()],
            licenses: Vec::new(),
        },
    )?;
    let (server, _) = up.running_vm_in("handler-server", KernelMode::OperatorModules)?;
    let result = (|| -> Result<(Vec<Row>, (f64, f64))> {
        let (client, _) = up.running_vm("handler-client")?;
        let result = measure(&up, &server, &client, &args);
        up.remove_vm(&client);
        result
    })();
    up.remove_vm(&server);
    let (rows, baseline) = result?;
    print(&rows, baseline, &args);
    Ok(())
}

/// Loads khttpd, starts the user-space servers, and runs every row.
fn measure(
    up: &UpWithNode,
    server: &str,
    client: &str,
    args: &BenchHandlerArgs,
) -> Result<(Vec<Row>, (f64, f64))> {
    let body = "x".repeat(args.body_bytes);
    let params = BTreeMap::from([
        ("port".to_string(), KHTTPD_PORT.to_string()),
        ("body".to_string(), body.clone()),
        // khttpd serves 64 connections at once unless told, and a closed connection
        // counts until its linger ends: its most (512), so that it never turns away a
        // connection of the load; mvhttp has no such bound.
        ("max_conns".to_string(), "512".to_string()),
    ]);
    up.tenant.request_module(
        server,
        &ModuleRequestBody {
            name: "khttpd".into(),
            params,
        },
    )?;
    wait_loaded(up, server)?;
    let program = Some(base64::engine::general_purpose::STANDARD.encode(MVHTTP));
    let install = "base64 -d > /tmp/mvhttp && chmod 0755 /tmp/mvhttp";
    exec(
        up,
        server,
        &format!(
            "{install} && mkdir -p /tmp/www && printf %s {body} > /tmp/www/index.html \
             && /tmp/mvhttp serve {MVHTTP_PORT} /tmp/www/index.html \
             && busybox httpd -p {BUSYBOX_PORT} -h /tmp/www"
        ),
        program.clone(),
    )?;
    exec(up, client, install, program)?;
    let server_ip = up
        .tenant
        .get_vm(server)?
        .value
        .status
        .network
        .map(|n| n.ip)
        .context("the server VM has no address")?;
    let pair = Pair {
        up,
        server: server.to_string(),
        server_ip,
        client: client.to_string(),
    };
    // What the idle server VM spends (its agent, timers, the execs that read it).
    let before = pair.server_cpu()?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(u64::from(args.seconds.min(5))));
    let after = pair.server_cpu()?;
    let wall = t.elapsed().as_secs_f64();
    let baseline = (
        (after.0 - before.0) as f64 / USER_HZ / wall,
        (after.1 - before.1) as f64 / USER_HZ / wall,
    );
    let rows = [
        Load::new(
            "in-kernel khttpd, keep-alive",
            KHTTPD_PORT,
            "/",
            "keepalive",
        ),
        Load::new(
            "user-space mvhttp (epoll), keep-alive",
            MVHTTP_PORT,
            "/",
            "keepalive",
        ),
        Load::new(
            "in-kernel khttpd, a connection per request",
            KHTTPD_PORT,
            "/",
            "close",
        ),
        Load::new(
            "user-space mvhttp, a connection per request",
            MVHTTP_PORT,
            "/",
            "close",
        ),
        Load::new(
            "busybox httpd (a process per connection)",
            BUSYBOX_PORT,
            "/index.html",
            "close",
        ),
    ];
    let mut rounds: Vec<Vec<Row>> = rows.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for (load, runs) in rows.iter().zip(&mut rounds) {
            runs.push(pair.row(load, args, baseline, round == 0)?);
        }
    }
    let medians = rounds
        .into_iter()
        .map(median_round)
        .collect::<Result<Vec<_>>>()?;
    Ok((medians, baseline))
}

/// The round with the median requests, its errors those of every round, and the spread.
fn median_round(mut runs: Vec<Row>) -> Result<Row> {
    runs.sort_by_key(|r| r.requests);
    let errors = runs.iter().map(|r| r.errors).sum();
    let range = (
        runs.first().map_or(0, |r| r.requests),
        runs.last().map_or(0, |r| r.requests),
    );
    let middle = runs.len() / 2;
    let mut row = runs.into_iter().nth(middle).context("no round")?;
    row.errors = errors;
    row.requests_range = range;
    Ok(row)
}

fn print(rows: &[Row], baseline: (f64, f64), args: &BenchHandlerArgs) {
    let accel = crate::up::qemu_accel();
    println!(
        "GET of a {}-byte body, {} connections, {} s per row, median of {} rounds, from a second VM of the tenant over its network; guests under QEMU ({accel}), one vCPU each",
        args.body_bytes, args.connections, args.seconds, args.rounds
    );
    println!(
        "server VM idle: {:.1}% user, {:.1}% system (taken off below)",
        baseline.0 * 100.0,
        baseline.1 * 100.0
    );
    let spread = args.rounds > 1;
    println!(
        "{:<46} {:>9} {:>7} {:>9} {:>9} {:>12} {:>8}{}",
        "server",
        "req/s",
        "errors",
        "p50 ms",
        "p99 ms",
        "CPU us/req",
        "system",
        if spread { "   req/s of the rounds" } else { "" }
    );
    for r in rows {
        let busy = r.user_s + r.system_s;
        let range = if spread {
            format!(
                "   {:.0}..{:.0}",
                r.requests_range.0 as f64 / f64::from(args.seconds),
                r.requests_range.1 as f64 / f64::from(args.seconds)
            )
        } else {
            String::new()
        };
        println!(
            "{:<46} {:>9.1} {:>7} {:>9.2} {:>9.2} {:>12.1} {:>7.0}%{range}",
            r.name,
            r.per_second(args.seconds),
            r.errors,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.cpu_us_per_request(),
            if busy > 0.0 {
                r.system_s / busy * 100.0
            } else {
                0.0
            }
        );
    }
    let ratio = |kernel: &Row, user: &Row, label: &str| {
        // A row without requests, or whose CPU did not rise above the idle baseline, has
        // no ratio to give.
        let x = |a: f64, b: f64| {
            let r = a / b;
            if r.is_finite() && r > 0.0 {
                format!("{r:.2} x")
            } else {
                "n/a".to_string()
            }
        };
        println!(
            "{label}: in-kernel / user space = {} req/s, {} p99, {} CPU per request",
            x(
                kernel.per_second(args.seconds),
                user.per_second(args.seconds)
            ),
            x(kernel.p99_us as f64, user.p99_us as f64),
            x(kernel.cpu_us_per_request(), user.cpu_us_per_request())
        );
    };
    if let [ka, ua, kc, uc, bb] = rows {
        ratio(ka, ua, "keep-alive");
        ratio(kc, uc, "a connection per request");
        ratio(kc, bb, "against busybox httpd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_and_load_lines_parse() {
        let stat = "cpu  10 2 30 400 5 6 7 0 0 0\ncpu0 10 2 30 400 5 6 7 0 0 0\n";
        assert_eq!(cpu_jiffies(stat).unwrap(), (12, 43));
        assert!(cpu_jiffies("cpu  1 2\n").is_err());
        let f = load_figures("requests=5 errors=0 seconds=1 p50_us=7 p99_us=9 bytes=10\n").unwrap();
        assert_eq!(f["requests"], 5);
        assert_eq!(f["p99_us"], 9);
        assert!(load_figures("mvhttp: connect\n").is_err());
    }
}
