//! The ELF layer: checks that a byte string is a loadable x86-64 kernel module object and
//! finds its sections.
//!
//! The checks follow the kernel's own `elf_validity_check()` (every section inside the
//! file, a NUL-terminated section-name table, a `.gnu.linkonce.this_module` section) and
//! add a few of ours: no overlapping sections, no duplicate `.modinfo` or
//! `.gnu.linkonce.this_module`, a bounded section count.

use object::elf::{self, FileHeader64, SectionHeader64};
use object::read::elf::{FileHeader as _, SectionHeader as _};
use object::LittleEndian;

use crate::error::ParseError;

/// The most sections a module may have. Real modules have a few hundred at most
/// (Debian's largest, `xfs.ko`, has well under 100); the ELF format allows 65535.
pub const MAX_SECTIONS: usize = 4096;

/// Size of `Elf64_Ehdr`.
const EHDR_SIZE: u64 = 64;
/// Size of `Elf64_Shdr`.
const SHDR_SIZE: u64 = 64;
/// Length of `struct module.name` (`MODULE_NAME_LEN` = 64 - sizeof(unsigned long)).
const MODULE_NAME_LEN: usize = 56;
/// Offset of `name` in `struct module` on 64-bit kernels: `enum module_state state`
/// (4 bytes, padded to 8) then `struct list_head list` (16 bytes).
const MODULE_NAME_OFFSET: usize = 24;

/// The parts of a module's ELF image that vetting needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleElf<'a> {
    /// The bytes of the `.modinfo` section.
    pub modinfo: &'a [u8],
    /// The module name stored in `struct module` (`.gnu.linkonce.this_module`).
    pub this_module_name: String,
}

fn elf_err(reason: impl Into<String>) -> ParseError {
    ParseError::Elf(reason.into())
}

/// Parses `data` (the module without its appended signature) as an ELF64 little-endian
/// x86-64 relocatable object and returns its `.modinfo` bytes and `struct module` name.
pub(crate) fn parse(data: &[u8]) -> Result<ModuleElf<'_>, ParseError> {
    if data.len() < 4 || &data[..4] != elf::ELFMAG.as_slice() {
        return Err(ParseError::NotElf);
    }
    if (data.len() as u64) < EHDR_SIZE {
        return Err(elf_err(format!(
            "file is {} bytes, shorter than an ELF header",
            data.len()
        )));
    }
    match data.get(4..6) {
        Some([c, _]) if *c != elf::ELFCLASS64.0 => {
            return Err(ParseError::Unsupported(format!(
                "ELF class {c} (only 64-bit modules are supported)"
            )))
        }
        Some([_, d]) if *d != elf::ELFDATA2LSB.0 => {
            return Err(ParseError::Unsupported(format!(
                "ELF data encoding {d} (only little-endian modules are supported)"
            )))
        }
        _ => {}
    }
    let header = FileHeader64::<LittleEndian>::parse(data)
        .map_err(|e| elf_err(format!("bad ELF header: {e}")))?;
    let endian = LittleEndian;
    if header.e_type(endian) != elf::ET_REL {
        return Err(ParseError::Unsupported(format!(
            "ELF type {} (a kernel module is a relocatable object, ET_REL)",
            header.e_type(endian).0
        )));
    }
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(ParseError::Unsupported(format!(
            "ELF machine {} (only x86-64 modules are supported)",
            header.e_machine(endian).0
        )));
    }
    let sections = section_headers(header, data)?;
    check_layout(header, sections, data.len() as u64)?;
    let names = section_names(header, sections, data)?;

    let modinfo = unique_section(sections, &names, data, b".modinfo")?
        .ok_or_else(|| elf_err("no .modinfo section"))?;
    let this_module = unique_section(sections, &names, data, b".gnu.linkonce.this_module")?
        .ok_or_else(|| elf_err("no .gnu.linkonce.this_module section (not a kernel module)"))?;
    let this_module_name = struct_module_name(this_module)?;
    Ok(ModuleElf {
        modinfo,
        this_module_name,
    })
}

/// Reads the section header table, with the kernel's and our bounds.
fn section_headers<'a>(
    header: &FileHeader64<LittleEndian>,
    data: &'a [u8],
) -> Result<&'a [SectionHeader64<LittleEndian>], ParseError> {
    let endian = LittleEndian;
    let shnum = usize::from(header.e_shnum(endian));
    if shnum == 0 {
        // Extended section numbering (count in section 0) is not used by modules and the
        // kernel's loader does not accept it either.
        return Err(elf_err("no section headers (e_shnum is 0)"));
    }
    if shnum > MAX_SECTIONS {
        return Err(elf_err(format!(
            "{shnum} sections, more than the limit of {MAX_SECTIONS}"
        )));
    }
    if u64::from(header.e_shentsize(endian)) != SHDR_SIZE {
        return Err(elf_err(format!(
            "section header entry size {} (expected {SHDR_SIZE})",
            header.e_shentsize(endian)
        )));
    }
    let shoff = header.e_shoff(endian);
    let table_end = (shnum as u64)
        .checked_mul(SHDR_SIZE)
        .and_then(|n| n.checked_add(shoff))
        .ok_or_else(|| elf_err("section header table offset overflows"))?;
    if shoff < EHDR_SIZE || table_end > data.len() as u64 {
        return Err(elf_err(format!(
            "section header table [{shoff}, {table_end}) lies outside the file ({} bytes)",
            data.len()
        )));
    }
    header
        .section_headers(endian, data)
        .map_err(|e| elf_err(format!("bad section header table: {e}")))
}

