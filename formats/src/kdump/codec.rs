//! Per-page compression methods of kdump files (docs/formats.md#kdump-codecs) and their
//! decoders.
//! Encoding is writer policy and lives in the kdump plugin; the method names, flag
//! values and decoders live here so both sides agree.

use std::cell::RefCell;

use super::layout::{
    DUMP_DH_COMPRESSED_LZO, DUMP_DH_COMPRESSED_SNAPPY, DUMP_DH_COMPRESSED_ZLIB,
    DUMP_DH_COMPRESSED_ZSTD,
};

/// How one page is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as is (flags 0).
    None,
    /// RFC 1950 zlib stream (crash `uncompress`).
    Zlib,
    /// Raw LZO1X block.
    Lzo,
    /// Raw snappy block (not the framing format).
    Snappy,
    /// One zstd frame.
    Zstd,
}

impl Codec {
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Zlib,
        Codec::Lzo,
        Codec::Snappy,
        Codec::Zstd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Zlib => "zlib",
            Codec::Lzo => "lzo",
            Codec::Snappy => "snappy",
            Codec::Zstd => "zstd",
        }
    }

    pub fn from_name(s: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The page-descriptor flag and header status bit (0 for raw).
    pub fn flag(self) -> u32 {
        match self {
            Codec::None => 0,
            Codec::Zlib => DUMP_DH_COMPRESSED_ZLIB,
            Codec::Lzo => DUMP_DH_COMPRESSED_LZO,
            Codec::Snappy => DUMP_DH_COMPRESSED_SNAPPY,
            Codec::Zstd => DUMP_DH_COMPRESSED_ZSTD,
        }
    }

    /// The codec a page descriptor's flags select. crash tests the bits in this order
    /// (zlib, lzo, snappy, zstd) and copies the page raw when none is set.
    pub fn from_page_flags(flags: u32) -> Codec {
        if flags & DUMP_DH_COMPRESSED_ZLIB != 0 {
            Codec::Zlib
        } else if flags & DUMP_DH_COMPRESSED_LZO != 0 {
            Codec::Lzo
        } else if flags & DUMP_DH_COMPRESSED_SNAPPY != 0 {
            Codec::Snappy
        } else if flags & DUMP_DH_COMPRESSED_ZSTD != 0 {
            Codec::Zstd
        } else {
            Codec::None
        }
    }

    /// The codec named by a header's `status` (informational only: pages carry their
    /// own flags).
    pub fn from_status(status: u32) -> Codec {
        Codec::from_page_flags(status & !super::layout::DUMP_DH_COMPRESSED_INCOMPLETE)
    }
}

thread_local! {
    // Decoder contexts are reused per thread: read_at runs on many threads at once and
    // a fresh zstd or zlib context per page costs more than the page.
    static ZLIB: RefCell<flate2::Decompress> = RefCell::new(flate2::Decompress::new(true));
    static ZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Decode one stored page into `out` (exactly one block). The decoded length must equal
/// `out.len()`, as crash requires.
pub fn decompress_page(codec: Codec, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let want = out.len();
    let got = match codec {
        Codec::None => {
            if input.len() != want {
                return Err(format!(
                    "raw page holds {} bytes instead of one block ({want})",
                    input.len()
                ));
            }
            out.copy_from_slice(input);
            want
        }
        Codec::Zlib => ZLIB.with(|z| {
            let mut z = z.borrow_mut();
            z.reset(true);
            match z.decompress(input, out, flate2::FlushDecompress::Finish) {
                Ok(flate2::Status::StreamEnd) => Ok(z.total_out() as usize),
                Ok(_) => Err(format!(
                    "zlib data does not end within one block ({want} bytes)"
                )),
                Err(e) => Err(format!("zlib: {e}")),
            }
        })?,
        Codec::Lzo => lzo::decompress_into(input, out).map_err(|e| e.to_string())?,
        Codec::Snappy => {
            let n = snap::raw::decompress_len(input).map_err(|e| format!("snappy: {e}"))?;
            if n != want {
                return Err(format!(
                    "snappy data decodes to {n} bytes instead of one block ({want})"
                ));
            }
            snap::raw::Decoder::new()
                .decompress(input, out)
                .map_err(|e| format!("snappy: {e}"))?
        }
        Codec::Zstd => ZSTD.with(|z| {
            let mut z = z.borrow_mut();
            if z.is_none() {
                *z = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
            }
            match z.as_mut() {
                Some(d) => d
                    .decompress_to_buffer(input, out)
                    .map_err(|e| format!("zstd: {e}")),
                None => Err("zstd: no decoder".to_string()),
            }
        })?,
    };
    if got != want {
        return Err(format!(
            "{} data decodes to {got} bytes instead of one block ({want})",
            codec.name()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decoders_require_exactly_one_block() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 7) as u8).collect();
        let mut out = vec![0u8; 4096];

        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&page).unwrap();
        let z = e.finish().unwrap();
        decompress_page(Codec::Zlib, &z, &mut out).unwrap();
        assert_eq!(out, page);
        let mut short = vec![0u8; 4000];
        assert!(decompress_page(Codec::Zlib, &z, &mut short).is_err());
        let mut big = vec![0u8; 8192];
        assert!(decompress_page(Codec::Zlib, &z, &mut big).is_err());
        assert!(decompress_page(Codec::Zlib, &z[..z.len() - 3], &mut out).is_err());

        let s = snap::raw::Encoder::new().compress_vec(&page).unwrap();
        decompress_page(Codec::Snappy, &s, &mut out).unwrap();
        assert_eq!(out, page);
        assert!(decompress_page(Codec::Snappy, &s, &mut short).is_err());

        let zs = zstd::bulk::compress(&page, 1).unwrap();
        decompress_page(Codec::Zstd, &zs, &mut out).unwrap();
        assert_eq!(out, page);
        assert!(decompress_page(Codec::Zstd, &zs, &mut short).is_err());
        assert!(decompress_page(Codec::Zstd, &zs, &mut big).is_err());

        assert!(decompress_page(Codec::None, &page[..100], &mut out).is_err());
        assert!(decompress_page(Codec::Lzo, &[0xff; 10], &mut out).is_err());
    }

    #[test]
    fn flags_pick_codecs_in_crash_order() {
        assert_eq!(Codec::from_page_flags(0), Codec::None);
        assert_eq!(Codec::from_page_flags(0x21), Codec::Zlib);
        assert_eq!(Codec::from_page_flags(0x24), Codec::Snappy);
        assert_eq!(Codec::from_page_flags(0x20), Codec::Zstd);
        assert_eq!(Codec::from_status(0x8 | 0x4), Codec::Snappy);
        for c in Codec::ALL {
            assert_eq!(Codec::from_name(c.name()), Some(c));
        }
    }
}
