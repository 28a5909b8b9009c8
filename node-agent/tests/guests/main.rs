//! Real guests (Debian's cloud kernel under QEMU, our agent as PID 1): the channel, the
//! agent, and the vetted modprobe service.

mod modprobe;
mod qemu_guest;
mod support;
