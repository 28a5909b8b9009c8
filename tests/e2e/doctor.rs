//! A fresh machine: `modvisor doctor` says what the host has and lacks, `up` stops before
//! it writes anything when a prerequisite is missing, and the README's run command, as
//! written, gives a VM that runs with tcp_bbr loaded.

use crate::host::HostCleanup;
use crate::support::{modvisor, Plane};
use modvisor_control_plane_api::types::{ModuleRef, Phase, PowerState, RequestState, VmSpec};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A PATH holding only the tools the guest kernel check needs (apt-get, apt-cache,
/// dpkg), so that QEMU is not on it.
fn path_without_qemu(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["apt-get", "apt-cache", "dpkg", "make"] {
        let found = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} on this host"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    bin.display().to_string()
}

#[test]
fn doctor_finds_every_prerequisite_on_this_machine() {
    let out = modvisor()
        .args(["doctor", "--tests"])
        .env("MODVISOR_LOG", "warn")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{table}\n{err}");
    for what in [
        "hypervisor (",
        "acceleration",
        "jail: root",
        "jail: cgroup controllers",
        "guest kernel ",
        "guest kernel headers",
        "make",
        "jq",
        "etcd",
        "protoc",
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no row for {what}:\n{table}"));
        let state = row[what.len()..].split_whitespace().next().unwrap_or("");
        assert!(
            matches!(state, "found" | "note") || row.contains(" found ") || row.contains(" note "),
            "{what} is not found:\n{table}"
        );
    }
    assert!(!table.contains("MISSING"), "{table}");
}

#[test]
fn without_qemu_doctor_says_how_to_install_it_and_up_stops_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_without_qemu(dir.path());
    let out = modvisor()
        .args(["doctor", "--driver", "qemu"])
        .env("PATH", &path)
        .env_remove("MODVISOR_QEMU")
        .env("MODVISOR_LOG", "warn")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("hypervisor (qemu driver)"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("MISSING"), "{table}");
    assert!(
        row.contains("apt-get install -y --no-install-recommends qemu-system-x86"),
        "{table}"
    );

    let data = dir.path().join("data");
    let started = Instant::now();
    let mut child = modvisor()
        .args(["up", "--driver", "qemu", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .env("PATH", &path)
        .env_remove("MODVISOR_QEMU")
        .env("MODVISOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("`up` without QEMU did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    eprintln!("up without QEMU stopped after {:?}", started.elapsed());
    assert!(err.contains("qemu-system-x86_64"), "{err}");
    assert!(err.contains("apt-get install"), "{err}");
    assert!(err.contains("--install-missing"), "{err}");
    assert!(
        !data.exists(),
        "up wrote {} before stopping: {err}",
        data.display()
    );
}

/// The first command of the README's "Run it" section.
fn readme_run_command() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Run it")
        .nth(1)
        .expect("a `## Run it` section");
    let block = section
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in `## Run it`");
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "the run command is one line: {block}");
    lines[0].trim().to_string()
}

#[test]
fn the_readme_run_command_gives_a_running_vm_with_tcp_bbr_loaded() {
    let command = readme_run_command();
    assert!(command.contains(" up"), "{command}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // As written, in the repository; only where it keeps its data and listens differ.
    let _cleanup = HostCleanup {
        dir: data.clone(),
        cgroup_parent: "/modvisor/node-1".into(),
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MODVISOR_DATA_DIR", &data)
        .env("MODVISOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("MODVISOR_LOG", "warn")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let stop = scopeguard(move || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    });
    // Building (a no-op after .ci/run's release build), fetching and starting.
    let deadline = Instant::now() + Duration::from_secs(1200);
    let addr = data.join("control-plane.addr");
    while !addr.exists() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("`{command}` exited: {s}");
        }
        assert!(Instant::now() < deadline, "`{command}` did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let plane = Plane::attach(dir, format!("http://127.0.0.1:{port}"));
    let a = plane.api(&plane.token("tenant-a"));
    // The README's curl example, through the typed client.
    let spec = VmSpec {
        name: "web-2".into(),
        kernel_mode: Default::default(),
        vcpus: 1,
        memory_mib: 256,
        modules: vec![ModuleRef {
            name: "tcp_bbr".into(),
            params: Default::default(),
        }],
        power_state: PowerState::Running,
        user_data: None,
        network: None,
    };
    let id = a.create_vm(&spec).unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let vm = a.get_vm(&id).unwrap().value;
        assert_ne!(vm.status.phase, Phase::Failed, "{vm:?}");
        let bbr = a
            .module_requests(&id)
            .unwrap()
            .into_iter()
            .find(|r| r.name == "tcp_bbr");
        let state = bbr.as_ref().map(|r| r.state);
        assert!(
            !matches!(state, Some(RequestState::Rejected | RequestState::Failed)),
            "{bbr:?}"
        );
        if vm.status.phase == Phase::Running
            && state == Some(RequestState::Loaded)
            && vm.status.guest_modules.iter().any(|m| m == "tcp_bbr")
        {
            break;
        }
        assert!(Instant::now() < deadline, "VM {id}: {vm:?}\n{bbr:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Leave no guest behind: delete it and wait until it is gone.
    a.delete_vm(&id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while a.get_vm(&id).map_err(|e| e.status()).err() != Some(Some(404)) {
        assert!(Instant::now() < deadline, "VM {id} was not removed");
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(stop);
    let _ = child.wait();
}

/// Runs `f` when dropped (also when the test panics).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
