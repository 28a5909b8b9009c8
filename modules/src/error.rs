//! Errors for inputs that cannot be parsed: modules, certificates and kernel images.
//!
//! Vetting outcomes are not errors: a module that parses but fails a check is a
//! [`crate::Rejection`].

use thiserror::Error;

/// A kernel module file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The input is larger than [`crate::MAX_MODULE_BYTES`].
    #[error("file is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// Size of the input.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The input does not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// A well-formed ELF file that is not an x86-64 little-endian 64-bit relocatable
    /// object.
    #[error("unsupported ELF file: {0}")]
    Unsupported(String),
    /// The ELF structure is broken or out of bounds.
    #[error("malformed ELF: {0}")]
    Elf(String),
    /// The `.modinfo` section is broken.
    #[error("malformed .modinfo: {0}")]
    ModInfo(String),
    /// The appended signature trailer or its PKCS#7/CMS message is broken.
    #[error("malformed module signature: {0}")]
    Signature(String),
}

/// A compressed kernel image could not be unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImageError {
    /// The input is larger than [`crate::kernel_image::MAX_IMAGE_BYTES`].
    #[error("kernel image is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// Size of the input.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Neither a bzImage nor an ELF vmlinux.
    #[error("not a kernel image (no bzImage 'HdrS' header and no ELF magic)")]
    NotKernelImage,
    /// The bzImage header or payload is out of bounds or inconsistent.
    #[error("malformed bzImage: {0}")]
    Malformed(String),
    /// The payload uses a compression this crate does not decode.
    #[error("unsupported compression {0}")]
    UnsupportedCompression(&'static str),
    /// The payload's compressed stream is corrupt.
    #[error("corrupt {format} payload: {reason}")]
    Corrupt {
        /// The compression format.
        format: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The decompressed kernel would be larger than
    /// [`crate::kernel_image::MAX_DECOMPRESSED_BYTES`].
    #[error("decompressed kernel exceeds the {limit}-byte limit")]
    DecompressedTooLarge {
        /// The limit.
        limit: u64,
    },
}

/// Certificates could not be loaded into a [`crate::TrustStore`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrustError {
    /// A DER certificate did not parse.
    #[error("invalid X.509 certificate: {0}")]
    Certificate(String),
    /// A PEM file did not parse.
    #[error("invalid PEM certificate file: {0}")]
    Pem(String),
    /// The input parsed but held no certificate.
    #[error("no X.509 certificate found in {0}")]
    NoCertificates(&'static str),
    /// The kernel image could not be unpacked.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The input is neither a certificate (PEM or DER) nor a kernel image.
    #[error("not a certificate (PEM or DER), a bzImage or a vmlinux ELF file")]
    Unrecognised,
}
