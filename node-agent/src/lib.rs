//! The modvisor node agent: runs tenants' VMs through a hypervisor driver and loads vetted
//! kernel modules into their guest kernels through the guest agent.
//!
//! It owns the drivers ([`driver`], [`qemu`]), the host side of the guest channel
//! ([`channel`]) and the modprobe service ([`modprobe`]). It must not trust anything a
//! guest sends, and must never load a module that has not passed vetting.

#![forbid(unsafe_code)]

pub mod channel;
pub mod channel_choice;
pub mod console;
pub mod daemon;
pub mod driver;
mod guest_files;
pub mod hostcaps;
pub mod jailing;
pub mod kvm;
pub mod metrics;
pub mod modprobe;
pub mod network;
pub mod platform;
mod process;
pub mod qemu;
pub mod standalone;
