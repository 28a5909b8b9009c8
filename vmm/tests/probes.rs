//! Probe guests on this machine's /dev/kvm: each proves one part of the VMM.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use modvisor_vmm::probe::Probe;
use modvisor_vmm::VmState;
use std::time::Duration;

#[test]
fn hello_prints_on_com1_and_halts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&build(Probe::Hello, dir.path()), dir.path());
    let (state, console, _) = run(&cfg, Duration::from_secs(60));
    assert_eq!(console, "modvisor probe: hello from the guest\n");
    assert_eq!(state, VmState::Halted);
    assert_eq!(state.exit_code(), modvisor_vmm::ExitCode::Clean);
}

#[test]
fn bootparams_probe_reads_the_e820_map_and_command_line_we_built() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&build(Probe::BootParams, dir.path()), dir.path());
    cfg.cmdline = "console=ttyS0 modvisor.marker=bp-4711 quiet".into();
    cfg.memory_mib = 96;
    let (state, console, vm) = run(&cfg, Duration::from_secs(60));
    assert_eq!(state, VmState::Halted, "{console}");
    assert!(
        console.contains("cmdline: console=ttyS0 modvisor.marker=bp-4711 quiet\n"),
        "{console}"
    );
    let reported: Vec<(u64, u64, u64)> = console
        .lines()
        .filter_map(|l| l.strip_prefix("e820 "))
        .map(|l| {
            let f: Vec<u64> = l
                .split(' ')
                .map(|h| u64::from_str_radix(h, 16).unwrap())
                .collect();
            (f[0], f[1], f[2])
        })
        .collect();
    let built: Vec<(u64, u64, u64)> = vm
        .boot()
        .e820
        .iter()
        .map(|e| (e.addr, e.size, u64::from(e.kind.code())))
        .collect();
    assert_eq!(reported, built);
    assert_eq!(built.last().unwrap().0 + built.last().unwrap().1, 96 << 20);
}

#[test]
fn echo_probe_bridges_com2_to_the_agent_socket() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&build(Probe::Echo, dir.path()), dir.path());
    let sock = dir.path().join("agent.sock");
    cfg.agent_socket = Some(sock.clone());
    require_kvm();
    let mut vm = modvisor_vmm::Vm::new(&cfg).unwrap();
    let runner = std::thread::spawn(move || {
        let s = vm.run(Some(Duration::from_secs(120)));
        (s, vm)
    });
    // The VMM is the server; connect as the node agent does.
    let mut client = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let msg = b"hello agent, 0123456789 abcdefghijklmnop ABCDEFGHIJKLMNOP xyz!\n";
    client.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
    // A second client after the first leaves gets the channel too.
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    let mut client = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    client.write_all(b"again\n").unwrap();
    let mut back = [0u8; 6];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"again\n");
    client.write_all(b"q").unwrap();
    let (state, _vm) = runner.join().unwrap();
    assert_eq!(state, VmState::Halted);
    let console = std::fs::read_to_string(&cfg.console).unwrap();
    assert_eq!(console, "echo: ready\necho: done\n");
}

#[test]
fn smp_probe_every_vcpu_reports_its_apic_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&build(Probe::Smp, dir.path()), dir.path());
    cfg.vcpus = 3;
    let (state, console, _) = run(&cfg, Duration::from_secs(120));
    assert_eq!(state, VmState::Halted, "{console}");
    let hex = |n: u64| format!("{n:016x}");
    assert!(
        console.contains(&format!("smp: bsp apic={} cpuid={}\n", hex(0), hex(0))),
        "{console}"
    );
    for id in 0..3 {
        assert!(
            console.contains(&format!("mptable cpu apic={}\n", hex(id))),
            "{console}"
        );
    }
    for id in 1..3 {
        assert!(
            console.contains(&format!("smp: ap apic={} cpuid={}\n", hex(id), hex(id))),
            "{console}"
        );
    }
    assert!(console.ends_with("smp: all cpus reported\n"), "{console}");
}

#[test]
fn triple_fault_is_a_crash_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&build(Probe::TripleFault, dir.path()), dir.path());
    let (state, console, _) = run(&cfg, Duration::from_secs(60));
    assert_eq!(console, "triple: about to triple fault\n");
    match &state {
        VmState::Crashed(reason) => assert!(reason.contains("triple fault"), "{reason}"),
        other => panic!("expected a crash, got {other:?}"),
    }
    assert_ne!(state.exit_code(), modvisor_vmm::ExitCode::Clean);
}

#[test]
fn hostile_probe_leaves_the_vmm_healthy_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&build(Probe::Hostile, dir.path()), dir.path());
    cfg.console_limit = 256 << 10;
    let (state, console, vm) = run(&cfg, Duration::from_secs(300));
    assert_eq!(state, VmState::Halted);
    assert!(
        console.starts_with("hostile: start\nhostile: flood\n"),
        "{:?}",
        &console[..console.len().min(200)]
    );
    let size = std::fs::metadata(&cfg.console).unwrap().len();
    assert_eq!(size, 256 << 10, "the console is capped");
    let report = vm.status().report();
    assert!(
        report.console_dropped >= (2 << 20) - (256 << 10),
        "{report:?}"
    );
    let (ports, mmio) = vm.unclaimed_accesses();
    assert!(ports >= 6 * 4000, "{ports}");
    assert!(mmio >= 2048, "{mmio}");
}

#[test]
fn pvh_probe_enters_through_its_note_and_keeps_running_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&build(Probe::PvhReady, dir.path()), dir.path());
    let (state, console, vm) = run(&cfg, Duration::from_secs(2));
    assert_eq!(vm.boot().mode, modvisor_vmm::cpu::EntryMode::Pvh);
    assert_eq!(console, "modvisor probe: ready\n");
    assert_eq!(
        state,
        VmState::ShutDown("the run timeout expired".into()),
        "an idle guest (hlt with interrupts on) is not a halted one"
    );
}

#[test]
fn bad_configurations_are_errors_not_panics() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x90u8; 4096]).unwrap();
    let mut cfg = config(&junk, dir.path());
    let e = modvisor_vmm::Vm::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("neither a vmlinux ELF nor a bzImage"), "{e}");
    cfg.kernel = build(Probe::Hello, dir.path());
    cfg.vcpus = 0;
    assert!(modvisor_vmm::Vm::new(&cfg).is_err());
    cfg.vcpus = 1;
    cfg.memory_mib = 1;
    assert!(modvisor_vmm::Vm::new(&cfg).is_err());
    cfg.memory_mib = 64;
    cfg.cmdline = "x".repeat(5000);
    assert!(modvisor_vmm::Vm::new(&cfg).is_err());
}
