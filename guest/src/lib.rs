//! The guest image of modvisor: the guest kernel (Debian's cloud kernel, fetched and
//! unpacked into a cache) and the initramfs whose `/init` is the guest agent, with busybox
//! (Debian's `busybox-static`) as the tenant's userland.
//!
//! It owns what a guest boots, and builds out-of-tree modules against the guest kernel's
//! own headers; it does not start guests (the node agent's drivers do) and does not judge
//! or sign modules (the `modules` crate does).

#![forbid(unsafe_code)]

pub mod cmdline;
pub mod cpio;
pub mod debian;
pub mod headers;
pub mod initramfs;
pub mod kernel;
pub mod module_build;
pub mod userland;

pub use initramfs::{agent_binary, build_initramfs};
pub use kernel::GuestKernel;
pub use userland::Userland;
