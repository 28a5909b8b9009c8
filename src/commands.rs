//! Client subcommands: `module`, `tenant`, `events` (`vm` is [`crate::vm_cmd`]).

use crate::client::{print, print_item, ApiArgs};
use crate::exec_cmd::find_vm;
use crate::table::{key_values, name_of, opt, render};
use crate::vm_cmd::{request_progress, request_rows};
use crate::wait::{until, Progress, WaitArgs};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use modvisor_control_plane_api::types::{
    CatalogModule, CreateTenant, Event, EventListParams, ModulePolicy, ModuleRequestBody, Quota,
    Tenant,
};
use std::path::PathBuf;

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
    /// Build an out-of-tree module (a directory with a Kbuild or Makefile) against the
    /// headers of a guest kernel release, fetched with that kernel as a pair into the
    /// cache; reproducible (the same sources give the same bytes). Prints each .ko's
    /// sha256. Needs make, gcc-12 and objcopy on this host.
    Build {
        /// The module's source directory.
        src: PathBuf,
        /// The guest kernel release (default: Debian's current cloud kernel).
        #[arg(long)]
        kernel_release: Option<String>,
        /// Where the .ko files go.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Sign a module with an operator key, in the kernel's format (what
    /// `scripts/sign-file` appends: PKCS#7, SHA-256). Writes in place unless --out.
    Sign {
        /// The unsigned .ko file.
        file: PathBuf,
        /// The operator's private key (PKCS#8 PEM, from `module keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The operator's certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Write the signed module here instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Make an operator key pair for signing modules: an RSA key (written 0600) and a
    /// self-signed certificate (code signing) to give the admin.
    Keygen {
        /// The certificate's common name.
        #[arg(long)]
        name: String,
        /// Where the private key goes (never overwritten).
        #[arg(long, default_value = "operator.pem")]
        key: PathBuf,
        /// Where the certificate goes (never overwritten).
        #[arg(long, default_value = "operator.crt")]
        cert: PathBuf,
        /// RSA key size (2048 to 4096).
        #[arg(long, default_value_t = 4096)]
        bits: usize,
        /// Days the certificate is valid for (the kernel does not check it; modvisor's
        /// vetting neither).
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// List the modules you may request (admins: the whole catalog).
    List,
    /// Ask for a module to be loaded into a VM.
    Request {
        /// VM name or id.
        vm: String,
        /// Module name.
        name: String,
        /// A module parameter KEY=VALUE (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
        /// With --wait: until it is Loaded.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show the module requests of a VM.
    Status {
        /// VM name or id.
        vm: String,
    },
    /// Ask for a module to be unloaded from a VM.
    Unload {
        /// VM name or id.
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
        /// Who may sign it (repeatable): `kernel` (the guest kernel's own keys) or a
        /// certificate of `modvisor trust list`. Default: as the policy says now.
        #[arg(long = "signer")]
        signers: Vec<String>,
        /// A license to accept beyond the GPL-compatible ones, e.g. `Proprietary`
        /// (repeatable; the module then taints the guest kernel). Default: as the policy
        /// says now; `--license none` accepts none again.
        #[arg(long = "license")]
        licenses: Vec<String>,
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
    if args.json() {
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
        ModuleCommand::Build {
            src,
            kernel_release,
            out,
        } => {
            return crate::module_tools_cmd::build(
                &src,
                kernel_release.as_deref(),
                &out,
                args.json(),
            )
        }
        ModuleCommand::Sign {
            file,
            key,
            cert,
            out,
        } => return crate::module_tools_cmd::sign(&file, &key, &cert, out.as_deref()),
        ModuleCommand::Keygen {
            name,
            key,
            cert,
            bits,
            days,
        } => return crate::module_tools_cmd::keygen(&name, &key, &cert, bits, days),
        _ => args.client()?,
    };
    match cmd {
        ModuleCommand::Inspect { .. }
        | ModuleCommand::Build { .. }
        | ModuleCommand::Sign { .. }
        | ModuleCommand::Keygen { .. } => {}
        ModuleCommand::List => {
            let list = api.list_modules()?;
            print(args, &list[..], |list: &[CatalogModule], _| {
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
        ModuleCommand::Request {
            vm,
            name,
            params,
            wait,
        } => {
            let vm = find_vm(&api, &vm)?.id;
            let body = ModuleRequestBody {
                name,
                params: key_values(&params, "--param")?,
            };
            let mut r = api.request_module(&vm, &body)?;
            if wait.wait {
                r = until(wait, &format!("module {} is Loaded", r.name), || {
                    let now = api
                        .module_requests(&vm)?
                        .into_iter()
                        .find(|x| x.name == r.name)
                        .with_context(|| format!("the request for {} is gone", r.name))?;
                    // Loaded, and in the guest's own list as its node last reported it
                    // (what `status` then shows of the guest, its taints included).
                    Ok(match request_progress(&now, now.clone()) {
                        Progress::Done(done) => {
                            let seen = api.get_vm(&vm)?.value.status.guest_modules;
                            if seen.contains(&done.name) {
                                Progress::Done(done)
                            } else {
                                Progress::Pending(format!(
                                    "{} Loaded, not yet in the guest's list as its node last saw it",
                                    done.name
                                ))
                            }
                        }
                        other => other,
                    })
                })?;
            }
            print(args, &r, |v, _| request_rows(std::slice::from_ref(v)))?;
        }
        ModuleCommand::Status { vm } => {
            let list = api.module_requests(&find_vm(&api, &vm)?.id)?;
            print(args, &list[..], |l, _| request_rows(l))?;
        }
        ModuleCommand::Unload { vm, name } => {
            let r = api.unload_module(&find_vm(&api, &vm)?.id, &name)?;
            print(args, &r, |v, _| request_rows(std::slice::from_ref(v)))?;
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
            print(args, &v, |v, _| {
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
            print(args, &v, |v, _| policy_line(&name, v))?;
        }
        ModuleCommand::Policy(PolicyCommand::Set {
            name,
            approve,
            revoke,
            tenants,
            signers,
            licenses,
        }) => {
            let now = if signers.is_empty() || licenses.is_empty() {
                Some(api.get_policy(&name)?)
            } else {
                None
            };
            let signers = match &now {
                Some(p) if signers.is_empty() => p.signers.clone(),
                _ => signers,
            };
            if licenses.len() > 1 && licenses.iter().any(|l| l == "none") {
                bail!("--license none accepts no license beyond the GPL-compatible ones: give it alone");
            }
            let licenses = match &now {
                Some(p) if licenses.is_empty() => p.licenses.clone(),
                _ if licenses == ["none"] => Vec::new(),
                _ => licenses,
            };
            // clap takes exactly one of --approve and --revoke.
            let policy = ModulePolicy {
                approved: approve && !revoke,
                tenants: if revoke { Vec::new() } else { tenants },
                signers,
                licenses,
            };
            let v = api.set_policy(&name, &policy)?;
            print(args, &v, |v, _| policy_line(&name, v))?;
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
            return print(args, &all[..], |t, _| tenant_rows(t));
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
    print(args, &one, |t, _| tenant_rows(std::slice::from_ref(t)))
}

/// The audit trail as a table.
pub fn event_rows(items: &[Event]) -> String {
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
}

/// Prints the audit trail (all pages); with `follow`, then each new event as it comes
/// (polled every second, until interrupted).
pub fn events(args: &ApiArgs, limit: u32, follow: bool) -> Result<()> {
    if limit == 0 {
        bail!("--limit must be positive");
    }
    let api = args.client()?;
    let items = api.events(limit)?;
    print(args, &items[..], |items: &[Event], _| event_rows(items))?;
    if !follow {
        return Ok(());
    }
    let mut last = items.last().map(|e| e.seq);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let page = api.events_page(&EventListParams {
            limit: Some(limit),
            after_seq: last,
            ..EventListParams::default()
        })?;
        for e in &page.items {
            print_item(args, e, |e, _| event_rows(std::slice::from_ref(e)))?;
            last = Some(e.seq);
        }
    }
}

/// A module's policy in one line.
fn policy_line(name: &str, p: &ModulePolicy) -> String {
    let line = match (p.approved, p.tenants.as_slice()) {
        (false, _) | (true, []) => format!("{name}: not approved"),
        (true, tenants) => format!("{name}: approved for {}", tenants.join(", ")),
    };
    // Only what differs from the default (the guest kernel's own keys, GPL-compatible
    // licenses) is said.
    let line = if p.signers == [modvisor_control_plane_api::types::KERNEL_SIGNER] {
        line
    } else {
        format!("{line}; signers: {}", p.signers.join(", "))
    };
    if p.licenses.is_empty() {
        line
    } else {
        format!("{line}; also licenses: {}", p.licenses.join(", "))
    }
}
