//! The architectural state a vCPU starts in: the GDT, identity page tables, segment and
//! control registers for 64-bit (Linux boot protocol) or 32-bit (PVH) entry, general
//! registers, the FPU, the boot MSRs and the LAPIC's LINT0/LINT1.

use crate::layout::{
    BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PML4_ADDR, PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemoryMmap;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EntryMode {
    /// 64-bit long mode, paging on, `rsi` = the zero page (Linux x86-64 boot protocol).
    Linux64,
    /// 32-bit protected mode, paging off, `ebx` = `hvm_start_info` (PVH).
    Pvh,
}

/// Setting up a vCPU failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// Writing a boot structure into guest memory failed.
    #[error("writing {what} to guest memory: {detail}")]
    Memory {
        /// What.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A vCPU ioctl failed.
    #[error("{ioctl}: {source}")]
    Kvm {
        /// The ioctl.
        ioctl: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
}

fn kvm(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { ioctl, source }
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT descriptor from its flags (access byte and granularity nibble), base and limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << 32)
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << 32)
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

/// The `kvm_segment` that loading selector `index * 8` from a GDT holding `entry` gives.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

/// The GDT for an entry mode: null, code, data, TSS.
pub fn gdt(mode: EntryMode) -> [u64; 4] {
    let code = match mode {
        EntryMode::Linux64 => gdt_entry(0xa09b, 0, 0xfffff),
        EntryMode::Pvh => gdt_entry(0xc09b, 0, 0xfffff),
    };
    [
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    val: T,
    addr: u64,
) -> Result<(), CpuError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|e| CpuError::Memory {
            what,
            detail: e.to_string(),
        })
}

/// Writes identity page tables mapping the first 4 GiB with 2 MiB pages: a PML4, one PDPT
/// and four page directories from [`PML4_ADDR`]. Returns the CR3 value.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<u64, CpuError> {
    let pdpt = PML4_ADDR + 0x1000;
    let pd = PML4_ADDR + 0x2000;
    write(mem, "PML4", pdpt | 0x3, PML4_ADDR)?;
    for i in 0..4u64 {
        write(mem, "PDPT", (pd + i * 0x1000) | 0x3, pdpt + i * 8)?;
        for j in 0..512u64 {
            let page = ((i * 512 + j) << 21) | 0x83;
            write(mem, "page directory", page, pd + i * 0x1000 + j * 8)?;
        }
    }
    Ok(PML4_ADDR)
}

/// Special registers for `mode`: GDT/IDT, segments, and CR0/CR3/CR4/EFER.
pub fn boot_sregs(
    mem: &GuestMemoryMmap,
    mode: EntryMode,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, CpuError> {
    let table = gdt(mode);
    for (i, entry) in table.iter().enumerate() {
        write(mem, "GDT", *entry, GDT_ADDR + i as u64 * 8)?;
    }
    write(mem, "IDT", 0u64, IDT_ADDR)?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    let code = segment_from_gdt(table[1], 1);
    let data = segment_from_gdt(table[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(table[3], 3);
    match mode {
        EntryMode::Linux64 => {
            sregs.cr3 = write_page_tables(mem)?;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_PG | CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(sregs)
}

/// General registers of the boot vCPU entering at `entry`.
pub fn boot_regs(mode: EntryMode, entry: u64) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_ADDR;
        }
        EntryMode::Pvh => regs.rbx = PVH_INFO_ADDR,
    }
    regs
}

/// The MSRs every vCPU starts with (as Linux expects from firmware): syscall MSRs cleared,
/// fast strings on, MTRRs enabled with write-back default.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    const ENTRIES: [(u32, u64); 11] = [
        (0x174, 0),               // IA32_SYSENTER_CS
        (0x175, 0),               // IA32_SYSENTER_ESP
        (0x176, 0),               // IA32_SYSENTER_EIP
        (0xc000_0081, 0),         // STAR
        (0xc000_0082, 0),         // LSTAR
        (0xc000_0083, 0),         // CSTAR
        (0xc000_0084, 0),         // SYSCALL_MASK
        (0xc000_0102, 0),         // KERNEL_GS_BASE
        (0x10, 0),                // IA32_TSC
        (0x1a0, 1),               // IA32_MISC_ENABLE: fast strings
        (0x2ff, (1 << 11) | 0x6), // MTRRdefType: enabled, write-back
    ];
    ENTRIES
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect()
}

/// Programs the FPU, MSRs and LAPIC of any vCPU (LINT0 = ExtINT, LINT1 = NMI).
pub fn setup_common(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;
    let entries = boot_msrs();
    let msrs = Msrs::from_entries(&entries).map_err(|e| CpuError::Memory {
        what: "MSR list",
        detail: format!("{e:?}"),
    })?;
    let written = vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
    if written != entries.len() {
        tracing::warn!(
            written,
            wanted = entries.len(),
            "KVM accepted only some boot MSRs"
        );
    }
    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    set_lapic_reg(&mut lapic.regs, 0x350, 7 << 8); // LVT LINT0: ExtINT
    set_lapic_reg(&mut lapic.regs, 0x360, 4 << 8); // LVT LINT1: NMI
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    Ok(())
}

fn set_lapic_reg(regs: &mut [std::os::raw::c_char; 1024], offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

/// Puts the boot vCPU at `entry` in `mode`.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    mode: EntryMode,
    entry: u64,
) -> Result<(), CpuError> {
    let sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let sregs = boot_sregs(mem, mode, sregs)?;
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(&boot_regs(mode, entry))
        .map_err(kvm("KVM_SET_REGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_round_trip() {
        let code = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!((code.selector, code.l, code.db, code.g), (8, 1, 0, 1));
        assert_eq!((code.type_, code.present, code.s), (0xb, 1, 1));
        assert_eq!(code.limit, 0xffff_ffff);
        let pvh = segment_from_gdt(gdt(EntryMode::Pvh)[1], 1);
        assert_eq!((pvh.l, pvh.db), (0, 1));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn page_tables_identity_map_4g() {
        let layout = crate::layout::MemoryLayout::new(32 << 20).unwrap();
        let mem = crate::memory::create(&layout).unwrap();
        let cr3 = write_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(cr3)).unwrap();
        let pdpt = pml4 & !0xfff;
        let pdpt3: u64 = mem.read_obj(GuestAddress(pdpt + 24)).unwrap();
        let last: u64 = mem
            .read_obj(GuestAddress((pdpt3 & !0xfff) + 511 * 8))
            .unwrap();
        assert_eq!(last & !0xfff, 0xffe0_0000);
        assert_eq!(last & 0x83, 0x83);
        let sregs = boot_sregs(&mem, EntryMode::Linux64, kvm_sregs::default()).unwrap();
        assert_eq!(sregs.cr3, PML4_ADDR);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        let regs = boot_regs(EntryMode::Linux64, 0x100_0000);
        assert_eq!((regs.rip, regs.rsi), (0x100_0000, ZERO_PAGE_ADDR));
    }
}
