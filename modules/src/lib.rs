//! modvisor-modules: vetting of Linux kernel modules before they are loaded into a
//! tenant's guest kernel.
//!
//! Pure: no network, no processes, no files (callers pass bytes). The pieces:
//!
//! - [`KernelModule::parse`]: a `.ko` file to its [`ModInfo`], its appended
//!   [`ModuleSignature`] and its SHA-256, refusing hostile input with a [`ParseError`].
//! - [`TrustStore`]: the certificates that may sign modules, typically extracted from the
//!   guest kernel image itself ([`TrustStore::from_kernel_image`]).
//! - [`vet`] against a [`VettingPolicy`]: approval, deny-list, pin, size, signature,
//!   `vermagic`, license; failures are typed [`Rejection`]s.
//! - [`load_order`] and [`vet_closure`]: dependencies through a caller's
//!   [`ModuleCatalog`].
//! - [`inspect`]: all of it as one printable, serializable [`VettingReport`].
//!
//! ```no_run
//! use modvisor_modules::{inspect, TrustStore, VettingPolicy};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let trust = TrustStore::from_kernel_image(&std::fs::read("vmlinuz")?)?;
//! let bytes = std::fs::read("wireguard.ko")?;
//! let policy = VettingPolicy::inspection(Some("6.1.0-56-cloud-amd64"));
//! let report = inspect("wireguard.ko", &bytes, &policy, &trust, None, None);
//! println!("{report}");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod deps;
mod elf;
mod error;
pub mod kernel_image;
mod modinfo;
mod module;
mod policy;
mod rejection;
mod report;
mod sign;
mod signature;
mod trust;

pub use deps::{load_order, vet_closure, CatalogEntry, MemoryCatalog, ModuleCatalog};
pub use elf::MAX_SECTIONS;
pub use error::{ImageError, ParseError, TrustError};
pub use modinfo::{ModInfo, ModInfoField, ModuleParameter, MAX_MODINFO_ENTRIES};
pub use module::{normalize_name, KernelModule, MAX_MODULE_BYTES};
pub use policy::{
    check_all, vet, SignatureVerdict, VettedModule, VettingPolicy, DEFAULT_MAX_SIZE,
    GPL_COMPATIBLE_LICENSES,
};
pub use rejection::Rejection;
pub use report::{inspect, SignatureReport, Verdict, VettingReport};
pub use sign::{append_signature, OperatorKey, SignError, OPERATOR_KEY_BITS};
pub use signature::{
    DigestAlgorithm, ModuleSignature, SignatureError, Signer, SignerId, MODULE_SIG_MARKER,
};
pub use trust::{TrustStore, TrustedCertificate, MAX_CERTIFICATES, MAX_RSA_BITS};
