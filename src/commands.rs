//! Client subcommands: `vm`, `module`, `tenant`, `events`.

use crate::client::{Api, ApiArgs};
use crate::table::{cell, render};
use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};
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
    },
    /// List VMs.
    List {
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one VM.
    Get {
        /// VM id.
        id: String,
    },
    /// Ask for a VM to run or stop (a conditional PUT of its spec).
    Power {
        /// VM id.
        id: String,
        /// `running` or `stopped`.
        #[arg(value_parser = ["running", "stopped"])]
        state: String,
    },
    /// Delete a VM.
    Delete {
        /// VM id.
        id: String,
    },
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
        /// The kernel release it was built for.
        #[arg(long)]
        kernel_release: String,
        /// Module name (default: the file name without .ko).
        #[arg(long)]
        name: Option<String>,
    },
    /// Set who may request a module (admin).
    Policy {
        /// Module name.
        name: String,
        /// Approve (omit to revoke).
        #[arg(long)]
        approve: bool,
        /// Tenants it is approved for; `*` for all (repeatable).
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
    },
}

fn print(args: &ApiArgs, v: &Value, table: impl FnOnce(&Value) -> String) {
    if args.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", table(v));
    }
}

fn vm_rows(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|vm| {
            vec![
                cell(&vm["id"]),
                cell(&vm["tenant"]),
                cell(&vm["spec"]["name"]),
                cell(&vm["spec"]["vcpus"]),
                cell(&vm["spec"]["memory_mib"]),
                cell(&vm["status"]["phase"]),
                cell(&vm["status"]["node"]),
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
        ],
        &rows,
    )
}

fn key_values(list: &[String], what: &str) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for kv in list.iter().filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("{what} {kv:?} is not KEY=VALUE"))?;
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(map)
}

/// Runs a `vm` subcommand.
pub fn vm(args: &ApiArgs, cmd: VmCommand) -> Result<()> {
    let api = Api::new(args)?;
    match cmd {
        VmCommand::Create {
            name,
            vcpus,
            memory_mib,
            modules,
        } => {
            let mut mods = Vec::new();
            for m in &modules {
                let (name, params) = m.split_once(':').unwrap_or((m, ""));
                let params: Vec<String> = params.split(',').map(str::to_string).collect();
                mods.push(
                    json!({"name": name, "params": key_values(&params, "module parameter")?}),
                );
            }
            let body =
                json!({"name": name, "vcpus": vcpus, "memory_mib": memory_mib, "modules": mods});
            let vm = api.send_json(Method::POST, "/v1/vms", &body, None)?;
            print(args, &vm, |v| vm_rows(std::slice::from_ref(v)));
        }
        VmCommand::List { limit } => {
            let items = api.get_all("/v1/vms", limit)?;
            print(args, &Value::Array(items.clone()), |_| vm_rows(&items));
        }
        VmCommand::Get { id } => {
            let vm = api.get(&format!("/v1/vms/{id}"))?;
            print(args, &vm, |v| vm_rows(std::slice::from_ref(v)));
        }
        VmCommand::Power { id, state } => {
            let (vm, etag) = api.get_with_etag(&format!("/v1/vms/{id}"))?;
            let mut spec = vm["spec"].clone();
            spec["power_state"] = Value::String(state);
            let vm = api.send_json(
                Method::PUT,
                &format!("/v1/vms/{id}"),
                &spec,
                etag.as_deref(),
            )?;
            print(args, &vm, |v| vm_rows(std::slice::from_ref(v)));
        }
        VmCommand::Delete { id } => {
            api.delete(&format!("/v1/vms/{id}"))?;
            if !args.json {
                println!("deleted {id}");
            }
        }
    }
    Ok(())
}

