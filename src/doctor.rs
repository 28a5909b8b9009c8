//! What this host needs to run modvisor, found or missing, and how to get it.
//!
//! One list of checks serves `modvisor doctor` (a table), `modvisor up` (stops before it
//! writes anything when a required piece is missing, or installs it with
//! `--install-missing`) and `.ci/run` (`doctor --install-missing --tests`). Nothing here
//! installs anything unless asked to.

use crate::serve::DriverArg;
use anyhow::{bail, Context, Result};
use clap::Args;
use modvisor_guest::kernel::{self, GuestKernel};
use modvisor_node_agent::hostcaps;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's package with the QEMU the `qemu` driver runs.
const QEMU_PACKAGE: &str = "qemu-system-x86";
/// The QEMU binary the `qemu` driver runs.
const QEMU_BINARY: &str = "qemu-system-x86_64";

/// What the caller is about to run, hence what it needs.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// The hypervisor driver node agents will use (`None`: no node agent runs).
    pub driver: Option<DriverArg>,
    /// Whether VM processes are jailed.
    pub jail: bool,
    /// Whether the guest kernel is needed (node agents, or seeding the catalog).
    pub kernel: bool,
    /// Whether the test suite's own needs count too (the guest kernel's headers, make).
    pub tests: bool,
}

/// Arguments of `modvisor doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The hypervisor driver to check for.
    #[arg(long, value_enum, default_value_t = DriverArg::Auto)]
    driver: DriverArg,
    /// Check for a jail (`on`, the default) or not (`off`).
    #[arg(long, value_enum, default_value_t = crate::serve::JailSwitch::On)]
    jail: crate::serve::JailSwitch,
    /// Also check what the test suite needs (the guest kernel's headers, make, jq, etcd, protoc).
    #[arg(long)]
    tests: bool,
    /// Install what is missing with apt-get (Debian/Ubuntu, as root), then check again.
    #[arg(long)]
    install_missing: bool,
}

/// Whether a prerequisite is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Present; the text says which version or what.
    Found(String),
    /// Absent and required: nothing that needs it can run.
    Missing(String),
    /// Absent, but fetched by `modvisor up` itself when it starts.
    Fetched(String),
    /// For information (not required).
    Note(String),
}

/// How to get a missing prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Debian packages, installed with apt-get.
    Apt(Vec<String>),
    /// `apt-get update` (apt does not know a package it needs yet).
    AptUpdate,
    /// `modvisor guest fetch` (`up` does it itself): this Debian package into the cache.
    FetchGuest(String),
    /// Something an operator has to do by hand.
    Manual(String),
}

impl Fix {
    /// The command (or the instruction) that provides the prerequisite.
    pub fn command(&self) -> String {
        match self {
            Fix::Apt(packages) => format!(
                "apt-get install -y --no-install-recommends {}",
                packages.join(" ")
            ),
            Fix::AptUpdate => "apt-get update".into(),
            Fix::FetchGuest(package) => {
                format!("modvisor guest fetch (apt-get download {package}; `up` does it)")
            }
            Fix::Manual(how) => how.clone(),
        }
    }
}

/// One prerequisite and whether this host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What it is.
    pub what: String,
    /// Found, missing, fetched at start, or a note.
    pub state: State,
    /// How to get it, when it is not found.
    pub fix: Option<Fix>,
}

impl Check {
    fn found(what: &str, version: impl Into<String>) -> Check {
        Check {
            what: what.into(),
            state: State::Found(version.into()),
            fix: None,
        }
    }

    fn missing(what: &str, why: impl Into<String>, fix: Fix) -> Check {
        Check {
            what: what.into(),
            state: State::Missing(why.into()),
            fix: Some(fix),
        }
    }

    /// Whether it blocks whatever needs it.
    pub fn is_missing(&self) -> bool {
        matches!(self.state, State::Missing(_))
    }
}

/// Finds an executable on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    modvisor_node_agent::qemu::which(name)
}

/// The first line `program --version` prints, or why it could not run.
fn version_line(program: &Path) -> String {
    match Command::new(program).arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        Err(e) => format!("cannot run it: {e}"),
    }
}

