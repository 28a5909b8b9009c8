//! The agent's channel under QEMU: a virtio-serial port when the guest has the virtio
//! driver, the second serial port beside it when it has not; the node greets both and
//! keeps the one that answered.

use modvisor_node_agent::channel_choice::attach_agent;
use modvisor_node_agent::driver::{GuestSpec, HypervisorDriver};
use modvisor_node_agent::qemu::QemuDriver;
use std::time::Duration;

fn answers_on(id: &str, with_virtio_driver: bool) -> String {
    let kernel = crate::support::guest_kernel();
    let dir = tempfile::tempdir().unwrap();
    let userland = modvisor_guest::userland::resolve(|m| eprintln!("{m}")).unwrap();
    let platform = if with_virtio_driver {
        let image = std::fs::read(&kernel.vmlinuz).unwrap();
        let trust = modvisor_modules::TrustStore::from_kernel_image(&image).unwrap();
        modvisor_node_agent::platform::platform_modules(&kernel, &trust).unwrap()
    } else {
        Vec::new()
    };
    let extra: Vec<(&str, &[u8])> = platform
        .iter()
        .map(|m| (m.path.as_str(), m.bytes.as_slice()))
        .collect();
    let initrd = dir.path().join("initramfs.gz");
    std::fs::write(
        &initrd,
        modvisor_guest::build_initramfs(&userland, &extra).unwrap(),
    )
    .unwrap();
    let run_dir = dir.path().join("run");
    let spec = GuestSpec {
        id: id.to_string(),
        vcpus: 1,
        memory_mib: 256,
        kernel: kernel.vmlinuz.clone(),
        initrd,
        cmdline: modvisor_guest::cmdline::default_cmdline(),
        run_dir: run_dir.clone(),
        nic: None,
        virtio_channel: true,
    };
    let mut guest = QemuDriver::detect().unwrap().start(&spec).unwrap();
    let key = modvisor_node_agent::channel::new_key().unwrap();
    let attached = attach_agent(&run_dir, guest.as_ref(), &key, Duration::from_secs(180));
    let chosen = std::fs::read_to_string(run_dir.join("agent.channel")).unwrap_or_default();
    let health = attached.and_then(|(c, _)| c.health(Duration::from_secs(30)));
    guest.stop(Duration::from_secs(5));
    let console = std::fs::read_to_string(guest.console_path()).unwrap_or_default();
    assert!(health.is_ok(), "{health:?}\n{console}");
    chosen
}

#[test]
fn the_agent_answers_on_virtio_serial_or_on_com2_without_the_driver() {
    assert_eq!(answers_on("channel-virtio", true), "primary");
    assert_eq!(answers_on("channel-com2", false), "fallback");
}
