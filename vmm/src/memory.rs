//! Guest RAM: one anonymous mapping per region of the [`MemoryLayout`], each registered
//! with KVM by `KVM_SET_USER_MEMORY_REGION` after checking that no two overlap.

use crate::layout::MemoryLayout;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

/// The guest RAM type used throughout the VMM.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Creating or registering guest RAM failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host could not map the RAM.
    #[error("mapping guest memory: {0}")]
    Mmap(String),
    /// Two regions overlap (a layout bug, refused before KVM sees it).
    #[error("guest memory regions overlap: {a:#x?} and {b:#x?}")]
    Overlap {
        /// First region (start, length).
        a: (u64, u64),
        /// Second region (start, length).
        b: (u64, u64),
    },
    /// KVM refused a region.
    #[error("KVM_SET_USER_MEMORY_REGION for slot {slot}: {source}")]
    Register {
        /// The memory slot.
        slot: u32,
        /// The error.
        source: kvm_ioctls::Error,
    },
}

/// Checks that regions given as (start, length) are disjoint and do not wrap.
pub fn check_overlaps(regions: &[(u64, u64)]) -> Result<(), MemoryError> {
    let mut sorted = regions.to_vec();
    sorted.sort_unstable();
    for r in &sorted {
        if r.0.checked_add(r.1).is_none() {
            return Err(MemoryError::Overlap { a: *r, b: *r });
        }
    }
    for w in sorted.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            return Err(MemoryError::Overlap { a: w[0], b: w[1] });
        }
    }
    Ok(())
}

/// Maps the RAM of `layout` in this process (not yet visible to any VM).
pub fn create(layout: &MemoryLayout) -> Result<GuestMemoryMmap, MemoryError> {
    check_overlaps(&layout.regions)?;
    let ranges: Vec<(GuestAddress, usize)> = layout
        .regions
        .iter()
        .map(|&(start, len)| {
            usize::try_from(len)
                .map(|len| (GuestAddress(start), len))
                .map_err(|_| MemoryError::Mmap(format!("region of {len} bytes")))
        })
        .collect::<Result<_, _>>()?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Mmap(e.to_string()))
}

/// Registers every region of `mem` with the VM, one memory slot each.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    let regions: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
    check_overlaps(&regions)?;
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| MemoryError::Mmap(e.to_string()))?;
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes owned by `mem`, which
        // the VM keeps alive (the `Vm` holds both) for as long as the VM fd exists.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_are_refused() {
        assert!(check_overlaps(&[(0, 0x1000), (0x1000, 0x1000)]).is_ok());
        assert!(matches!(
            check_overlaps(&[(0x1000, 0x1000), (0, 0x1001)]),
            Err(MemoryError::Overlap { .. })
        ));
        assert!(check_overlaps(&[(u64::MAX - 1, 4)]).is_err());
    }

    #[test]
    fn memory_follows_the_layout() {
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let mem = create(&layout).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