/// Runs every check `needs` calls for, in the order `doctor` prints them.
pub fn checks(needs: &Needs) -> Vec<Check> {
    let mut out = Vec::new();
    let hw = hostcaps::hardware_virtualization();
    let kvm = hostcaps::kvm_device_usable();
    if let Some(driver) = needs.driver {
        out.push(hypervisor(driver, hw));
        out.push(Check {
            what: "acceleration".into(),
            state: State::Note(if hw && kvm {
                "KVM: hardware virtualization and /dev/kvm".into()
            } else {
                format!(
                    "TCG (software emulation, a guest boots in seconds): {}",
                    hostcaps::describe()
                )
            }),
            fix: None,
        });
        if needs.jail {
            out.extend(jail());
        }
        out.extend(networking());
    }
    if needs.kernel || needs.tests {
        out.extend(guest_kernel(needs.tests));
        out.push(guest_userland());
    }
    if needs.tests {
        // make builds the sample module; the README's examples (run by a test) use jq;
        // the store's tests run a real etcd member; the etcd store's client is generated
        // with protoc when modvisor is built with `--features etcd`.
        for (tool, package) in [("make", "make"), ("jq", "jq"), ("etcd", "etcd-server")] {
            out.push(match which(tool) {
                Some(p) => Check::found(tool, version_line(&p)),
                None => Check::missing(tool, "not on PATH", Fix::Apt(vec![package.into()])),
            });
        }
        out.push(protoc());
    }
    out
}

/// protoc and protobuf's well-known types, which etcd-client's build needs (`--features
/// etcd`).
fn protoc() -> Check {
    let fix = Fix::Apt(vec!["protobuf-compiler".into(), "libprotobuf-dev".into()]);
    match which("protoc") {
        None => Check::missing("protoc", "not on PATH", fix),
        Some(_) if !Path::new(PROTOBUF_TYPES).is_file() => Check::missing(
            "protoc",
            format!("{PROTOBUF_TYPES} is missing (protobuf's well-known types)"),
            fix,
        ),
        Some(p) => Check::found("protoc", version_line(&p)),
    }
}

/// One of protobuf's well-known types, as Debian's libprotobuf-dev installs them.
const PROTOBUF_TYPES: &str = "/usr/include/google/protobuf/descriptor.proto";

fn hypervisor(driver: DriverArg, hw: bool) -> Check {
    let qemu = matches!(driver, DriverArg::Qemu) || (matches!(driver, DriverArg::Auto) && !hw);
    if !qemu {
        if !hw {
            return Check::missing(
                "hypervisor (kvm driver)",
                format!(
                    "our vmm needs hardware virtualization: {}",
                    hostcaps::describe()
                ),
                Fix::Manual("a host with VT-x/AMD-V, or --driver qemu".into()),
            );
        }
        return Check::found("hypervisor (kvm driver)", "modvisor's own vmm (built in)");
    }
    let binary = std::env::var_os("MODVISOR_QEMU")
        .map(PathBuf::from)
        .or_else(|| which(QEMU_BINARY));
    match binary {
        Some(p) if p.is_file() => Check::found(
            "hypervisor (qemu driver)",
            format!("{} ({})", version_line(&p), p.display()),
        ),
        _ => Check::missing(
            "hypervisor (qemu driver)",
            format!("{QEMU_BINARY} is not on PATH"),
            Fix::Apt(vec![QEMU_PACKAGE.into()]),
        ),
    }
}

/// What tenant networks need on a node: iproute2 (`ip`, `bridge`) for the namespace,
/// bridges, VXLAN and taps, and nftables for isolation.
fn networking() -> Vec<Check> {
    [
        ("ip", "iproute2"),
        ("bridge", "iproute2"),
        ("nft", "nftables"),
    ]
    .into_iter()
    .map(|(tool, package)| {
        let what = format!("tenant networks: {tool}");
        match which(tool) {
            Some(p) => Check::found(&what, p.display().to_string()),
            None => Check::missing(
                &what,
                format!("{tool} is not on PATH"),
                Fix::Apt(vec![package.into()]),
            ),
        }
    })
    .collect()
}

fn jail() -> Vec<Check> {
    let root = nix::unistd::geteuid().is_root();
    let mut out = vec![if root {
        Check::found("jail: root", "uid 0")
    } else {
        Check::missing(
            "jail: root",
            "this process is not root: namespaces, pivot_root, cgroups and per-VM uids need it",
            Fix::Manual("run as root, or --jail off (development only)".into()),
        )
    }];
    if root {
        out.push(match modvisor_jailer::check_host() {
            Ok(c) => Check::found(
                "jail: cgroup controllers",
                format!(
                    "{:?}: {}",
                    c.version,
                    modvisor_jailer::cgroup::CONTROLLERS.join(", ")
                ),
            ),
            Err(e) => Check::missing(
                "jail: cgroup controllers",
                e.to_string(),
                Fix::Manual(
                    "mount cgroup v1 hierarchies for pids, memory and cpu, or enable them in cgroup2's subtree_control".into(),
                ),
            ),
        });
    }
    out
}

