//! Builds tiny, hand-made ELF64 x86-64 relocatable "modules" for synthetic tests.

/// `SHT_PROGBITS`.
pub const PROGBITS: u32 = 1;
/// `SHT_STRTAB`.
pub const STRTAB: u32 = 3;
/// `SHT_NOBITS`.
pub const NOBITS: u32 = 8;

/// `SHF_ALLOC`.
pub const SHF_ALLOC: u64 = 2;

/// Offset of `e_shoff` in the ELF header.
pub const E_SHOFF: usize = 0x28;
/// Offset of `e_shnum`.
pub const E_SHNUM: usize = 0x3c;
/// Offset of `e_shstrndx`.
pub const E_SHSTRNDX: usize = 0x3e;

/// One section to lay out.
pub struct Section {
    pub name: String,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A section.
pub fn section(name: &str, kind: u32, data: &[u8]) -> Section {
    Section {
        name: name.into(),
        kind,
        data: data.to_vec(),
    }
}

/// The `.modinfo` bytes for these entries.
pub fn modinfo(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// `.gnu.linkonce.this_module` data naming `name`.
pub fn this_module(name: &str) -> Vec<u8> {
    let mut data = vec![0u8; 0x80];
    data[24..24 + name.len()].copy_from_slice(name.as_bytes());
    data
}

/// A minimal module: `.modinfo` with `name`, `vermagic`, `license` and `depends`, plus
/// `.gnu.linkonce.this_module`.
pub fn module(name: &str, release: &str, license: &str, depends: &[&str]) -> Vec<u8> {
    let vermagic = format!("{release} SMP preempt mod_unload modversions ");
    let deps = depends.join(",");
    build(&[
        section(".text", PROGBITS, &[0xc3; 16]),
        section(
            ".modinfo",
            PROGBITS,
            &modinfo(&[
                ("license", license),
                ("depends", &deps),
                ("retpoline", "Y"),
                ("intree", "Y"),
                ("name", name),
                ("vermagic", &vermagic),
            ]),
        ),
        section(".gnu.linkonce.this_module", PROGBITS, &this_module(name)),
    ])
}

/// Lays out an ELF file: header, section data, `.shstrtab`, section header table (index
/// 0 is the null section; `.shstrtab` is last).
pub fn build(sections: &[Section]) -> Vec<u8> {
    let mut shstrtab = vec![0u8];
    let mut name_offsets = Vec::new();
    for s in sections
        .iter()
        .map(|s| s.name.as_str())
        .chain([".shstrtab"])
    {
        name_offsets.push(shstrtab.len() as u32);
        shstrtab.extend_from_slice(s.as_bytes());
        shstrtab.push(0);
    }
    let mut out = vec![0u8; 64];
    let mut headers: Vec<[u8; 64]> = vec![[0u8; 64]];
    let all: Vec<(u32, u32, &[u8])> = sections
        .iter()
        .map(|s| (s.kind, s.data.as_slice()))
        .chain([(STRTAB, shstrtab.as_slice())])
        .zip(&name_offsets)
        .map(|((kind, data), &name)| (name, kind, data))
        .collect();
    for (name, kind, data) in all {
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let offset = out.len() as u64;
        if kind != NOBITS {
            out.extend_from_slice(data);
        }
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        if kind != STRTAB {
            h[8..16].copy_from_slice(&SHF_ALLOC.to_le_bytes());
        }
        h[24..32].copy_from_slice(&offset.to_le_bytes());
        h[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
        h[48..56].copy_from_slice(&1u64.to_le_bytes());
        headers.push(h);
    }
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let shoff = out.len() as u64;
    for h in &headers {
        out.extend_from_slice(h);
    }
    // ELF header.
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little-endian
    out[6] = 1; // EV_CURRENT
    out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[E_SHOFF..E_SHOFF + 8].copy_from_slice(&shoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    out[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out[E_SHNUM..E_SHNUM + 2].copy_from_slice(&(headers.len() as u16).to_le_bytes());
    out[E_SHSTRNDX..E_SHSTRNDX + 2].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes());
    out
}

/// Offset of section header `index` in a file made by [`build`].
pub fn section_header(file: &[u8], index: usize) -> usize {
    let shoff = u64::from_le_bytes(file[E_SHOFF..E_SHOFF + 8].try_into().unwrap()) as usize;
    shoff + index * 64
}
