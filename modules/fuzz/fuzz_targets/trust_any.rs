//! Fuzzes certificate and kernel-image loading (PEM, DER, bzImage, LZ4, gzip, ELF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modvisor_modules::{kernel_image, TrustStore};

fuzz_target!(|data: &[u8]| {
    let _ = TrustStore::from_any(data);
    let _ = kernel_image::unlz4_legacy(data);
    let _ = kernel_image::Compression::detect(data);
});
