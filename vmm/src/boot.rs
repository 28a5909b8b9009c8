//! Linux boot: loads a vmlinux ELF or a bzImage with linux-loader, places the command
//! line and initrd, and describes memory to the kernel — in the zero page
//! (`struct boot_params`) for the 64-bit entry, or in `hvm_start_info` for PVH.

use crate::cpu::EntryMode;
use crate::layout::{
    MemoryLayout, CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIMEM_START, PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemoryMmap;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Cmdline, Elf, KernelLoader};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use vm_memory::{ByteValued, Bytes, GuestAddress};

/// Loading the kernel or writing boot structures failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The kernel image is not a loadable vmlinux or bzImage.
    #[error("kernel {path}: {detail}")]
    Kernel {
        /// Which file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The command line is unusable.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// The initrd does not fit.
    #[error("initrd {path}: {detail}")]
    Initrd {
        /// Which file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Writing a boot structure failed.
    #[error("writing {what} to guest memory: {detail}")]
    Memory {
        /// What.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// Where the kernel was put and how to enter it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedKernel {
    /// How the boot vCPU enters.
    pub mode: EntryMode,
    /// The entry address.
    pub entry: u64,
    /// One past the highest byte the kernel occupies.
    pub kernel_end: u64,
    /// The bzImage setup header, when the image was one.
    pub setup_header: Option<SetupHeader>,
}

/// A bzImage's setup header (opaque; copied into the zero page).
#[derive(Clone, Copy)]
pub struct SetupHeader(setup_header);

impl std::fmt::Debug for SetupHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.0.version;
        f.debug_struct("SetupHeader")
            .field("version", &version)
            .finish()
    }
}
impl PartialEq for SetupHeader {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice() == other.0.as_slice()
    }
}
impl Eq for SetupHeader {}

/// The bzImage header flag: the kernel has a 64-bit entry point at `code32_start + 0x200`.
const XLF_KERNEL_64: u16 = 1;

/// Loads the kernel at `path`: an ELF vmlinux (entered through its PVH note if it has one
/// and `allow_pvh`, else at `e_entry` in 64-bit mode) or a bzImage (64-bit entry).
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    allow_pvh: bool,
) -> Result<LoadedKernel, BootError> {
    let io = |source| BootError::Io {
        path: path.to_path_buf(),
        source,
    };
    let kernel_err = |detail: String| BootError::Kernel {
        path: path.to_path_buf(),
        detail,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|e| kernel_err(format!("too short to be a kernel ({e})")))?;
    if magic == *b"\x7fELF" {
        let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
            .map_err(|e| kernel_err(format!("not a loadable vmlinux ELF: {e}")))?;
        let (mode, entry) = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) if allow_pvh => (EntryMode::Pvh, addr.0),
            _ => (EntryMode::Linux64, r.kernel_load.0),
        };
        Ok(LoadedKernel {
            mode,
            entry,
            kernel_end: r.kernel_end,
            setup_header: None,
        })
    } else {
        let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
            .map_err(|e| kernel_err(format!("neither a vmlinux ELF nor a bzImage: {e}")))?;
        let hdr = r
            .setup_header
            .ok_or_else(|| kernel_err("bzImage without a setup header".into()))?;
        let xloadflags = hdr.xloadflags;
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(kernel_err("bzImage has no 64-bit entry point".into()));
        }
        let size = std::fs::metadata(path).map_err(io)?.len();
        Ok(LoadedKernel {
            mode: EntryMode::Linux64,
            entry: r.kernel_load.0 + 0x200,
            kernel_end: r.kernel_load.0 + size,
            setup_header: Some(SetupHeader(hdr)),
        })
    }
}

