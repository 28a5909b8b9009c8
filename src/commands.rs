//! Client subcommands: `vm`, `module`, `tenant`, `events`.

use crate::client::ApiArgs;
use crate::table::render;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use modvisor_control_plane_api::types::{
    CatalogModule, CreateTenant, Event, ModulePolicy, ModuleRef, ModuleRequest, ModuleRequestBody,
    PowerState, Quota, Tenant, Vm, VmSpec,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    },
    /// List VMs.
    List {
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one VM.
    Get {
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
    },
    /// Delete a VM.
    Delete {
        /// VM name or id.
        id: String,
    },
    /// Run a command in a VM's guest (as tenant root, without module loading); prints its
    /// output and exits with its code: `modvisor vm exec NAME -- uname -r`.
    Exec(crate::exec_cmd::ExecArgs),
    /// Attach this terminal to a VM's serial console (raw mode; Ctrl-] detaches).
    Console(crate::console_cmd::ConsoleArgs),
}

/// `modvisor module ...`
#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Vet a .ko file offline and print the report: modinfo, signer, signature verdict,
    /// dependencies and the verdict with its reason. Exit 0 when it would be accepted, 1
    /// when rejected, 2 on usage errors.
    Inspect {
        /// The .ko file.
        file: PathBuf,
        /// The guest kernel release the module must be built for.
        #[arg(long)]
        kernel_release: Option<String>,
        /// Trusted signers: a PEM or DER certificate, or a kernel image (bzImage or
        /// vmlinux) whose embedded certificates to trust. Default: the guest kernel's.
        #[arg(long)]
        trust: Option<PathBuf>,
    },
    /// List the modules you may request (admins: the whole catalog).
    List,
    /// Ask for a module to be loaded into a VM.
    Request {
        /// VM id.
        vm: String,
        /// Module name.
        name: String,
        /// A module parameter KEY=VALUE (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
    },
    /// Show the module requests of a VM.
    Status {
        /// VM id.
        vm: String,
    },
    /// Ask for a module to be unloaded from a VM.
    Unload {
        /// VM id.
        vm: String,
        /// Module name.
        name: String,
    },
    /// Publish a .ko file for a kernel release (admin).
    Publish {
        /// The .ko file.
        file: PathBuf,
        /// The guest kernel release it was built for (default: the release its vermagic
        /// names); a registered node must run it.
        #[arg(long)]
        kernel_release: Option<String>,
        /// Module name (default: the file name without .ko).
        #[arg(long)]
        name: Option<String>,
        /// Publish even though no registered node runs that release (audited).
        #[arg(long)]
        force: bool,
    },
    /// Read or set who may request a module (admin).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `modvisor module policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show who may request a module.
    Get {
        /// Module name.
        name: String,
    },
    /// Approve a module for tenants, or revoke it: one of `--approve` or `--revoke`.
    #[command(group(clap::ArgGroup::new("verdict").required(true).args(["approve", "revoke"])))]
    Set {
        /// Module name.
        name: String,
        /// Approve it for `--tenant` (all tenants when none is named).
        #[arg(long)]
        approve: bool,
        /// Revoke it: no tenant may request it.
        #[arg(long)]
        revoke: bool,
        /// A tenant it is approved for; `*` for all (repeatable; each must exist).
        #[arg(long = "tenant", default_value = "*")]
        tenants: Vec<String>,
    },
}

/// `modvisor tenant ...`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// List tenants.
    List,
    /// Create a tenant.
    Create {
        /// Tenant name.
        name: String,
    },
    /// Show a tenant with its quota and usage.
    Get {
        /// Tenant name.
        name: String,
    },
    /// Replace a tenant's quota.
    Quota {
        /// Tenant name.
        name: String,
        /// Maximum VMs.
        #[arg(long)]
        max_vms: u64,
        /// Maximum vCPUs in all.
        #[arg(long)]
        max_vcpus: u64,
        /// Maximum memory in MiB in all.
        #[arg(long)]
        max_memory_mib: u64,
        /// API requests per second, sustained (kept as it is unless given).
        #[arg(long)]
        api_requests_per_sec: Option<u32>,
        /// API requests at once above that rate (kept unless given).
        #[arg(long)]
        api_burst: Option<u32>,
        /// API requests in flight at once (kept unless given).
        #[arg(long)]
        max_concurrent_requests: Option<u32>,
        /// Module requests per VM per minute (kept unless given).
        #[arg(long)]
        module_requests_per_vm_per_min: Option<u32>,
        /// Maximum networks (kept unless given).
        #[arg(long)]
        max_networks: Option<u64>,
    },
}

