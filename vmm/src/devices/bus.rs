//! Port I/O and MMIO dispatch. Port devices sit on a range-keyed map of [`BusDevice`]s (as
//! Firecracker's `vstate/bus.rs`): COM1 (0x3f8, console), COM2 (0x2f8, agent) and the
//! i8042 (0x60 and 0x64); the PIC, PIT and LAPIC/IOAPIC live in KVM. Every other port reads
//! as 0xff and swallows writes, and every MMIO access outside RAM reads as all ones:
//! counted, logged at a bounded rate, never fatal.

use super::Serial;
use crate::state::{VmState, VmStatus};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vm_superio::I8042Device;

/// COM1 base port.
pub const COM1: u16 = 0x3f8;
/// COM2 base port.
pub const COM2: u16 = 0x2f8;
/// The i8042 data port; the command/status port is at +4.
pub const I8042: u16 = 0x60;

/// A device on a bus: it sees accesses at offsets from its base.
pub trait BusDevice: Send {
    /// A read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Two devices claimed overlapping ranges.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps a device already there")]
pub struct Overlap {
    /// The base that was asked for.
    pub base: u64,
    /// Its length.
    pub len: u64,
}

/// Devices keyed by the ranges they claim, ranges never overlapping.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, (u64, Arc<Mutex<dyn BusDevice>>)>,
}

impl Bus {
    /// Claims `base..base + len` for `device`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), Overlap> {
        let end = base.checked_add(len).ok_or(Overlap { base, len })?;
        let before = self.devices.range(..end).next_back();
        let overlaps = len == 0 || before.is_some_and(|(b, (l, _))| b.saturating_add(*l) > base);
        if overlaps {
            return Err(Overlap { base, len });
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    /// The device claiming `addr`, and `addr`'s offset in its range.
    fn find(&self, addr: u64) -> Option<(u64, &Arc<Mutex<dyn BusDevice>>)> {
        let (base, (len, device)) = self.devices.range(..=addr).next_back()?;
        (addr - base < *len).then_some((addr - base, device))
    }

    /// Reads from the device at `addr`; false when no device claims it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; false when no device claims it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                lock(device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// A 16550A on the bus: string I/O repeats on one register.
impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let register = offset as u8;
        for b in data.iter_mut() {
            *b = Serial::read(self, register);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let register = offset as u8;
        for &b in data {
            if let Err(e) = Serial::write(self, register, b) {
                tracing::debug!(register, error = %e, "serial write failed");
            }
        }
    }
}

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

/// One of the i8042's two ports on the bus (data at 0x60, command/status at 0x64), both
/// reaching one controller.
struct I8042Port {
    /// The port's offset from [`I8042`] (0 or 4), as the controller knows it.
    register: u8,
    controller: Arc<Mutex<I8042Device<ResetTrigger>>>,
}

impl BusDevice for I8042Port {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        let mut k = lock(&self.controller);
        for b in data.iter_mut() {
            *b = k.read(self.register);
        }
    }

    fn write(&mut self, _: u64, data: &[u8]) {
        let mut k = lock(&self.controller);
        for &b in data {
            // Its only error is the reset trigger's, which cannot fail.
            if k.write(self.register, b).is_err() {
                tracing::debug!("i8042 write failed");
            }
        }
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
    pio: Bus,
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

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    ) -> Result<Self, Overlap> {
        let mut pio = Bus::default();
        pio.insert(u64::from(COM1), 8, com1)?;
        if let Some(com2) = com2 {
            pio.insert(u64::from(COM2), 8, com2)?;
        }
        let controller = Arc::new(Mutex::new(I8042Device::new(ResetTrigger(status))));
        for register in [0u8, 4] {
            let port = I8042Port {
                register,
                controller: controller.clone(),
            };
            pio.insert(
                u64::from(I8042 + u16::from(register)),
                1,
                Arc::new(Mutex::new(port)),
            )?;
        }
        Ok(Self {
            pio,
            unknown: UnknownAccesses::default(),
        })
    }

    /// A port read (`data` is `size * count` bytes; string I/O repeats on one port).
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        if !self.pio.read(u64::from(port), data) {
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
        if !self.pio.write(u64::from(port), data) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it sees.
    #[derive(Default)]
    struct Probe(Vec<(u64, Vec<u8>)>);

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn devices_see_offsets_within_their_ranges_only() {
        let mut bus = Bus::default();
        let a = Arc::new(Mutex::new(Probe::default()));
        bus.insert(0x100, 8, a.clone()).unwrap();
        let mut byte = [0u8; 1];
        assert!(bus.read(0x103, &mut byte));
        assert_eq!(byte, [3]);
        assert!(bus.write(0x107, &[9]));
        assert!(!bus.write(0x108, &[9]));
        assert!(!bus.read(0xff, &mut byte));
        assert_eq!(lock(&a).0, vec![(7, vec![9])]);
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = Bus::default();
        bus.insert(0x100, 8, Arc::new(Mutex::new(Probe::default())))
            .unwrap();
        for (base, len) in [(0x100, 1), (0xfc, 5), (0x107, 4), (0x0, 0x1000), (0x200, 0)] {
            assert!(
                bus.insert(base, len, Arc::new(Mutex::new(Probe::default())))
                    .is_err(),
                "{base:#x}+{len:#x}"
            );
        }
        bus.insert(0x108, 8, Arc::new(Mutex::new(Probe::default())))
            .unwrap();
        bus.insert(0xf8, 8, Arc::new(Mutex::new(Probe::default())))
            .unwrap();
        assert!(bus
            .insert(u64::MAX, 2, Arc::new(Mutex::new(Probe::default())))
            .is_err());
    }
}
