//! `modvisor guest ...`: the guest kernel and real guests on this machine.

use crate::table::render;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use modvisor_modules::{load_order, TrustStore, VettingPolicy};
use modvisor_node_agent::modprobe::{ModprobeService, ModuleOutcome, ModuleSource};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `modvisor guest ...`
#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Fetch what a guest boots into the cache (apt-get download + dpkg -x): Debian's
    /// current cloud kernel and `busybox-static` (the tenant's userland), and print where
    /// they are. `MODVISOR_KERNEL_DIR` and `MODVISOR_BUSYBOX_DIR` point at your own trees
    /// instead.
    #[command(alias = "fetch-kernel")]
    Fetch,
    /// Boot a guest with the qemu driver, load modules through the vetted modprobe service
    /// (dependencies included), print the guest's own module list, then power it off.
    Run {
        /// Modules to load, in order (comma-separated or repeated). Listing a module here
        /// approves it and its dependencies for this guest; each is still vetted
        /// (signature against the guest kernel's keys, vermagic, license, pin).
        #[arg(long, value_delimiter = ',')]
        load: Vec<String>,
        /// Leave the guest running (prints its pid and agent socket).
        #[arg(long)]
        keep: bool,
        /// vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 512)]
        memory_mib: u32,
        /// Where the guest's console log, agent socket and initramfs go.
        #[arg(long, default_value = ".modvisor/guests")]
        run_dir: PathBuf,
        /// Print the outcomes as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `guest` subcommand.
pub fn run(cmd: GuestCommand) -> Result<()> {
    match cmd {
        GuestCommand::Fetch => {
            let k = modvisor_guest::kernel::resolve(|m| eprintln!("{m}"))
                .context("fetching the guest kernel")?;
            let u = modvisor_guest::userland::resolve(|m| eprintln!("{m}"))
                .context("fetching the guest userland")?;
            println!("release  {}", k.release);
            println!("vmlinuz  {}", k.vmlinuz.display());
            println!("modules  {}", k.modules_dir.display());
            println!(
                "busybox  {} ({}, {} applets)",
                u.busybox.display(),
                u.version,
                u.applets.len()
            );
            Ok(())
        }
        GuestCommand::Run {
            load,
            keep,
            vcpus,
            memory_mib,
            run_dir,
            json,
        } => guest_run(&load, keep, vcpus, memory_mib, run_dir, json),
    }
}

fn guest_run(
    load: &[String],
    keep: bool,
    vcpus: u32,
    memory_mib: u32,
    run_dir: PathBuf,
    json: bool,
) -> Result<()> {
    if !(1..=32).contains(&vcpus) || !(128..=65536).contains(&memory_mib) {
        bail!("--vcpus must be 1..=32 and --memory-mib 128..=65536");
    }
    let id = format!("run-{}", std::process::id());
    let booted = modvisor_node_agent::standalone::boot(&run_dir, &id, vcpus, memory_mib, |m| {
        eprintln!("{m}")
    })?;
    let (mut guest, client, hello, kernel) =
        (booted.guest, booted.client, booted.hello, booted.kernel);
    eprintln!(
        "guest {id}: kernel {} agent {} answered after {:.2} s",
        hello.kernel_release, hello.agent_version, booted.boot_secs
    );
    let mut outcomes: Vec<ModuleOutcome> = Vec::new();
    if !load.is_empty() {
        let mut source = ModuleSource::new();
        for path in kernel.all_modules() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let pin = modvisor_modules::KernelModule::parse(&bytes)
                .map(|m| m.sha256().to_string())
                .ok();
            // A file of the tree that does not parse stays out of the source (and is reported if asked for).
            let _ = source.insert(bytes, pin);
        }
        let trust = TrustStore::from_kernel_image(&std::fs::read(&kernel.vmlinuz)?)
            .context("reading the guest kernel's trusted keys")?;
        let mut approved = Vec::new();
        for m in load {
            approved.extend(load_order(m, &source).unwrap_or_else(|_| vec![m.clone()]));
        }
        let policy = VettingPolicy::for_tenant(&kernel.release, approved);
        let service = ModprobeService::new(&source, &trust);
        for m in load {
            outcomes.extend(service.modprobe(&client, m, "", &policy));
        }
    }
    let listed = client.list(Duration::from_secs(30))?;
    if json {
        let out = serde_json::json!({
            "guest": id,
            "kernel_release": hello.kernel_release,
            "outcomes": outcomes,
            "guest_modules": listed.iter().map(|m| &m.name).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if !outcomes.is_empty() {
            let rows: Vec<Vec<String>> = outcomes.iter().map(outcome_row).collect();
            println!("{}\n", render(&["MODULE", "OUTCOME", "DETAIL"], &rows));
        }
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.size.to_string(),
                    m.used_by.join(","),
                    m.state.clone(),
                ]
            })
            .collect();
        println!("guest's /proc/modules:");
        println!("{}", render(&["MODULE", "SIZE", "USED_BY", "STATE"], &rows));
    }
    if keep {
        eprintln!(
            "guest {id} keeps running: pid {}, agent socket {}, console {}",
            guest.pid().unwrap_or(0),
            guest.agent_socket().display(),
            guest.console_path().display()
        );
        std::mem::forget(guest);
        return Ok(());
    }
    client.poweroff(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while guest.status() == modvisor_node_agent::driver::GuestState::Running
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let end = guest.stop(Duration::from_secs(2));
    eprintln!("guest {id}: {end:?}");
    let _ = std::fs::remove_dir_all(run_dir.join(&id));
    if outcomes.iter().any(|o| !o.is_loaded()) {
        bail!("not every module was loaded");
    }
    Ok(())
}

fn outcome_row(o: &ModuleOutcome) -> Vec<String> {
    match o {
        ModuleOutcome::Loaded {
            name,
            kernel_us,
            delivery_us,
        } => vec![
            name.clone(),
            "loaded".into(),
            format!(
                "delivered in {:.1} ms, finit_module {:.1} ms",
                *delivery_us as f64 / 1000.0,
                *kernel_us as f64 / 1000.0
            ),
        ],
        ModuleOutcome::AlreadyLoaded { name } => {
            vec![name.clone(), "already loaded".into(), String::new()]
        }
        ModuleOutcome::Rejected { name, reason } => {
            vec![name.clone(), "rejected".into(), reason.to_string()]
        }
        ModuleOutcome::Failed {
            name,
            errno,
            reason,
        } => {
            vec![
                name.clone(),
                "failed".into(),
                format!("errno {errno}: {reason}"),
            ]
        }
    }
}