pub(crate) fn print<T: Serialize + ?Sized>(
    args: &ApiArgs,
    v: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        println!("{}", table(v));
    }
    Ok(())
}

/// An optional value as a table cell (`-` when absent).
fn opt(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

/// A serde name (`Running`, `stopped`, ...) as a table cell.
pub(crate) fn name_of<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("({e})"),
    }
}

fn vm_rows(items: &[Vm]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|vm| {
            vec![
                vm.id.clone(),
                vm.tenant.clone(),
                vm.spec.name.clone(),
                vm.spec.vcpus.to_string(),
                vm.spec.memory_mib.to_string(),
                name_of(&vm.status.phase),
                opt(vm.status.node.as_deref()),
                vm.status
                    .network
                    .as_ref()
                    .map(|n| format!("{} {}", n.network, n.ip))
                    .unwrap_or_else(|| "-".into()),
                vm.status
                    .user_data
                    .as_ref()
                    .map(|u| match u.exit_code {
                        Some(c) => format!("{} ({c})", name_of(&u.state)),
                        None => name_of(&u.state),
                    })
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render(
        &[
            "ID",
            "TENANT",
            "NAME",
            "VCPUS",
            "MEMORY_MIB",
            "PHASE",
            "NODE",
            "NETWORK",
            "USER_DATA",
        ],
        &rows,
    )
}

fn key_values(list: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for kv in list.iter().filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("{what} {kv:?} is not KEY=VALUE"))?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

/// Runs a `vm` subcommand.
/// `modvisor vm ...`; the exit status (a command's own, for `exec`).
pub fn vm(args: &ApiArgs, cmd: VmCommand) -> Result<u8> {
    let api = args.client()?;
    match cmd {
        VmCommand::Create {
            name,
            vcpus,
            memory_mib,
            modules,
            user_data_file,
            network,
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
                vcpus,
                memory_mib,
                modules: refs,
                power_state: PowerState::Running,
                user_data,
                network,
            };
            let vm = api.create_vm(&spec)?;
            print(args, &vm, |v| vm_rows(std::slice::from_ref(v)))?;
        }
        VmCommand::List { limit } => {
            if limit == 0 {
                bail!("--limit must be positive");
            }
            let items = api.list_vms(limit)?;
            print(args, &items[..], vm_rows)?;
        }
        VmCommand::Get { id } => {
            let vm = crate::exec_cmd::find_vm(&api, &id)?;
            print(args, &vm, |v| vm_rows(std::slice::from_ref(v)))?;
        }
        VmCommand::Power { id, state } => {
            let id = crate::exec_cmd::find_vm(&api, &id)?.id;
            let current = api.get_vm(&id)?;
            let mut spec = current.value.spec;
            spec.power_state = match state.as_str() {
                "stopped" => PowerState::Stopped,
                _ => PowerState::Running,
            };
            let vm = api.replace_vm(&id, &spec, current.etag.as_deref())?;
            print(args, &vm, |v| vm_rows(std::slice::from_ref(v)))?;
        }
        VmCommand::Delete { id } => {
            let id = crate::exec_cmd::find_vm(&api, &id)?.id;
            api.delete_vm(&id)?;
            if !args.json {
                println!("deleted {id}");
            }
        }
        VmCommand::Exec(exec) => return crate::exec_cmd::exec(&api, args.json, exec),
        VmCommand::Console(console) => crate::console_cmd::console(args, console)?,
    }
    Ok(0)
}

fn request_rows(items: &[ModuleRequest]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| vec![r.name.clone(), name_of(&r.state), opt(r.reason.as_deref())])
        .collect();
    render(&["MODULE", "STATE", "REASON"], &rows)
}

