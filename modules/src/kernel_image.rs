//! Unpacking a kernel image to the `vmlinux` ELF inside it.
//!
//! An x86 bzImage carries the compressed kernel as its payload: the boot protocol header
//! (2.08+) gives `payload_offset` (0x248) and `payload_length` (0x24c), relative to the
//! protected-mode code at `(setup_sects + 1) * 512` (`setup_sects` at 0x1f1, 0 meaning 4).
//! Debian compresses it with LZ4 in the legacy frame format; gzip is also decoded. Other
//! formats are named in an [`ImageError::UnsupportedCompression`].

use std::borrow::Cow;
use std::io::Read as _;

use crate::error::ImageError;

/// Largest kernel image accepted.
pub const MAX_IMAGE_BYTES: usize = 256 << 20;
/// Largest decompressed kernel produced.
pub const MAX_DECOMPRESSED_BYTES: usize = 512 << 20;

const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Every legacy LZ4 block decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// `LZ4_compressBound(8 MiB)`: the largest a legacy block can be compressed.
const LZ4_LEGACY_MAX_COMPRESSED: usize = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;

const ELF_MAGIC: &[u8] = b"\x7fELF";

/// How a kernel payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed: the payload is the ELF `vmlinux`.
    None,
    /// gzip.
    Gzip,
    /// LZ4, legacy frame format (`lz4 -l`).
    Lz4Legacy,
    /// A format recognised but not decoded, by name.
    Unsupported(&'static str),
}

impl Compression {
    /// Recognises a payload by its magic bytes.
    pub fn detect(payload: &[u8]) -> Self {
        let starts = |magic: &[u8]| payload.starts_with(magic);
        if starts(ELF_MAGIC) {
            Self::None
        } else if starts(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if starts(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Self::Lz4Legacy
        } else if starts(&[0x04, 0x22, 0x4d, 0x18]) {
            Self::Unsupported("lz4 (frame format)")
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Self::Unsupported("xz")
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Unsupported("zstd")
        } else if starts(b"BZh") {
            Self::Unsupported("bzip2")
        } else if starts(&[0x5d, 0x00, 0x00]) {
            Self::Unsupported("lzma")
        } else if starts(&[0x89, b'L', b'Z', b'O']) {
            Self::Unsupported("lzo")
        } else {
            Self::Unsupported("unknown (unrecognised magic bytes)")
        }
    }
}

/// True when `bytes` starts like a bzImage or an ELF file.
pub fn looks_like_kernel(bytes: &[u8]) -> bool {
    bytes.starts_with(ELF_MAGIC) || is_bzimage(bytes)
}

fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(0x202..0x206) == Some(b"HdrS".as_slice())
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The compressed kernel inside a bzImage.
pub fn bzimage_payload(image: &[u8]) -> Result<&[u8], ImageError> {
    let bad = |reason: String| ImageError::Malformed(reason);
    if !is_bzimage(image) {
        return Err(ImageError::NotKernelImage);
    }
    let version = image
        .get(0x206..0x208)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))
        .ok_or_else(|| bad("truncated setup header".into()))?;
    if version < 0x0208 {
        return Err(bad(format!(
            "boot protocol {}.{:02} has no payload fields (2.08 or later needed)",
            version >> 8,
            version & 0xff
        )));
    }
    let setup_sects = match image.get(0x1f1) {
        Some(0) => 4,
        Some(&n) => usize::from(n),
        None => return Err(bad("truncated setup header".into())),
    };
    let (offset, length) = le32(image, 0x248)
        .zip(le32(image, 0x24c))
        .ok_or_else(|| bad("truncated setup header".into()))?;
    let start = (setup_sects + 1) * 512 + offset as usize;
    let end = start
        .checked_add(length as usize)
        .ok_or_else(|| bad("payload length overflows".into()))?;
    image.get(start..end).ok_or_else(|| {
        bad(format!(
            "payload [{start}, {end}) lies outside the {}-byte image",
            image.len()
        ))
    })
}

/// The uncompressed kernel (`vmlinux`) of a bzImage, or an ELF `vmlinux` as is.
pub fn decompress(image: &[u8]) -> Result<Cow<'_, [u8]>, ImageError> {
    if image.len() > MAX_IMAGE_BYTES {
        return Err(ImageError::TooLarge {
            size: image.len() as u64,
            limit: MAX_IMAGE_BYTES as u64,
        });
    }
    if image.starts_with(ELF_MAGIC) {
        return Ok(Cow::Borrowed(image));
    }
    let payload = bzimage_payload(image)?;
    match Compression::detect(payload) {
        Compression::None => Ok(Cow::Borrowed(payload)),
        Compression::Gzip => gunzip(payload).map(Cow::Owned),
        Compression::Lz4Legacy => unlz4_legacy(payload).map(Cow::Owned),
        Compression::Unsupported(name) => Err(ImageError::UnsupportedCompression(name)),
    }
}

