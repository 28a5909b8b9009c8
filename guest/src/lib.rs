//! The guest image of modvisor: the guest kernel (Debian's cloud kernel, fetched and
//! unpacked into a cache) and the initramfs whose `/init` is the guest agent.
//!
//! It owns what a guest boots; it does not start guests (the node agent's drivers do) and
//! does not judge modules (the `modules` crate does).

#![forbid(unsafe_code)]

pub mod cmdline;
pub mod cpio;
pub mod initramfs;
pub mod kernel;

pub use initramfs::{agent_binary, build_initramfs};
pub use kernel::GuestKernel;
