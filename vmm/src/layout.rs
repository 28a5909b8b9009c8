//! The guest-physical address map of an x86-64 VM: where RAM lives (below the 32-bit MMIO
//! gap, the rest above 4 GiB), where the boot structures go, and the e820 map that
//! describes it to the guest.

/// Start of the 32-bit MMIO gap (IOAPIC, LAPIC, firmware would live here): RAM stops below.
pub const MMIO_GAP_START: u64 = 0xC000_0000;
/// End of the 32-bit MMIO gap: RAM beyond the gap starts here (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The GDT the vCPUs start with.
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT (the guest installs its own).
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU (grows down, below the page tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The PML4 of the identity page tables; the PDPT and four page directories follow.
pub const PML4_ADDR: u64 = 0x9000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line we pass (Linux's `COMMAND_LINE_SIZE` on x86-64).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// The MP floating pointer and configuration table (in the EBDA).
pub const MPTABLE_ADDR: u64 = 0x9_fc00;
/// End of conventional low memory (the legacy VGA hole and ROMs follow).
pub const LOW_RAM_END: u64 = 0xA_0000;
/// Where high memory starts: kernels load at or above this.
pub const HIMEM_START: u64 = 0x10_0000;
/// Smallest guest RAM we accept.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Largest guest RAM we accept (a sanity bound, not a host limit).
pub const MAX_MEMORY: u64 = 1 << 40;

/// An e820 range type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum E820Type {
    /// Usable RAM (type 1).
    Ram,
    /// Reserved (type 2).
    Reserved,
}

impl E820Type {
    /// The numeric type of the e820 specification.
    pub fn code(self) -> u32 {
        match self {
            E820Type::Ram => 1,
            E820Type::Reserved => 2,
        }
    }
}

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Kind of range.
    pub kind: E820Type,
}

impl E820Entry {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The memory layout of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Guest RAM in bytes.
    pub size: u64,
    /// The RAM regions as (guest address, length), sorted, disjoint, none in the MMIO gap.
    pub regions: Vec<(u64, u64)>,
}

/// The memory size is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Too small or too large.
    #[error("guest memory of {size} bytes is out of range ({MIN_MEMORY}..={MAX_MEMORY})")]
    Size {
        /// The size asked for.
        size: u64,
    },
    /// Not page aligned.
    #[error("guest memory of {size} bytes is not a multiple of 4 KiB")]
    Alignment {
        /// The size asked for.
        size: u64,
    },
}

impl MemoryLayout {
    /// The layout for `size` bytes of RAM: below the MMIO gap first, the rest above 4 GiB.
    pub fn new(size: u64) -> Result<Self, LayoutError> {
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&size) {
            return Err(LayoutError::Size { size });
        }
        if size % 4096 != 0 {
            return Err(LayoutError::Alignment { size });
        }
        let low = size.min(MMIO_GAP_START);
        let mut regions = vec![(0, low)];
        if size > low {
            regions.push((MMIO_GAP_END, size - low));
        }
        Ok(Self { size, regions })
    }

    /// The end of RAM below the MMIO gap.
    pub fn low_ram_end(&self) -> u64 {
        self.regions.first().map_or(0, |r| r.0 + r.1)
    }

    /// The e820 map we give the guest: low RAM, the EBDA/BIOS hole as reserved, the rest
    /// of RAM below the gap, and RAM above 4 GiB.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut map = vec![
            E820Entry {
                addr: 0,
                size: MPTABLE_ADDR,
                kind: E820Type::Ram,
            },
            E820Entry {
                addr: MPTABLE_ADDR,
                size: HIMEM_START - MPTABLE_ADDR,
                kind: E820Type::Reserved,
            },
            E820Entry {
                addr: HIMEM_START,
                size: self.low_ram_end() - HIMEM_START,
                kind: E820Type::Ram,
            },
        ];
        if let Some(&(addr, size)) = self.regions.get(1) {
            map.push(E820Entry {
                addr,
                size,
                kind: E820Type::Ram,
            });
        }
        map
    }

    /// Whether `[addr, addr+len)` lies wholly inside RAM.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.regions
            .iter()
            .any(|&(start, size)| addr >= start && end <= start + size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vm_is_one_region_below_the_gap() {
        let l = MemoryLayout::new(256 << 20).unwrap();
        assert_eq!(l.regions, vec![(0, 256 << 20)]);
        assert_eq!(l.low_ram_end(), 256 << 20);
        let e820 = l.e820();
        assert_eq!(e820.len(), 3);
        assert_eq!(e820[2].end(), 256 << 20);
        assert!(l.contains(HIMEM_START, 4096));
        assert!(!l.contains((256 << 20) - 1, 2));
        assert!(!l.contains(u64::MAX, 2));
    }

    #[test]
    fn large_vm_splits_around_the_mmio_gap() {
        let l = MemoryLayout::new(4 << 30).unwrap();
        assert_eq!(
            l.regions,
            vec![
                (0, MMIO_GAP_START),
                (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START)
            ]
        );
        let e820 = l.e820();
        assert_eq!(e820.len(), 4);
        assert_eq!(e820[3].addr, 4 << 30);
        assert!(e820
            .iter()
            .all(|e| e.end() <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
        // Sorted and disjoint.
        for w in e820.windows(2) {
            assert!(w[0].end() <= w[1].addr);
        }
        assert!(!l.contains(MMIO_GAP_START, 1));
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert_eq!(
            MemoryLayout::new(1 << 20),
            Err(LayoutError::Size { size: 1 << 20 })
        );
        assert_eq!(
            MemoryLayout::new((64 << 20) + 1),
            Err(LayoutError::Alignment {
                size: (64 << 20) + 1
            })
        );
        assert!(MemoryLayout::new(u64::MAX).is_err());
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (GDT_ADDR, 0x20),
            (IDT_ADDR, 8),
            (PVH_INFO_ADDR, 0x1000),
            (ZERO_PAGE_ADDR, 0x1000),
            (PML4_ADDR, 6 * 0x1000),
            (CMDLINE_ADDR, CMDLINE_MAX_SIZE as u64),
            (MPTABLE_ADDR, LOW_RAM_END - MPTABLE_ADDR),
        ];
        areas.sort();
        for w in areas.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{:x?}", w);
        }
        const { assert!(BOOT_STACK_POINTER < PML4_ADDR && BOOT_STACK_POINTER > ZERO_PAGE_ADDR + 0x1000) };
    }
}
