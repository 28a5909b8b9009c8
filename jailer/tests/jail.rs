//! The jail on this host's real cgroups (v1 here), namespaces and seccomp, with
//! `jail-probe` workloads and the real `modvisor-vmm`.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modvisor_jailer::{
    cleanup_stale, seccomp, BpfProgram, Jail, JailConfig, JailSpec, Limits, Overhead,
};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PROBE: &str = env!("CARGO_BIN_EXE_jail-probe");

/// A jail directory and a cgroup parent of the test's own, removed at the end.
struct Fixture {
    dir: tempfile::TempDir,
    config: JailConfig,
}

fn fixture(name: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = JailConfig::new(dir.path().join("jails"));
    config.cgroup_parent = format!("modvisor-jailer-test-{}-{name}", std::process::id());
    Fixture { dir, config }
}

impl Fixture {
    fn parents(&self) -> Vec<PathBuf> {
        modvisor_jailer::check_host()
            .unwrap()
            .parent_dirs(&self.config.cgroup_parent)
    }

    fn run_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = cleanup_stale(&self.config);
        for p in self.parents() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn limits() -> Limits {
    Limits::for_vm(1, 64, &Overhead::default())
}

fn probe_spec(id: &str, limits: Limits) -> JailSpec {
    let mut spec = JailSpec::new(id, limits);
    spec.bind_ro(PROBE, "/probe");
    spec
}

fn run(jail: &Jail, args: &[&str]) -> Output {
    let mut cmd = jail.command("/probe");
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    jail.spawn(&mut cmd).unwrap().wait_with_output().unwrap()
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(path.to_str().unwrap())
}

fn assert_gone(jail_dir: &Path, group: &modvisor_jailer::Group) {
    assert!(!jail_dir.exists(), "{} remains", jail_dir.display());
    for d in &group.dirs {
        assert!(!d.exists(), "{} remains", d.display());
    }
    assert!(
        !mounted(jail_dir),
        "a mount under {} remains",
        jail_dir.display()
    );
}

#[test]
fn the_jailed_process_sees_its_own_pid_namespace_and_root_and_runs_as_its_uid() {
    let f = fixture("view");
    let run_dir = f.run_dir("run-view");
    let mut spec = probe_spec("view", limits());
    spec.proc = true;
    spec.bind_rw(&run_dir, "/run/vm");
    let jail = Jail::prepare(&f.config, &spec).unwrap();
    assert!(jail.enforced().contains("pids.max"), "{}", jail.enforced());
    let out = run(&jail, &["id"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(value(&text, "pid"), "1");
    assert_eq!(value(&text, "procs"), "1", "only its own pid namespace");
    assert_eq!(value(&text, "uid"), jail.uid().to_string());
    assert_eq!(value(&text, "gid"), jail.uid().to_string());
    assert_ne!(jail.uid(), 0);
    assert_eq!(value(&text, "hostname"), "view");
    assert_eq!(value(&text, "no_new_privs"), "1");
    let root = value(&text, "root");
    for host_only in ["home", "root", "var", "tmp", "boot", "srv"] {
        assert!(
            !root.split(',').any(|e| e == host_only),
            "/{host_only} is visible: {root}"
        );
    }
    assert_eq!(value(&text, "write_root"), "false");
    assert_eq!(value(&text, "write_usr"), "false");
    assert_eq!(value(&text, "write_tmp"), "false");
    assert_eq!(value(&text, "write_run"), "true");
    // The one writable place is the run directory, as the jail's uid.
    let written = std::fs::metadata(run_dir.join("x")).unwrap();
    assert_eq!(written.uid(), jail.uid());
    let (dir, group) = (
        jail.root().parent().unwrap().to_path_buf(),
        jail.cgroup().clone(),
    );
    jail.teardown().unwrap();
    assert_gone(&dir, &group);
}

#[test]
fn a_fork_bomb_stops_at_pids_max_and_the_host_is_unaffected() {
    let f = fixture("forkbomb");
    let mut l = limits();
    l.cgroup.pids_max = 32;
    l.nproc = 10_000; // the cgroup, not the rlimit, is what stops it here
    let jail = Jail::prepare(&f.config, &probe_spec("bomb", l)).unwrap();
    let mut cmd = jail.command("/probe");
    cmd.arg("forkbomb").stdout(Stdio::piped());
    let mut child = jail.spawn(&mut cmd).unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("error=Resource temporarily unavailable"),
        "{line}"
    );
    let current: u64 = std::fs::read_to_string(jail.cgroup().dirs[0].join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((16..=32).contains(&current), "pids.current {current}");
    // The host still forks.
    assert!(Command::new("true").status().unwrap().success());
    // Killing PID 1 of the namespace takes the whole bomb with it.
    child.kill().unwrap();
    child.wait().unwrap();
    let group = jail.cgroup().clone();
    jail.teardown().unwrap();
    assert!(!group.exists());
}

#[test]
fn a_memory_hog_is_killed_at_the_memory_limit_and_counted_as_oom() {
    let f = fixture("hog");
    let mut l = limits();
    l.cgroup.memory_bytes = 64 << 20;
    let jail = Jail::prepare(&f.config, &probe_spec("hog", l)).unwrap();
    let out = run(&jail, &["hog", "1024"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{text}");
    assert!(!text.contains("survived"));
    assert!(jail.oom_kills() >= 1);
    assert!(jail.cgroup().limit_reached(), "the limit was reached");
    let peak = jail.cgroup().memory_peak().unwrap();
    assert!(peak <= 64 << 20, "peak {peak}");
    jail.teardown().unwrap();
}

#[test]
fn seccomp_kills_on_a_syscall_outside_the_vmm_profile() {
    let f = fixture("seccomp");
    let mut spec = probe_spec("sc", limits());
    spec.seccomp = Some(seccomp::vmm_profile().unwrap());
    let jail = Jail::prepare(&f.config, &spec).unwrap();
    let ok = run(&jail, &["socket", "unix"]);
    assert!(ok.status.success(), "{ok:?}");
    let killed = run(&jail, &["socket", "inet"]);
    assert_eq!(killed.status.signal(), Some(libc::SIGSYS), "{killed:?}");
    jail.teardown().unwrap();
}

/// `target/<profile>/modvisor-vmm`, built by `cargo test --workspace` (vmm's own tests).
fn vmm_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("modvisor-vmm");
    bin.is_file().then_some(bin)
}

fn run_vmm(f: &Fixture, id: &str, bpf: BpfProgram) -> (std::process::ExitStatus, String) {
    let vmm = vmm_binary().expect("modvisor-vmm is not built: run `cargo build -p modvisor-vmm` (cargo test --workspace does)");
    let run_dir = f.run_dir(&format!("run-{id}"));
    let kernel = modvisor_vmm::probe::build(
        modvisor_vmm::probe::Probe::Hello,
        &f.dir.path().join(format!("probe-{id}")),
    )
    .unwrap();
    let mut spec = JailSpec::new(id, Limits::for_vm(1, 32, &Overhead::default()));
    spec.bind_ro(&vmm, "/vmm")
        .bind_ro(&kernel, "/boot/kernel")
        .bind_rw(&run_dir, "/run/vm");
    spec.devices.push("/dev/kvm".into());
    spec.seccomp = Some(bpf);
    let jail = Jail::prepare(&f.config, &spec).unwrap();
    let mut cmd = jail.command("/vmm");
    cmd.args([
        "--kernel",
        "/boot/kernel",
        "--cmdline",
        "console=ttyS0",
        "--memory-mib",
        "32",
    ])
    .args([
        "--console",
        "/run/vm/console",
        "--agent-socket",
        "/run/vm/agent.sock",
    ])
    .args(["--api-socket", "/run/vm/api.sock", "--timeout-secs", "30"])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let out = jail.spawn(&mut cmd).unwrap().wait_with_output().unwrap();
    let console = std::fs::read_to_string(run_dir.join("console")).unwrap_or_default();
    jail.teardown().unwrap();
    (
        out.status,
        format!("{console}\n{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_real_vmm_runs_under_its_profile_and_is_killed_without_a_syscall_it_needs() {
    let f = fixture("vmm");
    let (status, text) = run_vmm(&f, "vmm-ok", seccomp::vmm_profile().unwrap());
    assert!(status.success(), "{status:?}: {text}");
    assert!(text.contains("hello from the guest"), "{text}");
    let (status, text) = run_vmm(
        &f,
        "vmm-denied",
        seccomp::vmm_profile_without(&[libc::SYS_eventfd2]).unwrap(),
    );
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}: {text}");
}

#[test]
fn a_command_spawned_outside_jail_spawn_is_refused() {
    let f = fixture("nospawn");
    let jail = Jail::prepare(&f.config, &probe_spec("nospawn", limits())).unwrap();
    let err = jail.command("/probe").arg("true").status().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
    assert!(
        Jail::prepare(&f.config, &probe_spec("nospawn", limits())).is_err(),
        "ids are unique"
    );
    assert!(Jail::prepare(&f.config, &probe_spec("../x", limits())).is_err());
    jail.teardown().unwrap();
}

/// The helper "agent" of the kill -9 test: prepares a jail, starts a jailed sleep, prints
/// its host pid and waits to be killed. A no-op unless the test below runs it.
#[test]
fn agent_helper() {
    let (Ok(dir), Ok(parent)) = (
        std::env::var("JAILER_TEST_DIR"),
        std::env::var("JAILER_TEST_PARENT"),
    ) else {
        return;
    };
    let mut config = JailConfig::new(dir);
    config.cgroup_parent = parent;
    let jail = Jail::prepare(&config, &probe_spec("orphan", limits())).unwrap();
    let mut cmd = jail.command("/probe");
    cmd.args(["sleep", "600"]).stdout(Stdio::null());
    let mut child = jail.spawn(&mut cmd).unwrap();
    println!("JAILED_PID={}", child.id());
    std::thread::sleep(Duration::from_secs(600));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn stale_jails_are_cleaned_after_kill_9_of_the_agent_but_live_ones_are_kept() {
    let f = fixture("kill9");
    let mut agent = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "agent_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("JAILER_TEST_DIR", &f.config.dir)
        .env("JAILER_TEST_PARENT", &f.config.cgroup_parent)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pid = None;
    for line in BufReader::new(agent.stdout.take().unwrap()).lines() {
        // libtest prints `test agent_helper ... ` before the helper's own line.
        if let Some(p) = line.unwrap().split("JAILED_PID=").nth(1) {
            pid = Some(p.trim().parse::<i32>().unwrap());
            break;
        }
    }
    let pid = pid.expect("the helper agent printed no pid");
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();
    let jail = Jail::open(&f.config, "orphan").unwrap();
    let group = jail.cgroup().clone();
    assert_eq!(group.pids(), vec![pid as u32], "the VM outlives its agent");
    assert!(
        cleanup_stale(&f.config).unwrap().is_empty(),
        "a live jail is kept"
    );
    assert!(f.config.dir.join("orphan").exists());
    // The VM ends too; the next agent start cleans up.
    // SAFETY: kill(2) sends a signal; no memory is touched.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !group.pids().is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        cleanup_stale(&f.config).unwrap(),
        vec!["orphan".to_string()]
    );
    assert_gone(&f.config.dir.join("orphan"), &group);
}

#[test]
fn qemu_runs_jailed_with_its_own_sandbox_and_serves_its_socket_by_the_host_path() {
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    assert!(
        qemu.exists(),
        "QEMU is not installed (apt-get install qemu-system-x86)"
    );
    let f = fixture("qemu");
    let run_dir = f.run_dir("run-qemu");
    let kernel = modvisor_vmm::probe::build(
        modvisor_vmm::probe::Probe::PvhReady,
        &f.dir.path().join("probe-qemu"),
    )
    .unwrap();
    let mut spec = JailSpec::new("qemu", Limits::for_vm(1, 64, &Overhead::default()));
    spec.bind_ro(&kernel, "/boot/kernel")
        .bind_rw(&run_dir, "/run/vm");
    let jail = Jail::prepare(&f.config, &spec).unwrap();
    let mut cmd = jail.command(qemu);
    cmd.args(["-name", "modvisor-qemu", "-machine", "pc", "-nodefaults"])
        .args([
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .args(["-accel", "tcg", "-m", "64", "-kernel", "/boot/kernel"])
        .args(["-sandbox", seccomp::QEMU_SANDBOX])
        .args(["-serial", "file:/run/vm/console.log"])
        .args(["-serial", "unix:/run/vm/agent.sock,server=on,wait=off"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = jail.spawn(&mut cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let console = run_dir.join("console.log");
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("ready")
    {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("qemu ended: {status:?}: {err}");
        }
        assert!(Instant::now() < deadline, "the probe did not print ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // QEMU removes its socket when it exits, so first make sure it still runs.
    assert!(
        child.try_wait().unwrap().is_none(),
        "qemu ended after ready"
    );
    std::os::unix::net::UnixStream::connect(run_dir.join("agent.sock")).unwrap();
    // PID 1 of its namespace, QEMU handles SIGTERM and ends cleanly.
    // SAFETY: kill(2) sends a signal; no memory is touched.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), None, "{status:?}");
    jail.teardown().unwrap();
}

#[test]
fn per_vm_uids_differ_and_skip_a_uid_a_live_process_already_runs_as() {
    let mut f = fixture("uids");
    // A range of this test's own, so parallel tests cannot take its uids.
    f.config.uid_base = 3_000_000 + (std::process::id() % 1000) * 16;
    f.config.uid_count = 16;
    // Another agent (say) already runs a process as the first uid of the range.
    let mut squatter = Command::new("sleep")
        .arg("30")
        .uid(f.config.uid_base)
        .gid(f.config.uid_base)
        .spawn()
        .unwrap();
    let a = Jail::prepare(&f.config, &probe_spec("uid-a", limits())).unwrap();
    let b = Jail::prepare(&f.config, &probe_spec("uid-b", limits())).unwrap();
    assert_eq!(a.uid(), f.config.uid_base + 1);
    assert_eq!(b.uid(), f.config.uid_base + 2);
    // A second agent (its own jail directory) with the same range: the host-wide registry
    // gives it a uid of its own.
    let mut other = fixture("uids-other");
    other.config.uid_base = f.config.uid_base;
    other.config.uid_count = f.config.uid_count;
    let c = Jail::prepare(&other.config, &probe_spec("uid-c", limits())).unwrap();
    assert_eq!(c.uid(), f.config.uid_base + 3);
    let _ = squatter.kill();
    let _ = squatter.wait();
    // The squatter gone and a jail torn down, both their uids are free again.
    a.teardown().unwrap();
    let d = Jail::prepare(&other.config, &probe_spec("uid-d", limits())).unwrap();
    let e = Jail::prepare(&other.config, &probe_spec("uid-e", limits())).unwrap();
    assert_eq!(d.uid(), f.config.uid_base);
    assert_eq!(e.uid(), f.config.uid_base + 1);
    for j in [b, c, d, e] {
        j.teardown().unwrap();
    }
}

#[test]
fn a_jail_is_found_by_its_recorded_cgroup_when_the_parent_changed() {
    let f = fixture("moved");
    let jail = Jail::prepare(&f.config, &probe_spec("moved", limits())).unwrap();
    let group = jail.cgroup().clone();
    assert!(group.exists());
    // The agent comes back configured with another cgroup parent.
    let mut config = f.config.clone();
    config.cgroup_parent = format!("{}-renamed", f.config.cgroup_parent);
    let reopened = Jail::open(&config, "moved").unwrap();
    assert_eq!(reopened.cgroup(), &group);
    drop(jail);
    assert_eq!(cleanup_stale(&config).unwrap(), vec!["moved".to_string()]);
    assert_gone(&f.config.dir.join("moved"), &group);
}
