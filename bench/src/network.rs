//! `modvisor bench network`: TCP throughput (an HTTP download of a file held in memory)
//! and round-trip latency (ICMP echo) between two VMs of one tenant on one node and on two
//! nodes (VXLAN), next to the same transfer between two plain network namespaces on the
//! host joined by a bridge, the peer (no VM), all with the same busybox and measured in
//! the same run. Under TCG the VMs' absolute figures are low; the ratios are the point.

use crate::up::UpWithNode;
use anyhow::{bail, Context, Result};
use clap::Args;
use modvisor_control_plane_api::types::ExecRequest;
use modvisor_node_agent::network::cmd::Netns;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

/// Arguments of `modvisor bench network`.
#[derive(Debug, Args)]
pub struct BenchNetworkArgs {
    /// Size of the file transferred, MiB.
    #[arg(long, default_value_t = 16)]
    pub megabytes: u32,
    /// Echo requests per latency figure.
    #[arg(long, default_value_t = 20)]
    pub pings: u32,
}

/// One path's figures.
struct Figures {
    mib_per_s: f64,
    rtt_ms: f64,
}

/// The shell lines both sides run: a file in memory served by busybox httpd, its
/// download, and the pings.
fn serve_script(megabytes: u32) -> String {
    format!(
        "mkdir -p /tmp/bench-www && dd if=/dev/zero of=/tmp/bench-www/blob bs=1048576 count={megabytes} 2>/dev/null && busybox httpd -p 8099 -h /tmp/bench-www"
    )
}

fn download_script(ip: &str) -> String {
    format!("busybox wget -q -O /dev/null http://{ip}:8099/blob")
}

fn ping_script(ip: &str, pings: u32) -> String {
    format!("busybox ping -q -c {pings} -i 0.2 {ip}")
}

/// The average of busybox ping's `round-trip min/avg/max = a/b/c ms`.
fn average_rtt(out: &str) -> Result<f64> {
    out.lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no round-trip line in {out:?}"))
}

/// Two namespaces on the host, each with a veth into a bridge in a third, running the
/// same busybox as the guests.
fn peer(busybox: &std::path::Path, args: &BenchNetworkArgs) -> Result<Figures> {
    let tag = std::process::id();
    let (a, b, mid) = (
        Netns(format!("mvbench-a-{tag}")),
        Netns(format!("mvbench-b-{tag}")),
        Netns(format!("mvbench-br-{tag}")),
    );
    let result = (|| -> Result<Figures> {
        for ns in [&a, &b, &mid] {
            ns.ensure()?;
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        mid.ip(&["link", "add", "br0", "type", "bridge"])?;
        mid.ip(&["link", "set", "br0", "up"])?;
        for (ns, ip, port) in [(&a, "10.99.0.1/24", "pa"), (&b, "10.99.0.2/24", "pb")] {
            ns.ip(&[
                "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", &mid.0,
            ])?;
            mid.ip(&["link", "set", port, "master", "br0", "up"])?;
            ns.ip(&["addr", "add", ip, "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        let run = |ns: &Netns, script: &str| -> Result<(String, f64)> {
            let t = Instant::now();
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.0, "sh", "-c", script])
                .env("PATH", path_with(busybox))
                .output()?;
            if !out.status.success() {
                bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok((
                String::from_utf8_lossy(&out.stdout).into_owned(),
                t.elapsed().as_secs_f64(),
            ))
        };
        run(&b, &serve_script(args.megabytes))?;
        // The cost of starting the command, taken off as for the VMs' execs.
        let overhead = (0..3)
            .map(|_| run(&a, "true").map(|(_, s)| s))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        let (_, secs) = run(&a, &download_script("10.99.0.2"))?;
        let secs = (secs - overhead).max(1e-6);
        let (out, _) = run(&a, &ping_script("10.99.0.2", args.pings))?;
        Ok(Figures {
            mib_per_s: f64::from(args.megabytes) / secs,
            rtt_ms: average_rtt(&out)?,
        })
    })();
    // httpd keeps running in `b` until it is killed.
    kill_all_in(&b);
    for ns in [&a, &b, &mid] {
        if let Err(e) = ns.remove() {
            eprintln!("removing {}: {e}", ns.0);
        }
    }
    result
}

/// `PATH` with a directory holding `busybox` first (the host may have none).
fn path_with(busybox: &std::path::Path) -> String {
    let dir = busybox.parent().map(|d| d.display().to_string());
    let rest = std::env::var("PATH").unwrap_or_default();
    match dir {
        Some(d) => format!("{d}:{rest}"),
        None => rest,
    }
}

/// Kills every process in namespace `ns`.
fn kill_all_in(ns: &Netns) {
    let pids = match Command::new("ip").args(["netns", "pids", &ns.0]).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => {
            eprintln!("listing the processes in {}: {e}", ns.0);
            return;
        }
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            eprintln!("killing {pid} in {}: {e}", ns.0);
        }
    }
}