/// Validates the command line and writes it at [`CMDLINE_ADDR`]. Returns its length.
pub fn load_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, BootError> {
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(BootError::Cmdline(format!(
            "{} bytes, more than the {} the kernel accepts",
            cmdline.len(),
            CMDLINE_MAX_SIZE - 1
        )));
    }
    let c = Cmdline::try_from(cmdline, CMDLINE_MAX_SIZE)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &c)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    Ok(cmdline.len())
}

/// Where an initrd went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Copies the initrd to the top of low RAM (below `max_addr`), above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    kernel: &LoadedKernel,
    path: &Path,
) -> Result<InitrdPlacement, BootError> {
    let data = std::fs::read(path).map_err(|source| BootError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let size = data.len() as u64;
    let limit = kernel
        .setup_header
        .map(|h| u64::from(h.0.initrd_addr_max) + 1)
        .unwrap_or(u64::MAX)
        .min(layout.low_ram_end());
    let err = |detail: String| BootError::Initrd {
        path: path.to_path_buf(),
        detail,
    };
    let addr = limit
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel.kernel_end.max(HIMEM_START))
        .ok_or_else(|| {
            err(format!(
                "{size} bytes do not fit between the kernel (ends {:#x}) and {limit:#x}",
                kernel.kernel_end
            ))
        })?;
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(|e| err(e.to_string()))?;
    Ok(InitrdPlacement { addr, size })
}

/// The zero page for the 64-bit entry: setup header (from the bzImage, or a minimal one),
/// command line, initrd and the e820 map of `layout`.
pub fn build_boot_params(
    layout: &MemoryLayout,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(SetupHeader(hdr)) = kernel.setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = 0xaa55;
        params.hdr.header = 0x5372_6448; // "HdrS"
        params.hdr.kernel_alignment = 0x0100_0000;
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    let e820 = layout.e820();
    for (slot, e) in params.e820_table.iter_mut().zip(e820.iter()) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind.code(),
        };
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    params
}

/// Writes the zero page at [`ZERO_PAGE_ADDR`].
pub fn write_boot_params(mem: &GuestMemoryMmap, params: &boot_params) -> Result<(), BootError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|e| BootError::Memory {
            what: "boot_params",
            detail: e.to_string(),
        })
}

