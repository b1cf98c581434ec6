//! Whole-output compression: a writer's bytes go through a zstd or lz4 (frame format)
//! encoder before reaching the file or stdout, so `ram.raw.zst` is exactly what `zstd`
//! would make of `ram.raw`, and `zstd -d` / `lz4 -d` give the plain output back.
//!
//! The compressing sink is a forward-only stream: writers that can stream (raw, ELF,
//! LiME) work through it unchanged, writing zeros where a file would have holes (the
//! compressor turns them into a few bytes). kdump compresses each page itself and is
//! never wrapped.

use std::io::Write;
use std::path::{Path, PathBuf};

use dumpconv_core::{Error, Result, Sink, StreamSink};

/// A compressed-stream format for the whole output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCodec {
    /// Zstandard (`.zst`), at `level` with `threads` compression workers.
    Zstd { level: i32, threads: usize },
    /// LZ4 frame format (`.lz4`), content checksum on.
    Lz4,
}

impl StreamCodec {
    pub fn name(self) -> &'static str {
        match self {
            StreamCodec::Zstd { .. } => "zstd",
            StreamCodec::Lz4 => "lz4",
        }
    }
}

/// zstd's own command-line default, a good speed/size balance for memory images.
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// Bytes of input per multithreaded zstd job at levels up to [`ZSTD_DEFAULT_LEVEL`]: one
/// window of level 3 (2 MiB).
pub const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// libzstd's `ZSTD_c_overlapLog` with [`ZSTD_JOB_SIZE`]: each multithreaded job starts by
/// loading the end of the previous one as history, `window >> (9 - log)` bytes: 64 KiB
/// at 4, where libzstd's default for level 3 (6) loads 256 KiB, an eighth of a 2 MiB job.
/// 64 KiB is the share libzstd's default gives its own 8 MiB jobs (1/32).
pub const ZSTD_OVERLAP_LOG: u32 = 4;

/// The codecs `--compress` accepts for formats other than kdump, for messages.
pub const STREAM_CODEC_NAMES: &str = "zstd, lz4 or none";

/// What an output name's last extension says about compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedCodec {
    Zstd,
    Lz4,
}

impl NamedCodec {
    /// `.zst`/`.zstd` or `.lz4` at the end of `path`, and the name without it (whose
    /// own extension then picks the format: `ram.raw.zst` → `ram.raw`).
    pub fn from_path(path: &Path) -> Option<(NamedCodec, PathBuf)> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        let codec = match ext.as_str() {
            "zst" | "zstd" => NamedCodec::Zstd,
            "lz4" => NamedCodec::Lz4,
            _ => return None,
        };
        Some((codec, path.with_extension("")))
    }

    /// `--compress` values for whole-stream compression; `Ok(None)` is `none`.
    pub fn from_option(value: &str) -> Option<Option<NamedCodec>> {
        match value.trim().to_ascii_lowercase().as_str() {
            "zstd" | "zst" => Some(Some(NamedCodec::Zstd)),
            "lz4" => Some(Some(NamedCodec::Lz4)),
            "none" => Some(None),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NamedCodec::Zstd => "zstd",
            NamedCodec::Lz4 => "lz4",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            NamedCodec::Zstd => "zst",
            NamedCodec::Lz4 => "lz4",
        }
    }
}

enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Zstd(z) => z.write(buf),
            Encoder::Lz4(l) => l.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Zstd(z) => z.write_all(buf),
            Encoder::Lz4(l) => l.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Zstd(z) => z.flush(),
            Encoder::Lz4(l) => l.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    /// End the frame (checksum included) and flush it into `W`.
    fn end_frame(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Zstd(z) => {
                z.do_finish()?;
                z.get_mut().flush()
            }
            Encoder::Lz4(l) => {
                l.try_finish().map_err(std::io::Error::other)?;
                l.get_mut().flush()
            }
        }
    }
}

/// A forward-only sink that compresses into `W` (a buffered file or stdout): the stream
/// sink (position, zeros for holes, no going back) over an encoder.
pub struct CompressedSink<W: Write + Send> {
    /// Names the final output path in errors, not the temporary file; its position is
    /// in uncompressed bytes (what writers see).
    stream: StreamSink<Encoder<W>>,
    finished: bool,
}