/// Runs `script` with `sh -c` in VM `id`; its stdout and the seconds the exec took.
fn exec(up: &UpWithNode, id: &str, script: &str) -> Result<(String, f64)> {
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        stdin: None,
        timeout_s: Some(600),
        env: BTreeMap::new(),
    };
    let t = Instant::now();
    let r = up.tenant.exec(id, &req)?;
    let secs = t.elapsed().as_secs_f64();
    if r.exit_code != Some(0) {
        bail!("{script}: {r:?}");
    }
    Ok((r.stdout, secs))
}

/// From VM `client` to VM `server` (serving already): the download's throughput (the
/// exec's own round trip, measured with `true`, taken off) and the average RTT.
fn between(
    up: &UpWithNode,
    client: &str,
    server_ip: &str,
    args: &BenchNetworkArgs,
) -> Result<Figures> {
    let overhead = (0..3)
        .map(|_| exec(up, client, "true").map(|(_, s)| s))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    let (_, secs) = exec(up, client, &download_script(server_ip))?;
    let (out, _) = exec(up, client, &ping_script(server_ip, args.pings))?;
    Ok(Figures {
        mib_per_s: f64::from(args.megabytes) / (secs - overhead).max(1e-6),
        rtt_ms: average_rtt(&out)?,
    })
}

/// Runs the benchmark and prints its table.
pub fn run(args: BenchNetworkArgs) -> Result<()> {
    if args.megabytes == 0 || args.pings == 0 {
        bail!("--megabytes and --pings must be positive");
    }
    let userland = modvisor_guest::userland::resolve(|m| eprintln!("{m}"))?;
    let host = peer(&userland.busybox, &args)?;
    let up = UpWithNode::start_nodes(false, 2)?;
    // A tenant's VMs are spread: the first two land on different nodes, the third beside
    // one of them.
    let mut vms = Vec::new();
    for name in ["net-1", "net-2", "net-3"] {
        let (id, _) = up.running_vm(name)?;
        let vm = up.tenant.get_vm(&id)?.value;
        let node = vm.status.node.clone().unwrap_or_default();
        let ip = vm
            .status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .context("a VM without an address")?;
        vms.push((id, node, ip));
    }
    let result = (|| -> Result<(Figures, Figures)> {
        for (id, _, _) in &vms {
            exec(&up, id, &serve_script(args.megabytes))?;
        }
        let same = vms
            .iter()
            .enumerate()
            .flat_map(|(i, a)| vms[i + 1..].iter().map(move |b| (a, b)))
            .find(|(a, b)| a.1 == b.1)
            .context("no two VMs on one node")?;
        let across = vms
            .iter()
            .enumerate()
            .flat_map(|(i, a)| vms[i + 1..].iter().map(move |b| (a, b)))
            .find(|(a, b)| a.1 != b.1)
            .context("no two VMs on different nodes")?;
        Ok((
            between(&up, &same.0 .0, &same.1 .2, &args)?,
            between(&up, &across.0 .0, &across.1 .2, &args)?,
        ))
    })();
    for (id, _, _) in &vms {
        up.remove_vm(id);
    }
    let (same, across) = result?;
    let accel = crate::up::qemu_accel();
    println!(
        "TCP download of {} MiB (busybox httpd -> wget) and ICMP RTT ({} pings), guests under QEMU ({accel})",
        args.megabytes, args.pings
    );
    println!("{:<56} {:>10} {:>10}", "path", "MiB/s", "RTT ms");
    let row = |name: &str, f: &Figures| {
        println!("{name:<56} {:>10.1} {:>10.3}", f.mib_per_s, f.rtt_ms);
    };
    row("peer: two namespaces on the host, veth + bridge", &host);
    row("two VMs of a tenant on one node (tap, bridge)", &same);
    row("two VMs of a tenant on two nodes (VXLAN)", &across);
    println!(
        "ratios to the peer: one node {:.3} x throughput, {:.1} x RTT; two nodes {:.3} x throughput, {:.1} x RTT",
        same.mib_per_s / host.mib_per_s,
        same.rtt_ms / host.rtt_ms,
        across.mib_per_s / host.mib_per_s,
        across.rtt_ms / host.rtt_ms
    );
    Ok(())
}
