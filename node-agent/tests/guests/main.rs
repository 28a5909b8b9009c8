//! Real guests (Debian's cloud kernel under QEMU, our agent as PID 1): the channel, the
//! agent, and the vetted modprobe service.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod channel;
mod modprobe;
mod operator_module;
#[path = "../../../tests/probes/build.rs"]
mod probe;
mod qemu_guest;
mod support;
mod tenant;