/// `modvisor module inspect`: prints the report; exits 1 when the module is rejected.
fn inspect(
    args: &ApiArgs,
    file: &std::path::Path,
    release: Option<&str>,
    trust: Option<&std::path::Path>,
) -> Result<()> {
    use modvisor_modules::{MemoryCatalog, ModuleCatalog, TrustStore, VettingPolicy};
    let usage = |m: String| -> ! {
        eprintln!("error: {m}");
        std::process::exit(2)
    };
    let bytes =
        std::fs::read(file).unwrap_or_else(|e| usage(format!("reading {}: {e}", file.display())));
    let mut catalog = MemoryCatalog::new();
    let trust = match trust {
        Some(t) => {
            let raw =
                std::fs::read(t).unwrap_or_else(|e| usage(format!("reading {}: {e}", t.display())));
            TrustStore::from_any(&raw).unwrap_or_else(|e| usage(format!("{}: {e}", t.display())))
        }
        None => {
            let kernel =
                modvisor_guest::kernel::resolve(|m| eprintln!("{m}")).unwrap_or_else(|e| {
                    usage(format!(
                        "no guest kernel for the default trust ({e}); pass --trust"
                    ))
                });
            for path in kernel.all_modules() {
                if let Ok(Ok(m)) =
                    std::fs::read(&path).map(|b| modvisor_modules::KernelModule::parse(&b))
                {
                    catalog.insert(m, None);
                }
            }
            let image = std::fs::read(&kernel.vmlinuz)
                .unwrap_or_else(|e| usage(format!("{}: {e}", kernel.vmlinuz.display())));
            TrustStore::from_kernel_image(&image)
                .unwrap_or_else(|e| usage(format!("{}: {e}", kernel.vmlinuz.display())))
        }
    };
    let policy = VettingPolicy::inspection(release);
    let name = file.display().to_string();
    let cat: Option<&dyn ModuleCatalog> = if catalog.is_empty() {
        None
    } else {
        Some(&catalog)
    };
    let report = modvisor_modules::inspect(&name, &bytes, &policy, &trust, None, cat);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if !report.accepted() {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs a `module` subcommand.
pub fn module(args: &ApiArgs, cmd: ModuleCommand) -> Result<()> {
    let api = match cmd {
        ModuleCommand::Inspect {
            file,
            kernel_release,
            trust,
        } => return inspect(args, &file, kernel_release.as_deref(), trust.as_deref()),
        _ => args.client()?,
    };
    match cmd {
        ModuleCommand::Inspect { .. } => {}
        ModuleCommand::List => {
            let list = api.list_modules()?;
            print(args, &list[..], |list: &[CatalogModule]| {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|m| {
                        let releases: Vec<&str> = m
                            .versions
                            .iter()
                            .map(|x| x.kernel_release.as_str())
                            .collect();
                        vec![
                            m.name.clone(),
                            releases.join(","),
                            m.policy
                                .as_ref()
                                .map(|p| p.approved.to_string())
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                render(&["MODULE", "KERNEL_RELEASES", "APPROVED"], &rows)
            })?;
        }
        ModuleCommand::Request { vm, name, params } => {
            let body = ModuleRequestBody {
                name,
                params: key_values(&params, "--param")?,
            };
            let r = api.request_module(&vm, &body)?;
            print(args, &r, |v| request_rows(std::slice::from_ref(v)))?;
        }
        ModuleCommand::Status { vm } => {
            let list = api.module_requests(&vm)?;
            print(args, &list[..], request_rows)?;
        }
        ModuleCommand::Unload { vm, name } => {
            let r = api.unload_module(&vm, &name)?;
            print(args, &r, |v| request_rows(std::slice::from_ref(v)))?;
        }
        ModuleCommand::Publish {
            file,
            kernel_release,
            name,
            force,
        } => {
            let name = match name {
                Some(n) => n,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".ko"))
                    .map(str::to_string)
                    .with_context(|| {
                        format!("{}: not a .ko file name; pass --name", file.display())
                    })?,
            };
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let kernel_release = match kernel_release {
                Some(r) => r,
                None => modvisor_modules::KernelModule::parse(&bytes)
                    .ok()
                    .and_then(|m| m.modinfo().vermagic_release().map(str::to_string))
                    .with_context(|| {
                        format!(
                            "{}: no vermagic to take the kernel release from; pass --kernel-release",
                            file.display()
                        )
                    })?,
            };
            let v = api.publish_module(&name, &kernel_release, force, bytes)?;
            print(args, &v, |v| {
                render(
                    &["MODULE", "KERNEL_RELEASE", "SHA256", "SIZE"],
                    &[vec![
                        v.name.clone(),
                        v.kernel_release.clone(),
                        v.sha256.clone(),
                        v.size.to_string(),
                    ]],
                )
            })?;
        }
        ModuleCommand::Policy(PolicyCommand::Get { name }) => {
            let v = api.get_policy(&name)?;
            print(args, &v, |v| policy_line(&name, v))?;
        }
        ModuleCommand::Policy(PolicyCommand::Set {
            name,
            approve,
            revoke,
            tenants,
        }) => {
            // clap takes exactly one of --approve and --revoke.
            let policy = ModulePolicy {
                approved: approve && !revoke,
                tenants: if revoke { Vec::new() } else { tenants },
            };
            let v = api.set_policy(&name, &policy)?;
            print(args, &v, |v| policy_line(&name, v))?;
        }
    }
    Ok(())
}

fn tenant_rows(items: &[Tenant]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| {
            let (q, u) = (&t.quota, &t.usage);
            vec![
                t.name.clone(),
                format!("{}/{}", u.vms, q.max_vms),
                format!("{}/{}", u.vcpus, q.max_vcpus),
                format!("{}/{}", u.memory_mib, q.max_memory_mib),
            ]
        })
        .collect();
    render(&["TENANT", "VMS", "VCPUS", "MEMORY_MIB"], &rows)
}

/// Runs a `tenant` subcommand.
pub fn tenant(args: &ApiArgs, cmd: TenantCommand) -> Result<()> {
    let api = args.client()?;
    let one = match cmd {
        TenantCommand::List => {
            let all = api.list_tenants()?;
            return print(args, &all[..], tenant_rows);
        }
        TenantCommand::Create { name } => api.create_tenant(&CreateTenant { name, quota: None })?,
        TenantCommand::Get { name } => api.get_tenant(&name)?,
        TenantCommand::Quota {
            name,
            max_vms,
            max_vcpus,
            max_memory_mib,
            api_requests_per_sec,
            api_burst,
            max_concurrent_requests,
            module_requests_per_vm_per_min,
            max_networks,
        } => {
            let now = api.get_tenant(&name)?.quota;
            let quota = Quota {
                max_vms,
                max_vcpus,
                max_memory_mib,
                api_requests_per_sec: api_requests_per_sec.unwrap_or(now.api_requests_per_sec),
                api_burst: api_burst.unwrap_or(now.api_burst),
                max_concurrent_requests: max_concurrent_requests
                    .unwrap_or(now.max_concurrent_requests),
                module_requests_per_vm_per_min: module_requests_per_vm_per_min
                    .unwrap_or(now.module_requests_per_vm_per_min),
                max_networks: max_networks.unwrap_or(now.max_networks),
            };
            api.set_quota(&name, &quota)?
        }
    };
    print(args, &one, |t| tenant_rows(std::slice::from_ref(t)))
}

/// Prints the audit trail (all pages).
pub fn events(args: &ApiArgs, limit: u32) -> Result<()> {
    if limit == 0 {
        bail!("--limit must be positive");
    }
    let items = args.client()?.events(limit)?;
    print(args, &items[..], |items: &[Event]| {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.time.clone(),
                    e.actor.clone(),
                    e.action.clone(),
                    e.resource.clone(),
                    name_of(&e.outcome),
                    opt(e.detail.as_deref()),
                ]
            })
            .collect();
        render(
            &[
                "SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "OUTCOME", "DETAIL",
            ],
            &rows,
        )
    })
}

/// A module's policy in one line.
fn policy_line(name: &str, p: &ModulePolicy) -> String {
    match (p.approved, p.tenants.as_slice()) {
        (false, _) | (true, []) => format!("{name}: not approved"),
        (true, tenants) => format!("{name}: approved for {}", tenants.join(", ")),
    }
}
