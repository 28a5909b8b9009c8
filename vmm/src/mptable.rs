//! The Intel MultiProcessor Specification 1.4 table: how a guest learns its processors
//! (APIC ids 0..n, the first the bootstrap processor), the IOAPIC and the ISA interrupt
//! routing without ACPI. Written at [`MPTABLE_ADDR`] in the EBDA.

use crate::layout::{LOW_RAM_END, MPTABLE_ADDR};
use crate::memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

/// Most vCPUs the table (and the VMM) describes.
pub const MAX_VCPUS: u8 = 32;
/// The local APIC base address.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// The IOAPIC base address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// IOAPIC pins routed 1:1 from the ISA bus.
const IRQ_COUNT: u8 = 24;

/// The table could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MpTableError {
    /// Too many or no vCPUs.
    #[error("{0} vCPUs cannot be described (1..={MAX_VCPUS})")]
    VcpuCount(u8),
    /// The table does not fit below 640 KiB.
    #[error("MP table of {0} bytes does not fit in the EBDA")]
    TooBig(usize),
    /// Guest memory refused the write.
    #[error("writing the MP table: {0}")]
    Memory(String),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The table bytes for `vcpus` processors, to be placed at [`MPTABLE_ADDR`]: the floating
/// pointer structure, then the configuration table with its entries.
pub fn build(vcpus: u8) -> Result<Vec<u8>, MpTableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MpTableError::VcpuCount(vcpus));
    }
    let table_addr = MPTABLE_ADDR as u32 + 16;
    let ioapic_id = vcpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        // Processor entry: type 0, APIC id, version, flags (enabled, BSP), signature,
        // feature flags (FPU, APIC), reserved.
        entries.extend_from_slice(&[0, cpu, 0x14, if cpu == 0 { 3 } else { 1 }]);
        entries.extend_from_slice(&0x600u32.to_le_bytes());
        entries.extend_from_slice(&0x201u32.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // Bus entry: type 1, bus 0, "ISA   ".
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    // IOAPIC entry: type 2, id, version, enabled, address.
    entries.extend_from_slice(&[2, ioapic_id, 0x11, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    // I/O interrupt entries: type 3, INT, flags conforming, bus 0 IRQ n -> IOAPIC pin n.
    for irq in 0..IRQ_COUNT {
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupt entries: ExtINT -> LINT0 of all, NMI -> LINT1 of all.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"MODVISOR");
    header.extend_from_slice(b"VMM         ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&APIC_ADDR.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_addr.to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    if MPTABLE_ADDR + fp.len() as u64 > LOW_RAM_END {
        return Err(MpTableError::TooBig(fp.len()));
    }
    Ok(fp)
}

/// Writes the table for `vcpus` processors into guest memory.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MpTableError> {
    let bytes = build(vcpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_ADDR))
        .map_err(|e| MpTableError::Memory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_processor_entries() {
        let t = build(4).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        let table = &t[(ptr - MPTABLE_ADDR) as usize..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        // Four processor entries, the first the BSP.
        for cpu in 0..4 {
            let e = &table[44 + cpu * 20..];
            assert_eq!((e[0], e[1]), (0, cpu as u8));
            assert_eq!(e[3] & 2 != 0, cpu == 0);
        }
    }

    #[test]
    fn vcpu_bounds() {
        assert_eq!(build(0), Err(MpTableError::VcpuCount(0)));
        assert_eq!(build(33), Err(MpTableError::VcpuCount(33)));
        assert!(build(MAX_VCPUS).is_ok());
    }
}
