//! Hostile input: hand-made broken ELF files and trailers, and property-style damage to
//! every real module (truncation at many offsets, random byte flips). The rule: an error,
//! never a panic, and never an accepted signature over altered content.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::elfgen::{self, section, E_SHNUM, E_SHOFF, E_SHSTRNDX, NOBITS, PROGBITS};
use common::{kernel, kernel_trust, sign, Rng};
use modvisor_modules::{KernelModule, ParseError, TrustStore, MAX_MODULE_BYTES};

/// Parses without letting a panic escape unattributed.
fn parse_quietly(label: &str, bytes: &[u8]) -> Result<KernelModule, ParseError> {
    catch_unwind(AssertUnwindSafe(|| KernelModule::parse(bytes)))
        .unwrap_or_else(|_| panic!("KernelModule::parse panicked on {label}"))
}

fn good() -> Vec<u8> {
    elfgen::module("good", "6.1.0-56-cloud-amd64", "GPL", &["dep"])
}

fn put_u16(file: &mut [u8], at: usize, v: u16) {
    file[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(file: &mut [u8], at: usize, v: u64) {
    file[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Asserts `bytes` is refused with an error whose text contains `needle`.
fn refused(label: &str, bytes: &[u8], needle: &str) {
    match parse_quietly(label, bytes) {
        Ok(m) => panic!("{label}: accepted as {}", m.name()),
        Err(e) => assert!(
            e.to_string().contains(needle),
            "{label}: error {e:?} lacks {needle:?}"
        ),
    }
}

#[test]
fn broken_headers() {
    assert!(parse_quietly("good", &good()).is_ok());
    let mut f = good();
    put_u16(&mut f, E_SHNUM, 0xffff);
    refused("65535 sections", &f, "limit");
    let mut f = good();
    put_u16(&mut f, E_SHNUM, 4000);
    refused("4000 sections", &f, "outside the file");
    let mut f = good();
    put_u16(&mut f, E_SHNUM, 0);
    refused("no sections", &f, "e_shnum is 0");
    for shoff in [u64::MAX, u64::MAX - 63, 0, 8, 1 << 40] {
        let mut f = good();
        put_u64(&mut f, E_SHOFF, shoff);
        refused(&format!("e_shoff {shoff}"), &f, "section header table");
    }
    let mut f = good();
    f[4] = 1;
    refused("32-bit", &f, "only 64-bit");
    let mut f = good();
    f[5] = 2;
    refused("big-endian", &f, "little-endian");
    let mut f = good();
    f[18] = 183; // EM_AARCH64
    refused("arm64", &f, "x86-64");
    let mut f = good();
    f[16] = 3; // ET_DYN
    refused("shared object", &f, "ET_REL");
    refused("empty", b"", "not an ELF");
    refused("magic only", b"\x7fELF", "shorter than an ELF header");
}

#[test]
fn broken_sections() {
    let f = good();
    // Sections: 0 null, 1 .text, 2 .modinfo, 3 .gnu.linkonce.this_module, 4 .shstrtab.
    let sh = |f: &[u8], i: usize| elfgen::section_header(f, i);

    let mut o = f.clone();
    let text_offset = u64::from_le_bytes(o[sh(&f, 1) + 24..sh(&f, 1) + 32].try_into().unwrap());
    put_u64(&mut o, sh(&f, 2) + 24, text_offset);
    refused("overlapping sections", &o, "overlaps");

    let mut o = f.clone();
    put_u64(&mut o, sh(&f, 2) + 24, 0);
    refused("section over the ELF header", &o, "overlaps");

    let mut o = f.clone();
    put_u64(&mut o, sh(&f, 2) + 32, u64::MAX);
    refused("size overflow", &o, "overflows");

    let mut o = f.clone();
    put_u64(&mut o, sh(&f, 2) + 32, f.len() as u64);
    refused("section past the end", &o, "outside the file");

    let mut o = f.clone();
    let strtab_end = {
        let at = sh(&f, 4);
        let off = u64::from_le_bytes(o[at + 24..at + 32].try_into().unwrap()) as usize;
        let size = u64::from_le_bytes(o[at + 32..at + 40].try_into().unwrap()) as usize;
        off + size
    };
    o[strtab_end - 1] = b'x';
    refused("unterminated section names", &o, "not NUL-terminated");

    let mut o = f.clone();
    o[sh(&f, 2)..sh(&f, 2) + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    refused("name offset out of range", &o, "out of range");

    for (index, needle) in [
        (0u16, "invalid"),
        (99, "invalid"),
        (1, "not a string table"),
    ] {
        let mut o = f.clone();
        put_u16(&mut o, E_SHSTRNDX, index);
        refused(&format!("shstrndx {index}"), &o, needle);
    }

    let mut o = f.clone();
    o[sh(&f, 2) + 4..sh(&f, 2) + 8].copy_from_slice(&NOBITS.to_le_bytes());
    refused("NOBITS .modinfo", &o, "no file data");

    let mut o = f.clone();
    o[sh(&f, 2) + 8..sh(&f, 2) + 16].copy_from_slice(&0u64.to_le_bytes());
    refused("non-allocated .modinfo", &o, "not SHF_ALLOC");
}

#[test]
fn broken_modinfo_and_struct_module() {
    let this = || {
        section(
            ".gnu.linkonce.this_module",
            PROGBITS,
            &elfgen::this_module("m"),
        )
    };
    let info = |b: &[u8]| section(".modinfo", PROGBITS, b);
    refused("no .modinfo", &elfgen::build(&[this()]), "no .modinfo");
    refused(
        "unterminated .modinfo",
        &elfgen::build(&[info(b"license=GPL"), this()]),
        "NUL",
    );
    refused(
        "key without =",
        &elfgen::build(&[info(b"license\0"), this()]),
        "no '='",
    );
    refused(
        "two .modinfo",
        &elfgen::build(&[info(b"a=b\0"), info(b"c=d\0"), this()]),
        "more than one",
    );
    refused(
        "no this_module",
        &elfgen::build(&[info(b"license=GPL\0")]),
        "not a kernel module",
    );
    refused(
        "short this_module",
        &elfgen::build(&[
            info(b"a=b\0"),
            section(".gnu.linkonce.this_module", PROGBITS, &[0; 30]),
        ]),
        "too short",
    );
    refused(
        "unterminated module name",
        &elfgen::build(&[
            info(b"a=b\0"),
            section(".gnu.linkonce.this_module", PROGBITS, &[b'x'; 128]),
        ]),
        "NUL-terminated",
    );
    refused(
        "empty module name",
        &elfgen::build(&[
            info(b"a=b\0"),
            section(".gnu.linkonce.this_module", PROGBITS, &[0; 128]),
        ]),
        "empty",
    );
}

#[test]
fn broken_signature_trailers() {
    let content = good();
    let signed = sign::sign(&content, sign::Options::default());
    let info_at = signed.len() - 28 - 12;
    for sig_len in [u32::MAX, signed.len() as u32, (info_at) as u32, 0] {
        let mut f = signed.clone();
        f[info_at + 8..info_at + 12].copy_from_slice(&sig_len.to_be_bytes());
        refused(&format!("sig_len {sig_len}"), &f, "sig_len");
    }
    let mut f = signed.clone();
    f[info_at + 2] = 1;
    refused("id_type 1", &f, "not PKCS#7");
    let mut f = signed.clone();
    f[info_at + 3] = 5;
    refused("signer_len set", &f, "non-zero");
    // Garbage where the CMS blob should be.
    let garbage = sign::append_signature(&content, &[0x30, 0x82, 0x7f, 0xff, 1, 2, 3]);
    refused("garbage CMS", &garbage, "malformed module signature");
    // Only a marker.
    refused(
        "marker only",
        modvisor_modules::MODULE_SIG_MARKER,
        "too few",
    );
}

#[test]
fn oversized_input_is_refused_before_reading() {
    let mut big = good();
    big.resize(MAX_MODULE_BYTES + 1, 0);
    assert!(matches!(
        parse_quietly("oversized", &big),
        Err(ParseError::TooLarge { .. })
    ));
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base = good();
    for i in 0..4000 {
        let len = rng.below(600);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && len >= 64 {
            // Keep a plausible header so parsing goes deeper.
            bytes[..64].copy_from_slice(&base[..64]);
        }
        let _ = parse_quietly(&format!("garbage #{i}"), &bytes);
    }
    // Random flips of a small valid module, many at a time.
    for i in 0..4000 {
        let mut f = base.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(f.len());
            f[at] ^= 1 << rng.below(8);
        }
        let _ = parse_quietly(&format!("flipped #{i}"), &f);
    }
}

#[test]
fn every_real_module_survives_truncation() {
    let mut rng = Rng(42);
    let mut parsed_after_cut = 0usize;
    for path in &kernel().modules {
        let bytes = std::fs::read(path).unwrap();
        let len = bytes.len();
        let mut cuts: Vec<usize> = (0..24).map(|_| rng.below(len)).collect();
        // Around the header, the section table, and inside the signature trailer.
        cuts.extend([
            0,
            1,
            16,
            63,
            64,
            len - 1,
            len - 27,
            len - 28,
            len - 40,
            len - 41,
        ]);
        cuts.push(len - 40 - rng.below(600));
        for cut in cuts {
            let label = format!("{} cut at {cut}", path.display());
            if let Ok(m) = parse_quietly(&label, &bytes[..cut]) {
                // Only a cut inside the signature can leave a parseable (unsigned) module.
                assert!(m.signature().is_none(), "{label}");
                parsed_after_cut += 1;
            }
        }
    }
    eprintln!("{parsed_after_cut} truncated files still parsed, all as unsigned modules");
}

#[test]
fn every_real_module_survives_byte_flips() {
    let mut rng = Rng(7);
    let trust = kernel_trust();
    let mut verified_checks = 0;
    for (n, path) in kernel().modules.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let signed_len = KernelModule::parse(&bytes).unwrap().signed_len() as usize;
        for flip in 0..6 {
            let mut f = bytes.clone();
            // Half the flips hit the signature trailer, where the structure is dense.
            let at = if flip % 2 == 0 {
                rng.below(f.len())
            } else {
                signed_len + rng.below(f.len() - signed_len)
            };
            let bit = 1u8 << rng.below(8);
            f[at] ^= bit;
            let label = format!("{} bit {bit:#x} flipped at {at}", path.display());
            let Ok(m) = parse_quietly(&label, &f) else {
                continue;
            };
            // RSA verification is slow in debug builds: check a sample of content flips.
            if at < signed_len && n % 8 == 0 {
                let sig = m
                    .signature()
                    .unwrap_or_else(|| panic!("{label}: lost signature"));
                assert!(
                    sig.verify(trust).is_err(),
                    "{label}: altered content verified"
                );
                verified_checks += 1;
            }
        }
    }
    eprintln!("{verified_checks} altered modules checked: none verified");
    assert!(verified_checks > 50);
}

#[test]
fn damaged_kernel_images_are_errors() {
    let image = std::fs::read(kernel().vmlinuz()).unwrap();
    let mut rng = Rng(3);
    for cut in [0, 0x1f0, 0x202, 0x250, 0x4000, image.len() / 2] {
        let r = catch_unwind(|| TrustStore::from_kernel_image(&image[..cut]))
            .unwrap_or_else(|_| panic!("panicked on image cut at {cut}"));
        assert!(r.is_err(), "image cut at {cut} accepted");
    }
    for field in [0x1f1usize, 0x248, 0x24c] {
        let mut bad = image.clone();
        bad[field] ^= 0x80;
        let _ = catch_unwind(|| TrustStore::from_kernel_image(&bad))
            .unwrap_or_else(|_| panic!("panicked with header byte {field:#x} flipped"));
    }
    for _ in 0..3 {
        let mut bad = image.clone();
        let at = 0x4000 + rng.below(image.len() - 0x4000);
        bad[at] ^= 0xff;
        let _ = catch_unwind(|| TrustStore::from_kernel_image(&bad))
            .unwrap_or_else(|_| panic!("panicked with payload byte {at} flipped"));
    }
}
