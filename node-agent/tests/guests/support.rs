//! A real guest: Debian's cloud kernel and our initramfs under the qemu driver, jailed as
//! the node agent jails it.

use modvisor_guest::kernel::{self, GuestKernel};
use modvisor_node_agent::channel::AgentClient;
use modvisor_node_agent::driver::{Guest, GuestSpec, HypervisorDriver};
use modvisor_node_agent::jailing::{JailOptions, NodeJails};
use modvisor_node_agent::qemu::QemuDriver;
use std::sync::Arc;
use std::time::Duration;

/// A booted guest with a connected agent client. Dropping it stops the guest, removes its
/// jail, then its cgroup parent and directory.
pub struct TestGuest {
    pub guest: Box<dyn Guest>,
    pub client: AgentClient,
    pub kernel: GuestKernel,
    _parent: CgroupParent,
    _dir: tempfile::TempDir,
}

/// A test's own cgroup parent, removed when dropped (after the guest's jail is gone).
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        if let Ok(cgroups) = modvisor_jailer::check_host() {
            cgroups.remove_parent(&self.0);
        }
    }
}

/// The guest kernel (fetched by the CI setup, or `MODVISOR_KERNEL_DIR`).
pub fn guest_kernel() -> GuestKernel {
    kernel::resolve(|m| eprintln!("{m}")).unwrap_or_else(|e| {
        panic!("no guest kernel ({e}); run `modvisor guest fetch` or set MODVISOR_KERNEL_DIR")
    })
}

/// Boots a guest and waits for its agent's hello.
pub fn boot(id: &str) -> TestGuest {
    boot_with(id, &modvisor_guest::cmdline::default_cmdline())
}

/// A guest booted with kernel command line `cmdline`.
pub fn boot_with(id: &str, cmdline: &str) -> TestGuest {
    let kernel = guest_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initramfs.gz");
    let userland = modvisor_guest::userland::resolve(|m| eprintln!("{m}")).unwrap();
    std::fs::write(
        &initrd,
        modvisor_guest::build_initramfs(&userland, &[]).unwrap(),
    )
    .unwrap();
    let spec = GuestSpec {
        id: id.to_string(),
        vcpus: 1,
        memory_mib: 512,
        kernel: kernel.vmlinuz.clone(),
        initrd,
        cmdline: cmdline.to_string(),
        run_dir: dir.path().join("run"),
        nic: None,
        virtio_channel: false,
    };
    // The node agent's jail, with a cgroup parent and uid range of this test's own.
    let parent = format!("modvisor-guest-tests-{}", std::process::id());
    let options = JailOptions {
        cgroup_parent: parent.clone(),
        uid_base: 4_000_000,
        ..JailOptions::default()
    };
    let jails = NodeJails::new(dir.path(), id, &options);
    let driver = QemuDriver::detect()
        .expect("qemu driver")
        .with_jails(Arc::new(jails));
    let guest = driver.start(&spec).expect("start guest");
    let parent = CgroupParent(format!("{parent}/{id}"));
    let client = AgentClient::connect(guest.agent_socket(), Duration::from_secs(10)).unwrap();
    let started = std::time::Instant::now();
    let key = modvisor_node_agent::channel::new_key().unwrap();
    let hello = client
        .attach(&key, Duration::from_secs(180))
        .unwrap_or_else(|e| {
            let console = std::fs::read_to_string(guest.console_path()).unwrap_or_default();
            panic!("no hello from the guest agent: {e}\nconsole:\n{console}")
        });
    eprintln!("{id}: hello after {:?}: {hello:?}", started.elapsed());
    assert_eq!(hello.kernel_release, kernel.release);
    TestGuest {
        guest,
        client,
        kernel,
        _parent: parent,
        _dir: dir,
    }
}

/// Every module of the guest kernel's tree, each pinned to its own sha256 (the tree is
/// the trusted origin, as the control plane's catalog is in production).
pub fn module_source(kernel: &GuestKernel) -> modvisor_node_agent::modprobe::ModuleSource {
    let mut source = modvisor_node_agent::modprobe::ModuleSource::new();
    for path in kernel.all_modules() {
        let bytes = std::fs::read(&path).unwrap();
        let pin = sha256_hex(&bytes);
        source.insert(bytes, Some(pin)).unwrap();
    }
    source
}

/// The certificates embedded in the guest kernel image.
pub fn kernel_trust(kernel: &GuestKernel) -> modvisor_modules::TrustStore {
    modvisor_modules::TrustStore::from_kernel_image(&std::fs::read(&kernel.vmlinuz).unwrap())
        .expect("certificates in the kernel image")
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    modvisor_modules::KernelModule::parse(bytes)
        .map(|m| m.sha256().to_string())
        .unwrap_or_default()
}

/// A module's bytes without its appended signature.
pub fn strip_signature(image: &[u8]) -> Vec<u8> {
    let marker = b"~Module signature appended~\n";
    assert!(image.ends_with(marker));
    let n = image.len();
    let sig_len = u32::from_be_bytes(
        image[n - marker.len() - 4..n - marker.len()]
            .try_into()
            .unwrap(),
    ) as usize;
    image[..n - marker.len() - 12 - sig_len].to_vec()
}

/// A module source holding one image, pinned to `pin`.
pub fn source_of(image: &[u8], pin: &str) -> modvisor_node_agent::modprobe::ModuleSource {
    let mut source = modvisor_node_agent::modprobe::ModuleSource::new();
    source
        .insert(image.to_vec(), Some(pin.to_string()))
        .unwrap();
    source
}
