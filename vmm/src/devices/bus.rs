//! Port I/O and MMIO dispatch. COM1 (0x3f8, console), COM2 (0x2f8, agent) and the i8042
//! (0x60, 0x64) are ours; the PIC, PIT and LAPIC/IOAPIC live in KVM. Every other port
//! reads as 0xff and swallows writes, and every MMIO access outside RAM reads as all ones:
//! counted, logged at a bounded rate, never fatal.

use super::Serial;
use crate::state::{VmState, VmStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vm_superio::I8042Device;

/// COM1 base port.
pub const COM1: u16 = 0x3f8;
/// COM2 base port.
pub const COM2: u16 = 0x2f8;
/// The i8042 data port; the command/status port is at +4.
pub const I8042: u16 = 0x60;

/// The i8042 reset line: a guest reset (0xfe to port 0x64) ends the VM cleanly.
#[derive(Debug)]
pub struct ResetTrigger(pub Arc<VmStatus>);

impl vm_superio::Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.finish(VmState::ShutDown(
            "the guest reset the machine through the i8042 controller".into(),
        ));
        Ok(())
    }
}

/// Accesses nothing claims, counted.
#[derive(Debug, Default)]
pub struct UnknownAccesses {
    /// Port reads and writes.
    pub ports: AtomicU64,
    /// MMIO reads and writes.
    pub mmio: AtomicU64,
}

/// The devices the vCPUs reach through I/O exits.
pub struct IoBus {
    com1: Arc<Mutex<Serial>>,
    com2: Option<Arc<Mutex<Serial>>>,
    i8042: Mutex<I8042Device<ResetTrigger>>,
    /// What unclaimed accesses there were.
    pub unknown: UnknownAccesses,
}

impl std::fmt::Debug for IoBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBus")
            .field("unknown", &self.unknown)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn note(counter: &AtomicU64, kind: &str, addr: u64, len: usize) {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 8 || n.is_power_of_two() {
        tracing::debug!(
            kind,
            addr = format_args!("{addr:#x}"),
            len,
            total = n,
            "unclaimed guest access"
        );
    }
}

impl IoBus {
    /// A bus with COM1, optionally COM2, and an i8042 wired to `status`.
    pub fn new(
        com1: Arc<Mutex<Serial>>,
        com2: Option<Arc<Mutex<Serial>>>,
        status: Arc<VmStatus>,
    ) -> Self {
        Self {
            com1,
            com2,
            i8042: Mutex::new(I8042Device::new(ResetTrigger(status))),
            unknown: UnknownAccesses::default(),
        }
    }

    fn serial_at(&self, port: u16) -> Option<(&Mutex<Serial>, u8)> {
        if (COM1..COM1 + 8).contains(&port) {
            Some((&self.com1, (port - COM1) as u8))
        } else if (COM2..COM2 + 8).contains(&port) {
            self.com2.as_deref().map(|c| (c, (port - COM2) as u8))
        } else {
            None
        }
    }

    /// A port read (`data` is `size * count` bytes; string I/O repeats on one port).
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        if let Some((serial, offset)) = self.serial_at(port) {
            let mut s = lock(serial);
            for b in data.iter_mut() {
                *b = s.read(offset);
            }
        } else if port == I8042 || port == I8042 + 4 {
            let mut k = lock(&self.i8042);
            for b in data.iter_mut() {
                *b = k.read((port - I8042) as u8);
            }
        } else {
            note(
                &self.unknown.ports,
                "port read",
                u64::from(port),
                data.len(),
            );
            data.fill(0xff);
        }
    }

    /// A port write.
    pub fn pio_write(&self, port: u16, data: &[u8]) {
        if let Some((serial, offset)) = self.serial_at(port) {
            let mut s = lock(serial);
            for &b in data {
                if let Err(e) = s.write(offset, b) {
                    tracing::debug!(port, error = %e, "serial write failed");
                }
            }
        } else if port == I8042 || port == I8042 + 4 {
            let mut k = lock(&self.i8042);
            for &b in data {
                let _ = k.write((port - I8042) as u8, b);
            }
        } else {
            note(
                &self.unknown.ports,
                "port write",
                u64::from(port),
                data.len(),
            );
        }
    }

    /// An MMIO read outside RAM and the in-kernel devices: all ones.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        note(&self.unknown.mmio, "mmio read", addr, data.len());
        data.fill(0xff);
    }

    /// An MMIO write outside RAM and the in-kernel devices: ignored.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        note(&self.unknown.mmio, "mmio write", addr, data.len());
    }
}