/// The guest kernel (and, for the tests, its headers).
fn guest_kernel(tests: bool) -> Vec<Check> {
    const WHAT: &str = "guest kernel";
    if let Some(dir) = std::env::var_os("MODVISOR_KERNEL_DIR") {
        return vec![match GuestKernel::open(Path::new(&dir), None) {
            Ok(k) => Check::found(WHAT, format!("{} (MODVISOR_KERNEL_DIR)", k.release)),
            Err(e) => Check::missing(
                WHAT,
                format!("MODVISOR_KERNEL_DIR: {e}"),
                Fix::Manual("point MODVISOR_KERNEL_DIR at an unpacked kernel tree".into()),
            ),
        }];
    }
    for tool in ["apt-get", "apt-cache", "dpkg"] {
        if which(tool).is_none() {
            return vec![Check::missing(
                WHAT,
                format!("{tool} is not on PATH: Debian's kernel cannot be fetched"),
                Fix::Manual("MODVISOR_KERNEL_DIR=<an unpacked kernel tree>".into()),
            )];
        }
    }
    let package = match kernel::current_cloud_package() {
        Ok(p) => p,
        Err(_) => {
            return vec![Check::missing(
                WHAT,
                format!("apt does not know {}", kernel::CLOUD_METAPACKAGE),
                Fix::AptUpdate,
            )]
        }
    };
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    let root = kernel::cache_dir().join("kernels").join(&release);
    let mut out = vec![if root.join(".complete").exists() {
        Check::found(WHAT, format!("{release} ({})", root.display()))
    } else {
        Check {
            what: WHAT.into(),
            state: State::Fetched(format!("{release} is not in {}", root.display())),
            fix: Some(Fix::FetchGuest(package.clone())),
        }
    }];
    if tests {
        let headers = format!("linux-headers-{release}");
        out.push(if Path::new("/usr/src").join(&headers).is_dir() {
            Check::found("guest kernel headers", headers)
        } else {
            Check::missing(
                "guest kernel headers",
                format!("/usr/src/{headers} is missing (the sample module builds against it)"),
                Fix::Apt(vec![headers]),
            )
        });
    }
    out
}

/// The tenant's userland in the guest (Debian's `busybox-static`).
fn guest_userland() -> Check {
    const WHAT: &str = "guest userland";
    use modvisor_guest::userland::{Userland, BUSYBOX_PACKAGE};
    if let Some(dir) = std::env::var_os("MODVISOR_BUSYBOX_DIR") {
        return match Userland::open(Path::new(&dir), "local") {
            Ok(u) => Check::found(
                WHAT,
                format!(
                    "busybox, {} applets (MODVISOR_BUSYBOX_DIR)",
                    u.applets.len()
                ),
            ),
            Err(e) => Check::missing(
                WHAT,
                format!("MODVISOR_BUSYBOX_DIR: {e}"),
                Fix::Manual("point MODVISOR_BUSYBOX_DIR at an unpacked busybox-static".into()),
            ),
        };
    }
    let version = match modvisor_guest::debian::candidate_version(BUSYBOX_PACKAGE) {
        Ok(v) => v,
        Err(_) => {
            return Check::missing(
                WHAT,
                format!("apt does not know {BUSYBOX_PACKAGE}"),
                Fix::AptUpdate,
            )
        }
    };
    let root = modvisor_guest::userland::cached_tree(&kernel::cache_dir(), &version);
    if root.join(".complete").exists() {
        Check::found(
            WHAT,
            format!("{BUSYBOX_PACKAGE} {version} ({})", root.display()),
        )
    } else {
        Check {
            what: WHAT.into(),
            state: State::Fetched(format!(
                "{BUSYBOX_PACKAGE} {version} is not in {}",
                root.display()
            )),
            fix: Some(Fix::FetchGuest(BUSYBOX_PACKAGE.into())),
        }
    }
}

