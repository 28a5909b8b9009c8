//! Shared test support: the real Debian kernel tree, and a signer for foreign signatures.
#![allow(dead_code)]

pub mod elfgen;
pub mod sign;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use modvisor_modules::{KernelModule, MemoryCatalog, TrustStore};

/// The unpacked Debian kernel package the tests run against.
pub struct Kernel {
    /// `uname -r` of that kernel.
    pub release: String,
    /// The unpacked package root (holds `boot/` and `lib/modules/`).
    pub dir: PathBuf,
    /// Every `.ko` under `lib/modules/<release>/kernel`, sorted.
    pub modules: Vec<PathBuf>,
}

const FETCH_HINT: &str = "run the kernel fetch step first: `cargo run -- guest fetch-kernel` \
    (Debian's cloud kernel package, unpacked into ~/.cache/modvisor/kernels/<release>/; CI \
    runs it in .ci/run), or point MODVISOR_KERNEL_DIR at an unpacked kernel package";

/// The kernel tree: `$MODVISOR_KERNEL_DIR`, else the only release under
/// `~/.cache/modvisor/kernels/`. Panics with instructions when it is missing: these tests
/// never pass silently without their data.
pub fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(find_kernel)
}

fn find_kernel() -> Kernel {
    let dir = match std::env::var_os("MODVISOR_KERNEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("MODVISOR_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                    Path::new(&home).join(".cache/modvisor")
                });
            let base = cache.join("kernels");
            let releases: Vec<PathBuf> = std::fs::read_dir(&base)
                .unwrap_or_else(|e| {
                    panic!("no kernel tree at {}: {e}; {FETCH_HINT}", base.display())
                })
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir() && p.extension().is_none_or(|e| e != "partial"))
                .collect();
            match releases.as_slice() {
                [one] => one.clone(),
                [] => panic!("no kernel release under {}; {FETCH_HINT}", base.display()),
                many => panic!(
                    "{} kernel releases under {} ({many:?}); set MODVISOR_KERNEL_DIR to one",
                    many.len(),
                    base.display()
                ),
            }
        }
    };
    // The release is the one the tree's boot/vmlinuz-<release> names.
    let boot = dir.join("boot");
    let mut releases: Vec<String> = std::fs::read_dir(&boot)
        .unwrap_or_else(|e| panic!("no {} ({e}); {FETCH_HINT}", boot.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            name.strip_prefix("vmlinuz-").map(str::to_string)
        })
        .collect();
    releases.sort();
    let release = releases
        .pop()
        .unwrap_or_else(|| panic!("no vmlinuz-* in {}; {FETCH_HINT}", boot.display()));
    let module_root = dir.join("lib/modules").join(&release).join("kernel");
    assert!(
        module_root.is_dir(),
        "{} is missing; {FETCH_HINT}",
        module_root.display()
    );
    let mut modules = Vec::new();
    walk(&module_root, &mut modules);
    modules.sort();
    assert!(
        !modules.is_empty(),
        "no .ko files under {}; {FETCH_HINT}",
        module_root.display()
    );
    Kernel {
        release,
        dir,
        modules,
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "ko") {
            out.push(path);
        }
    }
}

impl Kernel {
    /// The bzImage.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The module file for `name` (`-` and `_` equivalent).
    pub fn module_path(&self, name: &str) -> &Path {
        let want = format!("{}.ko", name.replace('-', "_"));
        self.modules
            .iter()
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.replace('-', "_") == want)
            })
            .unwrap_or_else(|| panic!("no {name}.ko in the kernel tree"))
    }

    /// The bytes of module `name`.
    pub fn module_bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.module_path(name)).unwrap()
    }
}

/// The certificates compiled into the kernel, extracted once.
pub fn kernel_trust() -> &'static TrustStore {
    static TRUST: OnceLock<TrustStore> = OnceLock::new();
    TRUST.get_or_init(|| {
        let image = std::fs::read(kernel().vmlinuz()).unwrap();
        TrustStore::from_kernel_image(&image).unwrap()
    })
}

/// Every module of the tree, parsed, with its bytes' SHA-256 as the catalog pin.
pub fn catalog() -> &'static MemoryCatalog {
    static CATALOG: OnceLock<MemoryCatalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut catalog = MemoryCatalog::new();
        for path in &kernel().modules {
            let module = KernelModule::parse(&std::fs::read(path).unwrap()).unwrap();
            let pin = module.sha256().to_string();
            catalog.insert(module, Some(pin));
        }
        catalog
    })
}

/// Module name -> its dependencies, for order checks.
pub fn depends_map() -> BTreeMap<String, Vec<String>> {
    catalog()
        .modules()
        .map(|m| (m.name().to_string(), m.dependencies()))
        .collect()
}

/// A small deterministic pseudo-random generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
