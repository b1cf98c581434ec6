//! Little-endian fields of a byte buffer: the one reader every format's decoder uses.
//!
//! A read that does not fit in the buffer is an error ([`ShortRead`]), never a zero: a
//! wrong length check must not turn into a plausible value. The error knows only the
//! offset in the buffer; the decoder that knows the file adds the path, the buffer's
//! file offset and the format with [`ShortRead::at`].
//!
//! The store helpers are for encoders that size their buffer themselves.

use std::path::Path;

use dumpconv_core::Error;

/// A field read past the end of its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a {len}-byte field at offset {offset:#x} runs past the end of the {have}-byte record \
     (truncated or corrupt)"
)]
pub struct ShortRead {
    /// Offset of the field in the buffer.
    pub offset: usize,
    /// Width of the field.
    pub len: usize,
    /// Length of the buffer.
    pub have: usize,
}

impl ShortRead {
    /// The format error this is when the buffer was read from `path` at `base`.
    pub fn at(self, path: &Path, base: u64, format: &'static str) -> Error {
        Error::format(
            path.to_path_buf(),
            base.saturating_add(self.offset as u64),
            format,
            self.to_string(),
        )
    }
}

/// Without a file to name (a note descriptor handed over as bytes), a format error at
/// the field's offset in the record.
impl From<ShortRead> for Error {
    fn from(e: ShortRead) -> Error {
        Error::format(None, e.offset as u64, "record", e.to_string())
    }
}

/// `N` bytes at `off`.
pub fn array<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N], ShortRead> {
    off.checked_add(N)
        .and_then(|end| b.get(off..end))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(ShortRead {
            offset: off,
            len: N,
            have: b.len(),
        })
}

pub fn le_u16(b: &[u8], off: usize) -> Result<u16, ShortRead> {
    array(b, off).map(u16::from_le_bytes)
}

pub fn le_u32(b: &[u8], off: usize) -> Result<u32, ShortRead> {
    array(b, off).map(u32::from_le_bytes)
}

pub fn le_u64(b: &[u8], off: usize) -> Result<u64, ShortRead> {
    array(b, off).map(u64::from_le_bytes)
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    let slot = off.checked_add(v.len()).and_then(|end| b.get_mut(off..end));
    debug_assert!(slot.is_some(), "encoder stores past the end of its buffer");
    if let Some(s) = slot {
        s.copy_from_slice(v);
    }
}

/// Store `v` at `off` of a buffer the encoder sized itself (offsets are the encoder's
/// constants: a store that does not fit is a bug, caught by a debug assertion in tests).
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    put(b, off, &v.to_le_bytes());
}

/// Store `v` at `off`, as [`put_u32`].
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    put(b, off, &v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_fields_and_refuses_short_ones() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le_u16(&b, 0), Ok(0x0201));
        assert_eq!(le_u32(&b, 1), Ok(0x0504_0302));
        assert_eq!(le_u64(&b, 1), Ok(0x0908_0706_0504_0302));
        assert_eq!(
            le_u64(&b, 2),
            Err(ShortRead {
                offset: 2,
                len: 8,
                have: 9
            })
        );
        assert!(le_u32(&b, usize::MAX - 1).is_err());
        let e = le_u32(&b, 8)
            .unwrap_err()
            .at(Path::new("/d/x"), 0x100, "LiME")
            .to_string();
        assert!(
            e.contains("/d/x") && e.contains("0x108") && e.contains("LiME"),
            "{e}"
        );
    }

    #[test]
    fn stores() {
        let mut b = [0u8; 12];
        put_u32(&mut b, 0, 0x0403_0201);
        put_u64(&mut b, 4, 0x0c0b_0a09_0807_0605);
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }
}