impl<W: Write + Send> CompressedSink<W> {
    pub fn new(codec: StreamCodec, inner: W, name: impl Into<PathBuf>) -> Result<Self> {
        let name = name.into();
        let setup = |e: std::io::Error| Error::encode(codec.name(), e);
        let encoder = match codec {
            StreamCodec::Zstd { level, threads } => {
                let mut z = zstd::stream::write::Encoder::new(inner, level).map_err(setup)?;
                z.include_checksum(true).map_err(setup)?;
                if threads > 1 {
                    // Workers compress jobs of several MiB in parallel; the frame is a
                    // normal single zstd frame whatever the count.
                    z.multithread(u32::try_from(threads).unwrap_or(u32::MAX))
                        .map_err(setup)?;
                    if level <= ZSTD_DEFAULT_LEVEL {
                        // libzstd's jobs are 4 windows (8 MiB at level 3), and it keeps
                        // about 2 x workers + 3 of them: 72 MiB RSS with 2 workers. Jobs of
                        // one window need less than half that, for no size on most guests
                        // (0.46 % on x86_64-highmem; BENCHMARKS.md, 2026-12-05, issue 19).
                        // Higher levels keep libzstd's choice.
                        z.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))
                            .map_err(setup)?;
                        // Loading a 256 KiB history into the hash tables per 2 MiB job was
                        // 8-13 % of the CPU on memory images (zero runs compress fast,
                        // hashing them does not); 64 KiB saves 6-11 % for 0.04-0.8 % of
                        // size (BENCHMARKS.md, issue 19 goal (c) against zstd 1.5.7).
                        z.set_parameter(zstd::zstd_safe::CParameter::OverlapSizeLog(
                            ZSTD_OVERLAP_LOG,
                        ))
                        .map_err(setup)?;
                    }
                }
                Encoder::Zstd(z)
            }
            StreamCodec::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max4MB)
                    .content_checksum(true);
                Encoder::Lz4(lz4_flex::frame::FrameEncoder::with_frame_info(info, inner))
            }
        };
        Ok(CompressedSink {
            stream: StreamSink::new(encoder, name),
            finished: false,
        })
    }

    /// The writer underneath, after [`Sink::finish`] (which makes this a no-op for the
    /// encoder); the caller flushes and syncs it.
    pub fn into_inner(mut self) -> Result<W> {
        if !self.finished {
            self.finish()?;
        }
        let name = self.stream.name().to_path_buf();
        let pos = self.stream.position();
        match self.stream.into_inner() {
            Encoder::Zstd(z) => z.finish().map_err(|source| Error::Output {
                path: name,
                offset: pos,
                source,
            }),
            Encoder::Lz4(l) => Ok(l.into_inner()),
        }
    }
}

impl<W: Write + Send> Sink for CompressedSink<W> {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.stream.write_all(buf)
    }

    fn skip(&mut self, len: u64) -> Result<()> {
        self.stream.skip(len)
    }

    fn position(&self) -> u64 {
        self.stream.position()
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        self.stream.write_at(offset, buf)
    }

    /// End the compressed frame (checksum included) and flush it into `W`. Idempotent:
    /// writers finish their sink and the output code finishes it again.
    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.stream
            .get_mut()
            .end_frame()
            .map_err(|e| self.stream.err(e))?;
        self.finished = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    fn roundtrip(codec: StreamCodec) {
        let mut s = CompressedSink::new(codec, Vec::new(), "<mem>").unwrap();
        s.write_all(b"header").unwrap();
        s.skip(3 << 20).unwrap();
        s.write_all(b"tail").unwrap();
        assert_eq!(s.position(), 6 + (3 << 20) + 4);
        assert!(s.write_at(0, b"x").is_err());
        s.finish().unwrap();
        s.finish().unwrap();
        let packed = s.into_inner().unwrap();
        assert!(packed.len() < 64 << 10, "zeros compress: {}", packed.len());
        let mut plain = Vec::new();
        match codec {
            StreamCodec::Zstd { .. } => {
                zstd::stream::read::Decoder::new(&packed[..])
                    .unwrap()
                    .read_to_end(&mut plain)
                    .unwrap();
            }
            StreamCodec::Lz4 => {
                lz4_flex::frame::FrameDecoder::new(&packed[..])
                    .read_to_end(&mut plain)
                    .unwrap();
            }
        }
        let mut want = b"header".to_vec();
        want.resize(6 + (3 << 20), 0);
        want.extend_from_slice(b"tail");
        assert!(plain == want);
    }

    #[test]
    fn zstd_single_and_multithreaded_and_lz4_roundtrip() {
        roundtrip(StreamCodec::Zstd {
            level: 3,
            threads: 1,
        });
        roundtrip(StreamCodec::Zstd {
            level: 1,
            threads: 2,
        });
        roundtrip(StreamCodec::Lz4);
    }

    #[test]
    fn names() {
        let (c, inner) = NamedCodec::from_path(Path::new("d/ram.raw.ZST")).unwrap();
        assert_eq!((c, inner), (NamedCodec::Zstd, PathBuf::from("d/ram.raw")));
        let (c, inner) = NamedCodec::from_path(Path::new("x.lz4")).unwrap();
        assert_eq!((c, inner), (NamedCodec::Lz4, PathBuf::from("x")));
        assert!(NamedCodec::from_path(Path::new("x.raw")).is_none());
        assert_eq!(NamedCodec::from_option("none"), Some(None));
        assert_eq!(NamedCodec::from_option("zlib"), None);
    }
}