fn gunzip(payload: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(payload)
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ImageError::Corrupt {
            format: "gzip",
            reason: e.to_string(),
        })?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(ImageError::DecompressedTooLarge {
            limit: MAX_DECOMPRESSED_BYTES as u64,
        });
    }
    Ok(out)
}

/// Decodes the legacy LZ4 format: a magic, then blocks each prefixed by its compressed
/// size (u32 LE); the magic may repeat between blocks. The kernel build appends the
/// decompressed size (u32 LE), which is checked when present.
pub fn unlz4_legacy(payload: &[u8]) -> Result<Vec<u8>, ImageError> {
    let corrupt = |reason: String| ImageError::Corrupt {
        format: "lz4",
        reason,
    };
    if le32(payload, 0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(corrupt("missing legacy frame magic".into()));
    }
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 4;
    while pos < payload.len() {
        let size = le32(payload, pos)
            .ok_or_else(|| corrupt(format!("{} stray bytes at the end", payload.len() - pos)))?;
        pos += 4;
        let remaining = payload.len() - pos;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        if remaining == 0 {
            // The size the kernel build appends.
            if size as usize != out.len() {
                return Err(corrupt(format!(
                    "trailer says {size} bytes but {} were decompressed",
                    out.len()
                )));
            }
            break;
        }
        let size = size as usize;
        if size == 0 || size > LZ4_LEGACY_MAX_COMPRESSED || size > remaining {
            return Err(corrupt(format!(
                "block at offset {} claims {size} compressed bytes ({remaining} remain)",
                pos - 4
            )));
        }
        let block = &payload[pos..pos + size];
        pos += size;
        let start = out.len();
        out.resize(start + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| corrupt(format!("block at offset {}: {e}", pos - size - 4)))?;
        out.truncate(start + n);
        if out.len() > MAX_DECOMPRESSED_BYTES {
            return Err(ImageError::DecompressedTooLarge {
                limit: MAX_DECOMPRESSED_BYTES as u64,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 5 * 512];
        image[0x1f1] = 4;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&[0xaa; 16]);
        image.extend_from_slice(payload);
        image.extend_from_slice(&[0xbb; 32]);
        image
    }

    fn lz4_legacy(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for part in data.chunks(chunk) {
            let block = lz4_flex::block::compress(part);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    fn sample() -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend((0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()));
        v
    }

    #[test]
    fn lz4_legacy_round_trip_through_a_bzimage() {
        let data = sample();
        let image = bzimage(&lz4_legacy(&data, 30_000));
        assert_eq!(decompress(&image).unwrap().as_ref(), data.as_slice());
    }

    #[test]
    fn gzip_round_trip_through_a_bzimage() {
        use std::io::Write as _;
        let data = sample();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let mut payload = enc.finish().unwrap();
        payload.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(
            decompress(&bzimage(&payload)).unwrap().as_ref(),
            data.as_slice()
        );
    }

    #[test]
    fn plain_elf_and_unsupported_formats() {
        assert!(matches!(
            decompress(b"\x7fELFxyz").unwrap(),
            Cow::Borrowed(_)
        ));
        for (magic, name) in [
            (&[0x28u8, 0xb5, 0x2f, 0xfd][..], "zstd"),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz"),
            (b"BZh9", "bzip2"),
        ] {
            let err = decompress(&bzimage(magic)).unwrap_err();
            assert_eq!(err, ImageError::UnsupportedCompression(name));
            assert_eq!(err.to_string(), format!("unsupported compression {name}"));
        }
    }

    #[test]
    fn hostile_headers_and_streams_are_errors() {
        assert_eq!(
            decompress(b"nothing").unwrap_err(),
            ImageError::NotKernelImage
        );
        let mut image = bzimage(b"");
        image[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decompress(&image), Err(ImageError::Malformed(_))));
        let mut lz = lz4_legacy(&sample(), 50_000);
        let last = lz.len() - 1;
        lz[last] ^= 1; // wrong size trailer
        assert!(decompress(&bzimage(&lz)).is_err());
        let lz = lz4_legacy(&sample(), 50_000);
        for cut in [5, 9, 100, lz.len() - 5] {
            assert!(unlz4_legacy(&lz[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 64]);
        assert!(unlz4_legacy(&huge).is_err());
    }
}