/// Writes `hvm_start_info` at [`PVH_INFO_ADDR`], its memory map and module list after it,
/// with linux-loader's PVH types and boot configurator.
pub fn write_pvh_info(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    initrd: Option<InitrdPlacement>,
) -> Result<(), BootError> {
    let e820 = layout.e820();
    let memmap_addr = PVH_INFO_ADDR + std::mem::size_of::<hvm_start_info>() as u64;
    let memmap: Vec<hvm_memmap_table_entry> = e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind.code(),
            reserved: 0,
        })
        .collect();
    let modlist_addr =
        memmap_addr + (std::mem::size_of::<hvm_memmap_table_entry>() * memmap.len()) as u64;
    let modules: Vec<hvm_modlist_entry> = initrd
        .iter()
        .map(|i| hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            ..Default::default()
        })
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: memmap_addr,
        memmap_entries: memmap.len() as u32,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { modlist_addr },
        ..Default::default()
    };
    let mut params = BootParams::new::<hvm_start_info>(&info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections::<hvm_memmap_table_entry>(&memmap, GuestAddress(memmap_addr));
    if !modules.is_empty() {
        params.set_modules::<hvm_modlist_entry>(&modules, GuestAddress(modlist_addr));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem).map_err(|e| {
        BootError::Memory {
            what: "hvm_start_info",
            detail: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: u64) -> (MemoryLayout, GuestMemoryMmap) {
        let layout = MemoryLayout::new(size).unwrap();
        let mem = crate::memory::create(&layout).unwrap();
        (layout, mem)
    }

    #[test]
    fn boot_params_fields() {
        let (layout, mem) = mem(128 << 20);
        let kernel = LoadedKernel {
            mode: EntryMode::Linux64,
            entry: 0x100_0000,
            kernel_end: 0x200_0000,
            setup_header: None,
        };
        let len = load_cmdline(&mem, "console=ttyS0 marker=42").unwrap();
        let initrd = InitrdPlacement {
            addr: 0x700_0000,
            size: 0x1234,
        };
        let p = build_boot_params(&layout, &kernel, len, Some(initrd));
        write_boot_params(&mem, &p).unwrap();
        let back: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let hdr = back.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ hdr.cmdline_size }, 23);
        assert_eq!({ hdr.ramdisk_image }, 0x700_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1234);
        assert_eq!(back.e820_entries, 3);
        let last = back.e820_table[2];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (HIMEM_START, (128 << 20) - HIMEM_START, 1)
        );
        // The raw offsets the probe guests and Linux read.
        let raw = back.as_slice();
        assert_eq!(raw[0x1e8], 3);
        assert_eq!(
            u32::from_le_bytes(raw[0x228..0x22c].try_into().unwrap()),
            CMDLINE_ADDR as u32
        );
        let mut cmd = [0u8; 24];
        mem.read_slice(&mut cmd, GuestAddress(CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&cmd, b"console=ttyS0 marker=42\0");
    }

    #[test]
    fn pvh_start_info_names_the_memory_map_and_the_initrd() {
        let (layout, mem) = mem(128 << 20);
        let initrd = InitrdPlacement {
            addr: 0x700_0000,
            size: 0x1234,
        };
        write_pvh_info(&mem, &layout, Some(initrd)).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(info.memmap_entries as usize, layout.e820().len());
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(
                info.memmap_paddr + 24 * (u64::from(info.memmap_entries) - 1),
            ))
            .unwrap();
        assert_eq!(
            (last.addr, last.size, last.type_),
            (HIMEM_START, (128 << 20) - HIMEM_START, 1)
        );
        assert_eq!(info.nr_modules, 1);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((m.paddr, m.size), (0x700_0000, 0x1234));
        // Everything fits in the page the layout keeps for it.
        assert!(info.modlist_paddr + 32 <= PVH_INFO_ADDR + 0x1000);
    }

    #[test]
    fn bad_command_lines_are_errors() {
        let (_, mem) = mem(16 << 20);
        assert!(load_cmdline(&mem, &"x".repeat(CMDLINE_MAX_SIZE)).is_err());
        assert!(load_cmdline(&mem, "a\0b").is_err());
    }

    #[test]
    fn garbage_kernels_are_errors() {
        let (_, mem) = mem(16 << 20);
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            load_kernel(&mem, &empty, true),
            Err(BootError::Kernel { .. })
        ));
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        assert!(matches!(
            load_kernel(&mem, &junk, true),
            Err(BootError::Kernel { .. })
        ));
        let elf = dir.path().join("elf");
        let mut bytes = b"\x7fELF".to_vec();
        bytes.extend(vec![0xff; 100]);
        std::fs::write(&elf, bytes).unwrap();
        assert!(matches!(
            load_kernel(&mem, &elf, true),
            Err(BootError::Kernel { .. })
        ));
        assert!(matches!(
            load_kernel(&mem, &dir.path().join("missing"), true),
            Err(BootError::Io { .. })
        ));
    }

    #[test]
    fn initrd_goes_high_and_refuses_overlap() {
        let (layout, mem) = mem(64 << 20);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let kernel = LoadedKernel {
            mode: EntryMode::Linux64,
            entry: 0x100_0000,
            kernel_end: 0x200_0000,
            setup_header: None,
        };
        let p = load_initrd(&mem, &layout, &kernel, &path).unwrap();
        assert_eq!(p.addr % 4096, 0);
        assert!(p.addr + p.size <= 64 << 20 && p.addr >= 0x200_0000);
        let big = LoadedKernel {
            kernel_end: (64 << 20) - 4096,
            ..kernel
        };
        assert!(load_initrd(&mem, &layout, &big, &path).is_err());
    }
}