/// The checks as a table: what, state, version or detail, how to fix.
pub fn render(checks: &[Check]) -> String {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            let (state, detail) = match &c.state {
                State::Found(v) => ("found", v.clone()),
                State::Missing(v) => ("MISSING", v.clone()),
                State::Fetched(v) => ("fetched at start", v.clone()),
                State::Note(v) => ("note", v.clone()),
            };
            vec![
                c.what.clone(),
                state.into(),
                detail,
                c.fix
                    .as_ref()
                    .map(Fix::command)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    crate::table::render(&["WHAT", "STATE", "VERSION / DETAIL", "HOW TO FIX"], &rows)
}

/// What the missing checks among `found` ask apt for: packages (with why), and whether
/// apt's index needs an update.
fn apt_fixes(found: &[Check]) -> (Vec<(String, String)>, bool) {
    let mut packages: Vec<(String, String)> = Vec::new();
    let mut update = false;
    for c in found.iter().filter(|c| c.is_missing()) {
        match &c.fix {
            Some(Fix::Apt(p)) => packages.extend(p.iter().map(|p| (p.clone(), c.what.clone()))),
            Some(Fix::AptUpdate) => update = true,
            _ => {}
        }
    }
    (packages, update)
}

/// Installs with apt-get what the missing checks of `needs` name (`apt-get update` once
/// first, then the checks again: a stale index can name packages that are gone, such as
/// the headers of a guest kernel Debian has moved past), printing what and why, with
/// apt's own progress. Needs root on Debian/Ubuntu.
pub fn install_missing(needs: &Needs) -> Result<()> {
    let (packages, update) = apt_fixes(&checks(needs));
    if packages.is_empty() && !update {
        return Ok(());
    }
    if which("apt-get").is_none() {
        bail!("--install-missing needs apt-get (Debian or Ubuntu); install the missing pieces by hand");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("--install-missing runs apt-get and needs root");
    }
    eprintln!("== apt-get update (once, before installing)");
    apt(&["update"])?;
    let (packages, _) = apt_fixes(&checks(needs));
    if packages.is_empty() {
        return Ok(());
    }
    for (p, why) in &packages {
        eprintln!("== installing {p}: {why} is missing");
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(packages.iter().map(|(p, _)| p.as_str()));
    apt(&args)
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running apt-get {}", args.join(" ")))?;
    if !status.success() {
        bail!("apt-get {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// What `up` and `node-agent` do before they start anything: check; with `install`,
/// install what is missing and check again; stop with one line per missing piece.
pub fn preflight(needs: &Needs, install: bool) -> Result<Vec<Check>> {
    let mut found = checks(needs);
    if install && found.iter().any(Check::is_missing) {
        install_missing(needs)?;
        found = checks(needs);
    }
    let missing: Vec<&Check> = found.iter().filter(|c| c.is_missing()).collect();
    if missing.is_empty() {
        return Ok(found);
    }
    for c in &missing {
        let why = match &c.state {
            State::Missing(why) => why.as_str(),
            _ => "",
        };
        eprintln!(
            "missing: {} ({why}); fix: {}",
            c.what,
            c.fix.as_ref().map(Fix::command).unwrap_or_default()
        );
    }
    bail!(
        "{} prerequisite(s) missing; nothing was started. `--install-missing` installs them with apt-get; `modvisor doctor` shows every check",
        missing.len()
    )
}

/// `modvisor doctor`: the checks as a table; non-zero when something required is missing.
pub fn doctor(args: DoctorArgs) -> Result<bool> {
    let needs = Needs {
        driver: Some(args.driver),
        jail: args.jail == crate::serve::JailSwitch::On,
        kernel: true,
        tests: args.tests,
    };
    let mut found = checks(&needs);
    if args.install_missing {
        install_missing(&needs)?;
        found = checks(&needs);
        if let Some(Check {
            fix: Some(Fix::FetchGuest(_)),
            ..
        }) = found.iter().find(|c| matches!(c.state, State::Fetched(_)))
        {
            kernel::resolve(|m| eprintln!("{m}")).context("fetching the guest kernel")?;
            modvisor_guest::userland::resolve(|m| eprintln!("{m}"))
                .context("fetching the guest userland")?;
            found = checks(&needs);
        }
    }
    println!("{}", render(&found));
    let missing = found.iter().filter(|c| c.is_missing()).count();
    if missing > 0 {
        eprintln!("{missing} required prerequisite(s) missing; `modvisor doctor --install-missing` installs what apt-get can");
    }
    Ok(missing == 0)
}
