//! The guest kernel's own platform modules that every networked guest needs before any
//! tenant request: the virtio PCI transport, virtio-net and virtio-console, with what they
//! depend on. They come from the guest kernel's tree, are checked here like any module
//! (parsed, signed by a key of that kernel), and go into the initramfs numbered in
//! dependency order; the guest agent loads them at boot with `finit_module`, and the
//! guest kernel checks their signatures again (`module.sig_enforce=1`).

use modvisor_guest::kernel::GuestKernel;
use modvisor_modules::{KernelModule, TrustStore};

/// The modules asked for (their dependencies are added).
pub const PLATFORM_MODULES: [&str; 3] = ["virtio_pci", "virtio_net", "virtio_console"];

/// Where they go in the initramfs; the agent loads every `.ko` there in name order.
pub const INITRAMFS_DIR: &str = "lib/modvisor/platform";

/// One platform module, ready for the initramfs.
#[derive(Debug, Clone)]
pub struct PlatformModule {
    /// Its name.
    pub name: String,
    /// Its path in the initramfs (`lib/modvisor/platform/NN-name.ko`).
    pub path: String,
    /// The file.
    pub bytes: Vec<u8>,
}

/// Why the platform modules cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A module is not in the kernel's tree (and not built in).
    #[error("{0} is neither in the guest kernel's modules nor built in")]
    Missing(String),
    /// Reading a module failed.
    #[error("{name}: {source}")]
    Read {
        /// Module.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A module does not parse, or its signature does not verify against the guest
    /// kernel's keys.
    #[error("{name}: {reason}")]
    Refused {
        /// Module.
        name: String,
        /// Why.
        reason: String,
    },
}

/// [`PLATFORM_MODULES`] and their dependencies from `kernel`, in load order (each after
/// what it depends on), each verified against `trust`.
pub fn platform_modules(
    kernel: &GuestKernel,
    trust: &TrustStore,
) -> Result<Vec<PlatformModule>, PlatformError> {
    Ok(signed_closure(kernel, trust, &PLATFORM_MODULES)?
        .into_iter()
        .enumerate()
        .map(|(n, (name, bytes))| PlatformModule {
            path: format!("{INITRAMFS_DIR}/{n:02}-{name}.ko"),
            name,
            bytes,
        })
        .collect())
}

/// `roots` and everything they depend on from `kernel`'s tree, as (name, file), in load
/// order (each after what it depends on; what is built in is left out), each parsed and
/// its signature verified against `trust`.
pub fn signed_closure(
    kernel: &GuestKernel,
    trust: &TrustStore,
    roots: &[&str],
) -> Result<Vec<(String, Vec<u8>)>, PlatformError> {
    let builtin =
        std::fs::read_to_string(kernel.modules_dir.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |name: &str| {
        builtin.lines().any(|l| {
            l.rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".ko"))
                .is_some_and(|f| f.replace('-', "_") == name)
        })
    };
    let mut ordered: Vec<(String, Vec<u8>)> = Vec::new();
    // Depth-first: a module goes after everything it depends on.
    fn visit(
        name: &str,
        kernel: &GuestKernel,
        trust: &TrustStore,
        is_builtin: &dyn Fn(&str) -> bool,
        ordered: &mut Vec<(String, Vec<u8>)>,
        path: &mut Vec<String>,
    ) -> Result<(), PlatformError> {
        if ordered.iter().any(|(m, _)| m == name) || is_builtin(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) || path.len() > 16 {
            return Err(PlatformError::Refused {
                name: name.into(),
                reason: format!("circular dependencies: {}", path.join(" -> ")),
            });
        }
        let file = kernel
            .module_path(name)
            .ok_or_else(|| PlatformError::Missing(name.into()))?;
        let bytes = std::fs::read(&file).map_err(|source| PlatformError::Read {
            name: name.into(),
            source,
        })?;
        let refused = |reason: String| PlatformError::Refused {
            name: name.into(),
            reason,
        };
        let module = KernelModule::parse(&bytes).map_err(|e| refused(e.to_string()))?;
        module
            .signature()
            .ok_or_else(|| refused("unsigned".into()))?
            .verify(trust)
            .map_err(|e| refused(e.to_string()))?;
        path.push(name.into());
        for dep in module.dependencies() {
            visit(&dep, kernel, trust, is_builtin, ordered, path)?;
        }
        path.pop();
        ordered.push((name.into(), bytes));
        Ok(())
    }
    for name in roots {
        visit(
            name,
            kernel,
            trust,
            &is_builtin,
            &mut ordered,
            &mut Vec::new(),
        )?;
    }
    Ok(ordered)
}
