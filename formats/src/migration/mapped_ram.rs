//! QEMU ≥ 9's mapped-ram file format: what `migrate file:PATH` writes with the
//! capabilities `mapped-ram` (and usually `multifd`). See
//! docs/formats.md#qemu-mapped-ram.
//!
//! The file is a migration stream whose configuration section lists the capability
//! `mapped-ram`. In the `ram` section's MEM_SIZE record, each block's name and length are
//! followed by a 28-byte big-endian header: version u32 (1), page size u64, the file
//! offset of the block's page bitmap u64, the file offset of its pages u64 (aligned to 1
//! MiB). The bitmap has one bit per page of the block, in little-endian bit order (bit
//! `i % 8` of byte `i / 8`): a set bit means the page's bytes are at
//! `pages + i * page size`; a clear bit is a page never written, zero on the destination.
//! The stream goes on right after the block's page area (`pages + length`): the next
//! block's name, or the end of the MEM_SIZE record. The pages are at fixed offsets, so
//! nothing in the file is scanned: the bitmaps (one bit per page) give the page index.

use dumpconv_core::Result;

use super::cursor::Cursor;
use super::{PAGE, ZERO};

/// The mapped-ram header version this reader knows.
pub const VERSION: u32 = 1;
/// Bytes of a block's mapped-ram header.
pub const HEADER_LEN: u64 = 28;

/// Read the mapped-ram header of block `name` (`len` bytes) at the cursor, then its
/// bitmap; return the block's page index ([`ZERO`] or the file offset of each page) and
/// leave the cursor after the block's page area.
pub(super) fn block(cur: &mut Cursor, name: &str, len: u64) -> Result<Vec<u64>> {
    let at = cur.pos;
    let version = cur.be_u32()?;
    let page_size = cur.be_u64()?;
    let bitmap = cur.be_u64()?;
    let pages_at = cur.be_u64()?;
    let field = |off: u64, f: &str| {
        format!(
            "RAM block {name:?}: mapped-ram header field {f} (at {:#x})",
            at + off
        )
    };
    if version != VERSION {
        return Err(cur.err_at(
            at,
            format!(
                "{}: version {version}, this reader knows version {VERSION}",
                field(0, "version")
            ),
        ));
    }
    if page_size != PAGE {
        return Err(cur.err_at(
            at + 4,
            format!(
                "{}: page size {page_size:#x}; this reader knows {PAGE}-byte pages",
                field(4, "page_size")
            ),
        ));
    }
    let pages = len / PAGE;
    let file_len = cur.input.len;
    let bitmap_len = pages.div_ceil(8);
    if bitmap.checked_add(bitmap_len).is_none_or(|e| e > file_len) {
        return Err(cur.err_at(
            at + 12,
            format!(
                "{}: the bitmap of {bitmap_len:#x} bytes at {bitmap:#x} runs past the end \
                 of the {file_len:#x}-byte file (truncated file?)",
                field(12, "bitmap_offset")
            ),
        ));
    }
    let end = pages_at.checked_add(len).filter(|&e| e <= file_len);
    let Some(end) = end else {
        return Err(cur.err_at(
            at + 20,
            format!(
                "{}: the pages of the block ({len:#x} bytes at {pages_at:#x}) run past the \
                 end of the {file_len:#x}-byte file (truncated file?)",
                field(20, "pages_offset")
            ),
        ));
    };
    // QEMU writes the bitmap right after the header and the pages after the bitmap
    if bitmap < cur.pos || pages_at < bitmap + bitmap_len {
        return Err(cur.err_at(
            at + 12,
            format!(
                "{}: the bitmap ({bitmap_len:#x} bytes at {bitmap:#x}) must lie between the \
                 header's end ({:#x}) and the pages (at {pages_at:#x})",
                field(12, "bitmap_offset / pages_offset"),
                cur.pos
            ),
        ));
    }
    let what = format!("the mapped-ram page bitmap of RAM block {name:?}");
    let bits = cur.input.read_vec(bitmap, bitmap_len, super::FMT, &what)?;
    let index = (0..pages)
        .map(|i| {
            if bits[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                pages_at + i * PAGE
            } else {
                ZERO
            }
        })
        .collect();
    // the stream goes on after the page area
    let skip = end - cur.pos;
    cur.skip(skip)?;
    Ok(index)
}
