//! `modvisor bench vmm`: for the same probe guest (a PVH image that prints one line on
//! COM1), time from process start to the guest's first output and the resident memory
//! beyond guest RAM, for `modvisor vmm` and for `qemu-system-x86_64 -M microvm -accel kvm`
//! measured in the same run, printed side by side with their ratio.

use anyhow::{bail, Context, Result};
use clap::Args;
use modvisor_vmm::probe::{self, Probe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `modvisor bench vmm`.
#[derive(Debug, Args)]
pub struct BenchVmmArgs {
    /// Boots per VMM (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u32,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
}

/// One boot: time to first output and RSS beyond guest RAM.
struct Sample {
    first_output: Duration,
    rss_overhead_kib: u64,
}

/// Sums `Rss:` over the mappings of `pid`, leaving out those at least `ram` bytes large
/// (the guest RAM).
pub(crate) fn rss_overhead_kib(pid: u32, ram: u64) -> Result<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let mut total = 0;
    let mut is_ram = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                is_ram = b.saturating_sub(a) >= ram;
                continue;
            }
        }
        if first == "Rss:" && !is_ram {
            total += fields
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Waits (up to a minute) until `console` holds the probe's `ready`; an error if `alive`
/// says the process ended first.
pub(crate) fn await_ready(console: &Path, alive: &mut dyn FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read(console).is_ok_and(|c| c.windows(5).any(|w| w == b"ready")) {
        if !alive() {
            bail!("it ended before printing its line");
        }
        if Instant::now() > deadline {
            bail!("no output within 60 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `cmd`, waits for `marker` in `console`, measures, stops the process.
fn measure(mut cmd: Command, console: &Path, ram: u64) -> Result<Sample> {
    let _ = std::fs::remove_file(console);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the VMM")?;
    if let Err(e) = await_ready(console, &mut || matches!(child.try_wait(), Ok(None))) {
        stop(child);
        return Err(e.context("the VMM"));
    }
    let first_output = start.elapsed();
    let rss = rss_overhead_kib(child.id(), ram);
    stop(child);
    Ok(Sample {
        first_output,
        rss_overhead_kib: rss?,
    })
}

pub(crate) fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs the benchmark.
pub fn run(args: BenchVmmArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    println!("{}", modvisor_vmm::HardwareVirt::detect().describe());
    let dir = tempfile::tempdir()?;
    let kernel = probe::build(Probe::PvhReady, dir.path())?;
    // What the node agent's kvm driver runs: `modvisor-vmm` beside this binary, if built.
    let driver = modvisor_node_agent::kvm::KvmDriver::beside_this_executable()?;
    let (program, prefix) = driver.program();
    println!("our vmm: {} {}", program.display(), prefix.join(" "));
    let ram = u64::from(args.memory_mib) << 20;
    let console = dir.path().join("console");
    let mem = args.memory_mib.to_string();
    let (mut ours, mut qemu) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .arg("--kernel")
            .arg(&kernel)
            .args(["--cmdline", "console=ttyS0", "--memory-mib", &mem])
            .arg("--console")
            .arg(&console)
            .env("MODVISOR_LOG", "warn");
        ours.push(measure(cmd, &console, ram).context("modvisor vmm")?);
        let mut cmd = Command::new(&args.qemu);
        cmd.args(["-M", "microvm", "-accel", "kvm", "-m", &mem])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&kernel);
        qemu.push(measure(cmd, &console, ram).context("qemu microvm")?);
    }
    let start = |v: &[Sample]| median(v.iter().map(|s| s.first_output).collect());
    let rss = |v: &[Sample]| median(v.iter().map(|s| s.rss_overhead_kib).collect());
    let (os, qs) = (start(&ours), start(&qemu));
    let (or, qr) = (rss(&ours), rss(&qemu));
    println!(
        "probe guest: PVH image printing one line on COM1, {} MiB RAM, median of {} boots each",
        args.memory_mib, args.runs
    );
    println!("{:<34} {:>14} {:>16}", "", "our vmm", "qemu microvm");
    println!(
        "{:<34} {:>11.2} ms {:>13.2} ms   ours/qemu = 1/{:.1} (target <= 1/20)",
        "process start -> first guest output",
        os.as_secs_f64() * 1e3,
        qs.as_secs_f64() * 1e3,
        qs.as_secs_f64() / os.as_secs_f64().max(1e-9)
    );
    println!(
        "{:<34} {:>10.2} MiB {:>12.2} MiB   ours/qemu = {:.2} (target < 3 MiB)",
        "RSS beyond guest RAM",
        or as f64 / 1024.0,
        qr as f64 / 1024.0,
        or as f64 / (qr as f64).max(1.0)
    );
    Ok(())
}
