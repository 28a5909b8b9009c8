//! `modvisor vm ...`: VMs by name or id; create, power and delete can `--wait`; `list
//! --watch` follows changes; `describe` shows everything about one VM.

use crate::client::{print, print_item, ApiArgs, Output};
use crate::exec_cmd::find_vm;
use crate::table::{key_values, name_of, opt, render};
use crate::wait::{until, Progress, WaitArgs};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use modvisor_control_plane_api::types::{
    Event, EventListParams, ModuleRef, ModuleRequest, Phase, PowerState, RequestState, Vm, VmSpec,
};
use modvisor_control_plane_api::ApiClient;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `modvisor vm ...`
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM.
    Create {
        /// VM name.
        name: String,
        /// vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
        /// A module to load: NAME or NAME:key=value,key=value (repeatable).
        #[arg(long = "module")]
        modules: Vec<String>,
        /// A script the guest runs once at first boot, after its modules are loaded (up
        /// to 32 KiB; its end shows in `vm get`).
        #[arg(long)]
        user_data_file: Option<PathBuf>,
        /// The tenant network to join (`default` when left out, created on first use;
        /// `none` for no network interface).
        #[arg(long)]
        network: Option<String>,
        /// What its guest kernel enforces for modules: `standard`, or `operator-modules`
        /// (loads modules signed by a trusted operator key; for a tenant with one approved).
        #[arg(long, value_enum, default_value_t = KernelModeArg::Standard)]
        kernel_mode: KernelModeArg,
        /// With --wait: until it runs (and its modules are Loaded).
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List VMs.
    List {
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Then print each VM that changes, as it changes (until interrupted).
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Show one VM.
    Get {
        /// VM name or id.
        id: String,
    },
    /// Everything about one VM: spec, status and why, its module requests, the modules in
    /// its guest, its interfaces and its events.
    Describe {
        /// VM name or id.
        id: String,
    },
    /// Ask for a VM to run or stop (a conditional PUT of its spec).
    Power {
        /// VM name or id.
        id: String,
        /// `running` or `stopped`.
        #[arg(value_parser = ["running", "stopped"])]
        state: String,
        /// With --wait: until it is Running or Stopped.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a VM.
    Delete {
        /// VM name or id.
        id: String,
        /// With --wait: until it is gone.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Run a command in a VM's guest (as tenant root, without module loading); prints its
    /// output and exits with its code: `modvisor vm exec NAME -- uname -r`.
    Exec(crate::exec_cmd::ExecArgs),
    /// Attach this terminal to a VM's serial console (raw mode; Ctrl-] detaches).
    Console(crate::console_cmd::ConsoleArgs),
}

fn vm_rows(items: &[Vm], wide: bool) -> String {
    let mut headers = vec!["NAME", "ID", "PHASE", "NODE", "NETWORK", "MODULES"];
    if wide {
        headers.extend(["TENANT", "VCPUS", "MEMORY_MIB", "USER_DATA", "REASON"]);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|vm| {
            let mut row = vec![
                vm.spec.name.clone(),
                vm.id.clone(),
                name_of(&vm.status.phase),
                opt(vm.status.node.as_deref()),
                vm.status
                    .network
                    .as_ref()
                    .map(|n| format!("{} {}", n.network, n.ip))
                    .unwrap_or_else(|| "-".into()),
                list_or_dash(&vm.status.guest_modules),
            ];
            if wide {
                row.extend([
                    vm.tenant.clone(),
                    vm.spec.vcpus.to_string(),
                    vm.spec.memory_mib.to_string(),
                    vm.status
                        .user_data
                        .as_ref()
                        .map(|u| match u.exit_code {
                            Some(c) => format!("{} ({c})", name_of(&u.state)),
                            None => name_of(&u.state),
                        })
                        .unwrap_or_else(|| "-".into()),
                    opt(vm.status.reason.as_deref()),
                ]);
            }
            row
        })
        .collect();
    render(&headers, &rows)
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

/// The module requests of a VM as a table.
pub fn request_rows(items: &[ModuleRequest]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| vec![r.name.clone(), name_of(&r.state), opt(r.reason.as_deref())])
        .collect();
    render(&["MODULE", "STATE", "REASON"], &rows)
}

/// `--kernel-mode` (see `KernelMode`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KernelModeArg {
    /// Module signatures enforced by the guest kernel, lockdown on.
    Standard,
    /// Operator-signed modules, checked by the host's vetting only.
    OperatorModules,
}

impl From<KernelModeArg> for modvisor_control_plane_api::types::KernelMode {
    fn from(m: KernelModeArg) -> Self {
        match m {
            KernelModeArg::Standard => Self::Standard,
            KernelModeArg::OperatorModules => Self::OperatorModules,
        }
    }
}

/// `modvisor vm ...`; the exit status (a command's own, for `exec`).
pub fn vm(args: &ApiArgs, cmd: VmCommand) -> Result<u8> {
    let api = args.client()?;
    let one = |vm: &Vm| print(args, vm, |v, wide| vm_rows(std::slice::from_ref(v), wide));
    match cmd {
        VmCommand::Create {
            name,
            vcpus,
            memory_mib,
            modules,
            user_data_file,
            network,
            kernel_mode,
            wait,
        } => {
            let user_data = user_data_file
                .map(|f| {
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {} (UTF-8 text)", f.display()))
                })
                .transpose()?;
            let mut refs = Vec::new();
            for m in &modules {
                let (name, params) = m.split_once(':').unwrap_or((m, ""));
                let params: Vec<String> = params.split(',').map(str::to_string).collect();
                refs.push(ModuleRef {
                    name: name.to_string(),
                    params: key_values(&params, "module parameter")?,
                });
            }
            let spec = VmSpec {
                name,
                kernel_mode: kernel_mode.into(),
                vcpus,
                memory_mib,
                modules: refs,
                power_state: PowerState::Running,
                user_data,
                network,
            };
            let mut vm = api.create_vm(&spec)?;
            if wait.wait {
                vm = wait_for_phase(&api, wait, &vm, Phase::Running)?;
                wait_for_modules(&api, wait, &vm)?;
            }
            one(&vm)?;
        }
        VmCommand::List { limit, watch } => {
            if limit == 0 {
                bail!("--limit must be positive");
            }
            let items = api.list_vms(limit)?;
            print(args, &items[..], vm_rows)?;
            if watch {
                watch_vms(args, &api, limit, items)?;
            }
        }
        VmCommand::Get { id } => one(&find_vm(&api, &id)?)?,
        VmCommand::Describe { id } => describe(args, &api, &id)?,
        VmCommand::Power { id, state, wait } => {
            let id = find_vm(&api, &id)?.id;
            let current = api.get_vm(&id)?;
            let mut spec = current.value.spec;
            let (power, phase) = match state.as_str() {
                "stopped" => (PowerState::Stopped, Phase::Stopped),
                _ => (PowerState::Running, Phase::Running),
            };
            spec.power_state = power;
            let mut vm = api.replace_vm(&id, &spec, current.etag.as_deref())?;
            if wait.wait {
                vm = wait_for_phase(&api, wait, &vm, phase)?;
            }
            one(&vm)?;
        }
        VmCommand::Delete { id, wait } => {
            let vm = find_vm(&api, &id)?;
            api.delete_vm(&vm.id)?;
            if wait.wait {
                until(
                    wait,
                    &format!("VM {} is gone", vm.spec.name),
                    || match api.get_vm(&vm.id) {
                        Err(e) if e.status() == Some(404) => Ok(Progress::Done(())),
                        Err(e) => Err(e.into()),
                        Ok(v) => Ok(Progress::Pending(phase_words(&v.value))),
                    },
                )?;
            }
            if !matches!(args.output(), Output::Json | Output::Yaml) {
                println!("deleted {}", vm.id);
            }
        }
        VmCommand::Exec(exec) => return crate::exec_cmd::exec(&api, args.json(), exec),
        VmCommand::Console(console) => crate::console_cmd::console(args, console)?,
    }
    Ok(0)
}

/// A VM's phase, with its reason when it has one.
fn phase_words(vm: &Vm) -> String {
    match &vm.status.reason {
        Some(r) => format!("{} ({r})", name_of(&vm.status.phase)),
        None => name_of(&vm.status.phase),
    }
}

/// Waits until `vm` is in `want`; a Failed VM (or one that settles elsewhere) fails.
fn wait_for_phase(api: &ApiClient, wait: WaitArgs, vm: &Vm, want: Phase) -> Result<Vm> {
    let what = format!("VM {} is {}", vm.spec.name, name_of(&want));
    until(wait, &what, || {
        let now = api.get_vm(&vm.id)?.value;
        Ok(match now.status.phase {
            p if p == want => Progress::Done(now),
            Phase::Failed => Progress::Failed(phase_words(&now)),
            _ => Progress::Pending(phase_words(&now)),
        })
    })
}

/// Waits until every module request of `vm` is Loaded and the guest's own list (as its
/// node last observed it) shows them; a request that ends otherwise fails.
fn wait_for_modules(api: &ApiClient, wait: WaitArgs, vm: &Vm) -> Result<()> {
    if vm.spec.modules.is_empty() {
        return Ok(());
    }
    let what = format!("the modules of VM {} are Loaded", vm.spec.name);
    until(wait, &what, || {
        let requests = api.module_requests(&vm.id)?;
        let mut each: Vec<Progress<()>> =
            requests.iter().map(|r| request_progress(r, ())).collect();
        // One that failed decides; else the first still on its way; else all are Loaded.
        if let Some(i) = each.iter().position(|p| matches!(p, Progress::Failed(_))) {
            return Ok(each.swap_remove(i));
        }
        if let Some(p) = each.into_iter().find(|p| matches!(p, Progress::Pending(_))) {
            return Ok(p);
        }
        let seen = api.get_vm(&vm.id)?.value.status.guest_modules;
        let unseen: Vec<&str> = requests
            .iter()
            .filter(|r| !seen.contains(&r.name))
            .map(|r| r.name.as_str())
            .collect();
        Ok(if unseen.is_empty() {
            Progress::Done(())
        } else {
            Progress::Pending(format!(
                "{} Loaded, not yet in the guest's list as its node last saw it",
                unseen.join(", ")
            ))
        })
    })
}

/// Where a module request stands for `--wait`: `loaded` once Loaded, failed once it
/// ended otherwise (Rejected, Failed, Unloaded), pending before.
pub fn request_progress<T>(r: &ModuleRequest, loaded: T) -> Progress<T> {
    match r.state {
        RequestState::Loaded => Progress::Done(loaded),
        s if s.is_terminal() => Progress::Failed(request_words(r)),
        _ => Progress::Pending(request_words(r)),
    }
}

/// A module request's state, with its reason when it has one.
pub fn request_words(r: &ModuleRequest) -> String {
    match &r.reason {
        Some(why) => format!("{} {} ({why})", r.name, name_of(&r.state)),
        None => format!("{} {}", r.name, name_of(&r.state)),
    }
}

/// After the first listing: every 2 s, prints the VMs that changed (a deleted one as
/// `DELETED`), as rows or one JSON object a line.
fn watch_vms(args: &ApiArgs, api: &ApiClient, limit: u32, first: Vec<Vm>) -> Result<()> {
    let mut seen: BTreeMap<String, Vm> = first.into_iter().map(|v| (v.id.clone(), v)).collect();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now: BTreeMap<String, Vm> = api
            .list_vms(limit)?
            .into_iter()
            .map(|v| (v.id.clone(), v))
            .collect();
        let changed: Vec<&Vm> = now
            .iter()
            .filter(|(id, vm)| seen.get(*id).is_none_or(|old| old != *vm))
            .map(|(_, vm)| vm)
            .collect();
        for vm in changed {
            print_item(args, vm, |v, wide| vm_rows(std::slice::from_ref(v), wide))?;
        }
        for (id, gone) in seen.iter().filter(|(id, _)| !now.contains_key(*id)) {
            match args.output() {
                Output::Json | Output::Yaml => {
                    println!("{}", serde_json::json!({"deleted": id}));
                }
                _ => println!("{} DELETED", gone.spec.name),
            }
        }
        seen = now;
    }
}

/// `vm describe`: the VM in sections, or (-o json/yaml) one object with its VM, module
/// requests and events.
fn describe(args: &ApiArgs, api: &ApiClient, id: &str) -> Result<()> {
    let vm = find_vm(api, id)?;
    let requests = api.module_requests(&vm.id)?;
    let events = vm_events(api, &vm.id)?;
    let all = serde_json::json!({"vm": vm, "module_requests": requests, "events": events});
    if matches!(args.output(), Output::Json | Output::Yaml) {
        return print(args, &all, |_, _| String::new());
    }
    let s = &vm.status;
    let spec = &vm.spec;
    let field = |k: &str, v: String| println!("{:<18}{v}", format!("{k}:"));
    field("Name", spec.name.clone());
    field("ID", vm.id.clone());
    field("Tenant", vm.tenant.clone());
    field(
        "Spec",
        format!(
            "{} vCPU, {} MiB, power {}, network {}",
            spec.vcpus,
            spec.memory_mib,
            name_of(&spec.power_state),
            spec.network.as_deref().unwrap_or("default")
        ),
    );
    field("Phase", phase_words(&vm));
    field("Node", opt(s.node.as_deref()));
    field(
        "Address",
        s.network
            .as_ref()
            .map(|n| format!("{}/{} on {} (mac {})", n.ip, n.prefix, n.network, n.mac))
            .unwrap_or_else(|| "-".into()),
    );
    field(
        "User data",
        s.user_data
            .as_ref()
            .map(|u| match u.exit_code {
                Some(c) => format!("{} (exit {c})", name_of(&u.state)),
                None => name_of(&u.state),
            })
            .unwrap_or_else(|| "-".into()),
    );
    field("Guest modules", list_or_dash(&s.guest_modules));
    field("Platform modules", list_or_dash(&s.platform_modules));
    field("Created", vm.created_at.clone());
    println!("Module requests:");
    println!("{}", indent(&request_rows(&requests)));
    println!("Interfaces:");
    let rows: Vec<Vec<String>> = s
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                opt(i.mac.as_deref()),
                i.mtu.to_string(),
                if i.up { "up" } else { "down" }.to_string(),
                list_or_dash(&i.addresses),
            ]
        })
        .collect();
    println!(
        "{}",
        indent(&render(
            &["NAME", "MAC", "MTU", "STATE", "ADDRESSES"],
            &rows
        ))
    );
    println!("Events:");
    println!("{}", indent(&crate::commands::event_rows(&events)));
    Ok(())
}

/// The audit-trail entries about VM `id` (and its module requests), oldest first.
fn vm_events(api: &ApiClient, id: &str) -> Result<Vec<Event>> {
    let mut params = EventListParams {
        limit: Some(1000),
        resource: Some(format!("vms/{id}")),
        ..EventListParams::default()
    };
    let mut out = Vec::new();
    loop {
        let page = api.events_page(&params)?;
        out.extend(page.items);
        match page.next_page_token {
            Some(t) => params.page_token = Some(t),
            None => return Ok(out),
        }
    }
}

fn indent(block: &str) -> String {
    block
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
