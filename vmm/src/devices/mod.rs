//! The legacy devices of the VM and the port-I/O bus that reaches them.

pub mod agent;
pub mod bus;
pub mod console;

use vmm_sys_util::eventfd::EventFd;

/// A vm-superio interrupt trigger backed by an eventfd registered as a KVM irqfd.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// A 16550A UART as the guest sees it, writing to `W`.
pub type Serial = vm_superio::Serial<
    EventFdTrigger,
    vm_superio::serial::NoEvents,
    Box<dyn std::io::Write + Send>,
>;