fn request_rows(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| vec![cell(&r["name"]), cell(&r["state"]), cell(&r["reason"])])
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
        _ => Api::new(args)?,
    };
    match cmd {
        ModuleCommand::Inspect { .. } => {}
        ModuleCommand::List => {
            let list = api.get("/v1/modules")?;
            print(args, &list, |v| {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .map(|a| a.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        let releases: Vec<String> = m["versions"]
                            .as_array()
                            .map(|a| a.iter().map(|x| cell(&x["kernel_release"])).collect())
                            .unwrap_or_default();
                        vec![
                            cell(&m["name"]),
                            releases.join(","),
                            cell(&m["policy"]["approved"]),
                        ]
                    })
                    .collect();
                render(&["MODULE", "KERNEL_RELEASES", "APPROVED"], &rows)
            });
        }
        ModuleCommand::Request { vm, name, params } => {
            let body = json!({"name": name, "params": key_values(&params, "--param")?});
            let r = api.send_json(Method::POST, &format!("/v1/vms/{vm}/modules"), &body, None)?;
            print(args, &r, |v| request_rows(std::slice::from_ref(v)));
        }
        ModuleCommand::Status { vm } => {
            let list = api.get(&format!("/v1/vms/{vm}/modules"))?;
            print(args, &list, |v| {
                request_rows(v.as_array().map(|a| a.as_slice()).unwrap_or_default())
            });
        }
        ModuleCommand::Unload { vm, name } => {
            let r = api
                .delete(&format!("/v1/vms/{vm}/modules/{name}"))?
                .unwrap_or(Value::Null);
            print(args, &r, |v| request_rows(std::slice::from_ref(v)));
        }
        ModuleCommand::Publish {
            file,
            kernel_release,
            name,
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
            let v = api.put_bytes(
                &format!("/v1/admin/modules/{name}?kernel_release={kernel_release}"),
                bytes,
            )?;
            print(args, &v, |v| {
                render(
                    &["MODULE", "KERNEL_RELEASE", "SHA256", "SIZE"],
                    &[vec![
                        cell(&v["name"]),
                        cell(&v["kernel_release"]),
                        cell(&v["sha256"]),
                        cell(&v["size"]),
                    ]],
                )
            });
        }
        ModuleCommand::Policy {
            name,
            approve,
            tenants,
        } => {
            let body = json!({"approved": approve, "tenants": tenants});
            let v = api.send_json(
                Method::PUT,
                &format!("/v1/admin/modules/{name}/policy"),
                &body,
                None,
            )?;
            print(args, &v, |v| {
                format!(
                    "{name}: approved={} tenants={}",
                    v["approved"], v["tenants"]
                )
            });
        }
    }
    Ok(())
}

fn tenant_rows(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| {
            let q = &t["quota"];
            let u = &t["usage"];
            vec![
                cell(&t["name"]),
                format!("{}/{}", cell(&u["vms"]), cell(&q["max_vms"])),
                format!("{}/{}", cell(&u["vcpus"]), cell(&q["max_vcpus"])),
                format!("{}/{}", cell(&u["memory_mib"]), cell(&q["max_memory_mib"])),
            ]
        })
        .collect();
    render(&["TENANT", "VMS", "VCPUS", "MEMORY_MIB"], &rows)
}

/// Runs a `tenant` subcommand.
pub fn tenant(args: &ApiArgs, cmd: TenantCommand) -> Result<()> {
    let api = Api::new(args)?;
    let v = match cmd {
        TenantCommand::List => api.get("/v1/tenants")?,
        TenantCommand::Create { name } => {
            api.send_json(Method::POST, "/v1/tenants", &json!({"name": name}), None)?
        }
        TenantCommand::Get { name } => api.get(&format!("/v1/tenants/{name}"))?,
        TenantCommand::Quota {
            name,
            max_vms,
            max_vcpus,
            max_memory_mib,
        } => {
            let body = json!({"max_vms": max_vms, "max_vcpus": max_vcpus, "max_memory_mib": max_memory_mib});
            api.send_json(
                Method::PUT,
                &format!("/v1/tenants/{name}/quota"),
                &body,
                None,
            )?
        }
    };
    print(args, &v, |v| match v.as_array() {
        Some(a) => tenant_rows(a),
        None => tenant_rows(std::slice::from_ref(v)),
    });
    Ok(())
}

/// Prints the audit trail (all pages).
pub fn events(args: &ApiArgs, limit: u32) -> Result<()> {
    let items = Api::new(args)?.get_all("/v1/events", limit)?;
    print(args, &Value::Array(items.clone()), |_| {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|e| {
                vec![
                    cell(&e["seq"]),
                    cell(&e["time"]),
                    cell(&e["actor"]),
                    cell(&e["action"]),
                    cell(&e["resource"]),
                    cell(&e["outcome"]),
                    cell(&e["detail"]),
                ]
            })
            .collect();
        render(
            &[
                "SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "OUTCOME", "DETAIL",
            ],
            &rows,
        )
    });
    Ok(())
}
