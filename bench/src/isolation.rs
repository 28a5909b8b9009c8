//! `modvisor bench isolation`: the same tiny workload (print one line, then idle) run
//! three ways, each in the node agent's jail (own cgroup, namespaces, pivot_root, per-VM
//! uid, rlimits): as a process sharing the host kernel (a container), as a microVM under
//! our vmm (the `kvm` driver), and under QEMU (the `qemu` driver). Prints start latency and
//! memory overhead side by side, with ratios to the container measured in the same run.

use crate::vmm::{await_ready, median, rss_overhead_kib};
use anyhow::{bail, Context, Result};
use clap::Args;
use modvisor_node_agent::driver::{Guest, GuestSpec, HypervisorDriver};
use modvisor_node_agent::jailing::{JailOptions, NodeJails};
use modvisor_node_agent::kvm::KvmDriver;
use modvisor_node_agent::qemu::QemuDriver;
use modvisor_vmm::probe::{self, Probe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `modvisor bench isolation`.
#[derive(Debug, Args)]
pub struct BenchIsolationArgs {
    /// Starts per way (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Guest RAM of the two VMs, in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u32,
}

/// The container's workload: a static x86-64 Linux program that writes the probe guest's
/// line to `/run/vm/console.log` and then waits, as the probe guest does on its COM1.
const PROCESS_PROBE: &str = r#"
        .globl _start
        .text
_start: mov $2, %eax                    # open(path, O_WRONLY|O_CREAT|O_TRUNC, 0644)
        lea path(%rip), %rdi
        mov $0x241, %esi
        mov $0644, %edx
        syscall
        mov %eax, %edi
        mov $1, %eax                    # write(fd, msg, len)
        lea msg(%rip), %rsi
        mov $(msg_end - msg), %edx
        syscall
1:      mov $34, %eax                   # pause()
        syscall
        jmp 1b
path:   .asciz "/run/vm/console.log"
msg:    .ascii "modvisor probe: ready\n"
msg_end:
"#;

fn tool(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (apt-get install binutils)"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn build_process_probe(dir: &Path) -> Result<PathBuf> {
    let (src, obj, exe) = (
        dir.join("process.s"),
        dir.join("process.o"),
        dir.join("process"),
    );
    std::fs::write(&src, PROCESS_PROBE)?;
    tool(Command::new("as").arg("--64").arg("-o").arg(&obj).arg(&src))?;
    tool(
        Command::new("ld")
            .args(["-m", "elf_x86_64", "-static", "--build-id=none", "-o"])
            .arg(&exe)
            .arg(&obj),
    )?;
    Ok(exe)
}

/// One start: time to the workload's line, and resident memory beyond guest RAM.
struct Sample {
    ready: Duration,
    rss_kib: u64,
}

/// The container: the static program alone in the same jail the node agent makes.
fn run_process(jails: &NodeJails, spec: &GuestSpec, program: &Path) -> Result<Sample> {
    std::fs::create_dir_all(spec.guest_dir())?;
    let console = spec.guest_dir().join("console.log");
    let start = Instant::now();
    let mut jail = jails.prepare(spec, program, &[], None)?;
    let mut cmd = jail.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = jail
        .spawn(&mut cmd)
        .context("spawning the jailed process")?;
    let ready = await_ready(&console, &mut || matches!(child.try_wait(), Ok(None)));
    let elapsed = start.elapsed();
    let rss = rss_overhead_kib(child.id(), u64::MAX);
    let _ = child.kill();
    let _ = child.wait();
    jail.release();
    ready?;
    Ok(Sample {
        ready: elapsed,
        rss_kib: rss?,
    })
}

/// A VM through a node agent driver, jailed as the node agent runs it.
fn run_vm(driver: &dyn HypervisorDriver, spec: &GuestSpec) -> Result<Sample> {
    let start = Instant::now();
    let mut guest: Box<dyn Guest> = driver.start(spec)?;
    let console = guest.console_path().to_path_buf();
    let ready = await_ready(&console, &mut || {
        guest.status() == modvisor_node_agent::driver::GuestState::Running
    });
    let elapsed = start.elapsed();
    let rss = guest
        .pid()
        .context("the hypervisor ended")
        .and_then(|pid| rss_overhead_kib(pid, u64::from(spec.memory_mib) << 20));
    guest.stop(Duration::from_secs(5));
    ready?;
    Ok(Sample {
        ready: elapsed,
        rss_kib: rss?,
    })
}

/// Runs the benchmark.
pub fn run(args: BenchIsolationArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    println!("{}", modvisor_vmm::HardwareVirt::detect().describe());
    let dir = tempfile::tempdir()?;
    let kernel = probe::build(Probe::PvhReady, dir.path())?;
    let process = build_process_probe(dir.path())?;
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, b"modvisor")?;
    let parent = format!("modvisor-bench-{}", std::process::id());
    let options = JailOptions {
        cgroup_parent: parent,
        uid_base: 2_400_000,
        ..JailOptions::default()
    };
    let jails = Arc::new(NodeJails::new(dir.path(), "bench", &options));
    jails.prepare_host(&[]).context("the jail")?;
    let vmm = KvmDriver::beside_this_executable()?.with_jails(jails.clone());
    let qemu = QemuDriver::detect()?.with_jails(jails.clone());
    let spec = |kind: &str, i: usize| GuestSpec {
        id: format!("{kind}-{i}"),
        vcpus: 1,
        memory_mib: args.memory_mib,
        kernel: kernel.clone(),
        initrd: initrd.clone(),
        cmdline: "console=ttyS0".into(),
        run_dir: dir.path().join("run").join(format!("{kind}-{i}")),
        nic: None,
        virtio_channel: false,
    };
    let (mut c, mut v, mut q) = (Vec::new(), Vec::new(), Vec::new());
    let result = (|| -> Result<()> {
        for i in 0..args.runs {
            c.push(run_process(&jails, &spec("process", i), &process).context("container")?);
            v.push(run_vm(&vmm, &spec("vmm", i)).context("modvisor vmm")?);
            q.push(run_vm(&qemu, &spec("qemu", i)).context("qemu")?);
        }
        Ok(())
    })();
    jails.remove_cgroup_parent();
    result?;
    let ms = |s: &[Sample]| median(s.iter().map(|x| x.ready).collect()).as_secs_f64() * 1e3;
    let mib = |s: &[Sample]| median(s.iter().map(|x| x.rss_kib).collect()) as f64 / 1024.0;
    let (cm, vm, qm) = (ms(&c), ms(&v), ms(&q));
    let (cr, vr, qr) = (mib(&c), mib(&v), mib(&q));
    println!(
        "the same workload (print one line, then idle), each in the node agent's jail; median of {} starts; VMs with {} MiB RAM",
        args.runs, args.memory_mib
    );
    println!(
        "{:<40} {:>14} {:>18} {:>22}",
        "",
        "container",
        "microVM (our vmm)",
        format!(
            "QEMU ({})",
            qemu.acceleration().split(' ').next().unwrap_or("")
        ),
    );
    println!(
        "{:<40} {:>11.2} ms {:>15.2} ms {:>19.2} ms",
        "jail + start -> first output", cm, vm, qm
    );
    let ratios = |container: f64, vm: f64, qemu: f64| {
        println!(
            "{:<40} {:>14} {:>17.1}x {:>21.1}x",
            "  ratio to the container",
            "1.0x",
            vm / container.max(1e-9),
            qemu / container.max(1e-9)
        );
    };
    ratios(cm, vm, qm);
    println!(
        "{:<40} {:>10.2} MiB {:>14.2} MiB {:>18.2} MiB",
        "resident memory beyond guest RAM", cr, vr, qr
    );
    ratios(cr, vr, qr);
    println!("The container shares the host kernel: it cannot load a kernel module of its own. Each VM has its own kernel.");
    Ok(())
}