/// Every section lies inside the file and no two sections, the ELF header or the section
/// header table overlap.
fn check_layout(
    header: &FileHeader64<LittleEndian>,
    sections: &[SectionHeader64<LittleEndian>],
    file_len: u64,
) -> Result<(), ParseError> {
    let endian = LittleEndian;
    let shoff = header.e_shoff(endian);
    // (start, end, label): the label is a section index, or usize::MAX for the headers.
    let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(sections.len() + 2);
    ranges.push((0, EHDR_SIZE, usize::MAX));
    ranges.push((shoff, shoff + sections.len() as u64 * SHDR_SIZE, usize::MAX));
    for (index, section) in sections.iter().enumerate() {
        let Some((offset, size)) = section.file_range(endian) else {
            continue;
        };
        let end = offset
            .checked_add(size)
            .ok_or_else(|| elf_err(format!("section {index}: offset + size overflows")))?;
        if end > file_len {
            return Err(elf_err(format!(
                "section {index} [{offset}, {end}) lies outside the file ({file_len} bytes)"
            )));
        }
        if size > 0 {
            ranges.push((offset, end, index));
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.0 < a.1 {
            let label = |i: usize| {
                if i == usize::MAX {
                    "the ELF headers".to_string()
                } else {
                    format!("section {i}")
                }
            };
            return Err(elf_err(format!(
                "{} [{}, {}) overlaps {} [{}, {})",
                label(a.2),
                a.0,
                a.1,
                label(b.2),
                b.0,
                b.1
            )));
        }
    }
    Ok(())
}

/// Returns each section's name, checking the section-name table the way the kernel does.
fn section_names<'a>(
    header: &FileHeader64<LittleEndian>,
    sections: &[SectionHeader64<LittleEndian>],
    data: &'a [u8],
) -> Result<Vec<&'a [u8]>, ParseError> {
    let endian = LittleEndian;
    let index = usize::from(header.e_shstrndx(endian).0);
    let strtab_header = sections
        .get(index)
        .filter(|_| index != 0)
        .ok_or_else(|| elf_err(format!("section name table index {index} is invalid")))?;
    if strtab_header.sh_type(endian) != elf::SHT_STRTAB {
        return Err(elf_err("section name table is not a string table"));
    }
    let strtab = strtab_header
        .data(endian, data)
        .map_err(|e| elf_err(format!("section name table: {e}")))?;
    if strtab.last() != Some(&0) {
        return Err(elf_err("section name table is not NUL-terminated"));
    }
    sections
        .iter()
        .enumerate()
        .map(|(i, section)| {
            let start = section.sh_name(endian) as usize;
            let rest = strtab.get(start..).ok_or_else(|| {
                elf_err(format!("section {i}: name offset {start} is out of range"))
            })?;
            // The table ends with NUL, so a NUL is always found.
            let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            Ok(&rest[..len])
        })
        .collect()
}

/// The data of the only section called `name`, or `None`; a second one is an error.
fn unique_section<'a>(
    sections: &[SectionHeader64<LittleEndian>],
    names: &[&[u8]],
    data: &'a [u8],
    name: &[u8],
) -> Result<Option<&'a [u8]>, ParseError> {
    let endian = LittleEndian;
    let mut found = None;
    for (section, section_name) in sections.iter().zip(names) {
        if *section_name != name {
            continue;
        }
        if found.is_some() {
            return Err(elf_err(format!(
                "more than one {} section",
                String::from_utf8_lossy(name)
            )));
        }
        if section.sh_flags(endian).0 & elf::SHF_ALLOC.0 == 0 {
            // The kernel's find_sec() only sees allocated sections: it would ignore this one.
            return Err(elf_err(format!(
                "{} section is not SHF_ALLOC (the kernel would not see it)",
                String::from_utf8_lossy(name)
            )));
        }
        if section.sh_type(endian) == elf::SHT_NOBITS {
            return Err(elf_err(format!(
                "{} section has no file data",
                String::from_utf8_lossy(name)
            )));
        }
        let bytes = section
            .data(endian, data)
            .map_err(|e| elf_err(format!("{}: {e}", String::from_utf8_lossy(name))))?;
        found = Some(bytes);
    }
    Ok(found)
}

/// The NUL-terminated `name` field of `struct module`.
fn struct_module_name(this_module: &[u8]) -> Result<String, ParseError> {
    let field = this_module
        .get(MODULE_NAME_OFFSET..MODULE_NAME_OFFSET + MODULE_NAME_LEN)
        .ok_or_else(|| {
            elf_err(format!(
                ".gnu.linkonce.this_module is {} bytes, too short for struct module",
                this_module.len()
            ))
        })?;
    let len = field
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| elf_err("struct module name is not NUL-terminated"))?;
    let name = std::str::from_utf8(&field[..len])
        .map_err(|_| elf_err("struct module name is not UTF-8"))?;
    if name.is_empty() {
        return Err(elf_err("struct module name is empty"));
    }
    Ok(name.to_string())
}
