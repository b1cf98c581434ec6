//! Per-page encoding: zero detection and compression, one reusable context per thread.

use dumpconv_core::{is_zero, Error, Result};
use dumpconv_formats::kdump::Codec;

/// What became of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// All zeros: points at the shared zero block (or is excluded with exclude-zero).
    Zero,
    /// `size` bytes appended to the batch's data with descriptor flags `flags`.
    Data { size: u32, flags: u32 },
    /// The input could not supply the page (excluded or lost there): excluded here.
    Unavailable,
}

/// Compresses pages with one codec; holds the codec's context so it is set up once per
/// thread, not once per page (makedumpfile measured ~30% from reusing the deflate
/// stream).
pub(crate) struct PageEncoder {
    codec: Codec,
    zlib: Option<flate2::Compress>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    snappy: snap::raw::Encoder,
    lzo: Option<lzokay_native::Dict>,
    scratch: Vec<u8>,
}

impl PageEncoder {
    pub(crate) fn new(codec: Codec, level: Option<i32>, block_size: usize) -> Result<Self> {
        let zlib = (codec == Codec::Zlib).then(|| {
            let l = level.unwrap_or(1).clamp(0, 9) as u32;
            flate2::Compress::new(flate2::Compression::new(l), true)
        });
        let zstd = if codec == Codec::Zstd {
            Some(
                zstd::bulk::Compressor::new(level.unwrap_or(1))
                    .map_err(|e| Error::encode("zstd", e))?,
            )
        } else {
            None
        };
        let scratch_len = match codec {
            Codec::Snappy => snap::raw::max_compress_len(block_size),
            Codec::Lzo => lzokay_native::compress_worst_size(block_size),
            _ => block_size,
        };
        Ok(PageEncoder {
            codec,
            zlib,
            zstd,
            snappy: snap::raw::Encoder::new(),
            lzo: (codec == Codec::Lzo).then(lzokay_native::Dict::new),
            scratch: Vec::with_capacity(scratch_len),
        })
    }

    /// Append the stored form of `page` (one block) to `out`. A page is stored
    /// compressed only if that is smaller than a block; otherwise raw, flags 0, size =
    /// block (crash copies exactly one block for a raw page).
    pub(crate) fn encode(&mut self, page: &[u8], out: &mut Vec<u8>) -> Result<Stored> {
        if is_zero(page) {
            return Ok(Stored::Zero);
        }
        self.store(page, out)
    }

    /// Compress (or copy) one page, whatever its content.
    pub(crate) fn store(&mut self, page: &[u8], out: &mut Vec<u8>) -> Result<Stored> {
        let bs = page.len();
        if bs == 0 {
            return Err(Error::internal("kdump: empty page"));
        }
        let compressed: Option<&[u8]> = match self.codec {
            Codec::None => None,
            Codec::Zlib => match self.zlib.as_mut() {
                Some(z) => {
                    z.reset();
                    self.scratch.clear();
                    self.scratch.reserve(bs);
                    // Room for bs - 1 bytes only: a stream that does not end in it is
                    // no smaller than the page, so the page is stored raw.
                    let room = bs - 1;
                    let mut buf = std::mem::take(&mut self.scratch);
                    buf.resize(room, 0);
                    let r = z.compress(page, &mut buf, flate2::FlushCompress::Finish);
                    let n = z.total_out() as usize;
                    self.scratch = buf;
                    match r {
                        Ok(flate2::Status::StreamEnd) if n < bs => Some(&self.scratch[..n]),
                        Ok(_) => None,
                        Err(e) => return Err(Error::encode("zlib", e)),
                    }
                }
                None => None,
            },
            Codec::Zstd => match self.zstd.as_mut() {
                Some(z) => {
                    self.scratch.clear();
                    self.scratch.reserve(bs);
                    let mut buf = std::mem::take(&mut self.scratch);
                    buf.resize(bs - 1, 0);
                    // An error here means "does not fit in bs - 1 bytes": store raw.
                    let r = z.compress_to_buffer(page, &mut buf[..]);
                    self.scratch = buf;
                    match r {
                        Ok(n) if n < bs => Some(&self.scratch[..n]),
                        _ => None,
                    }
                }
                None => None,
            },
            Codec::Snappy => {
                let max = snap::raw::max_compress_len(bs);
                self.scratch.clear();
                self.scratch.resize(max, 0);
                let n = self
                    .snappy
                    .compress(page, &mut self.scratch)
                    .map_err(|e| Error::encode("snappy", e))?;
                (n < bs).then(|| &self.scratch[..n])
            }
            Codec::Lzo => match self.lzo.as_mut() {
                Some(dict) => {
                    let c = lzokay_native::compress_with_dict(page, dict)
                        .map_err(|e| Error::encode("lzo", format!("{e:?}")))?;
                    self.scratch = c;
                    (self.scratch.len() < bs).then_some(&self.scratch[..])
                }
                None => None,
            },
        };
        Ok(match compressed {
            Some(c) => {
                out.extend_from_slice(c);
                Stored::Data {
                    size: c.len() as u32,
                    flags: self.codec.flag(),
                }
            }
            None => {
                out.extend_from_slice(page);
                Stored::Data {
                    size: bs as u32,
                    flags: 0,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dumpconv_formats::kdump::codec::decompress_page;

    #[test]
    fn each_codec_round_trips_and_falls_back_to_raw() {
        let text: Vec<u8> = (0..4096u32)
            .map(|i| b"kdump page "[i as usize % 11])
            .collect();
        let mut noise = vec![0u8; 4096];
        let mut x = 0x1234_5678u32;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        for codec in Codec::ALL {
            let mut enc = PageEncoder::new(codec, None, 4096).unwrap();
            let mut out = Vec::new();
            assert_eq!(enc.encode(&[0u8; 4096], &mut out).unwrap(), Stored::Zero);
            assert!(out.is_empty());
            let s = enc.encode(&text, &mut out).unwrap();
            let Stored::Data { size, flags } = s else {
                panic!("{s:?}")
            };
            assert_eq!(size as usize, out.len());
            if codec == Codec::None {
                assert_eq!((size, flags), (4096, 0));
            } else {
                assert!(size < 4096 && flags == codec.flag(), "{codec:?}");
            }
            let mut back = vec![0u8; 4096];
            decompress_page(Codec::from_page_flags(flags), &out, &mut back).unwrap();
            assert_eq!(back, text);
            out.clear();
            assert_eq!(
                enc.encode(&noise, &mut out).unwrap(),
                Stored::Data {
                    size: 4096,
                    flags: 0
                },
                "{codec:?}"
            );
            assert_eq!(out, noise);
        }
    }
}
