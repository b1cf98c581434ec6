//! BLAKE3 digests of output files, as `b3sum FILE` prints them: the hash of the file's
//! logical bytes (holes count as the zeros they read back as), in lower-case hex.
//!
//! A writer that only appends (`write_all`, and `skip` for holes) has its digest taken
//! on the way out by [`HashingSink`], so the finished output is never read again. A
//! writer that goes back to patch earlier bytes (`write_at`: the kdump writer fills in
//! its header and bitmaps last) makes the streamed digest wrong; the sink notices and
//! the caller hashes the finished file instead ([`file_blake3`]). Whole-output
//! compression is hashed after the compressor ([`HashingWriter`]), so the digest is the
//! compressed file's, as `b3sum ram.raw.zst` gives it.
//!
//! Why BLAKE3 and not SHA-256: one core hashes about 1.2 GB/s with SHA-256 (SHA-NI)
//! and several GB/s with BLAKE3 (AVX2/AVX-512), and the digest of a batch output was
//! costing more than its conversion (BENCHMARKS.md).

use std::io::{Read, Write};
use std::path::Path;

use dumpconv_core::zero::ZEROS;
use dumpconv_core::{Error, Result, Sink};

/// The size of the blocks [`HashingSink`] feeds to the hasher. BLAKE3 hashes many
/// 1 KiB chunks at once in SIMD lanes only within one `update`: fed the 4 KiB pieces a
/// writer emits where data and zero pages alternate, it runs at about half the speed
/// (BENCHMARKS.md).
pub const HASH_BLOCK: usize = 256 << 10;

/// Feed `len` zero bytes to `hasher`.
pub fn update_zeros(hasher: &mut blake3::Hasher, mut len: u64) {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// Lower-case hex of a BLAKE3 hash.
pub fn hex(hash: &blake3::Hash) -> String {
    hash.to_hex().to_string()
}

/// A sink that passes everything to `inner` and hashes the bytes the output will hold,
/// as long as the writer only appends.
pub struct HashingSink<'a> {
    inner: &'a mut dyn Sink,
    hasher: blake3::Hasher,
    /// Bytes not hashed yet, gathered into [`HASH_BLOCK`]s.
    pending: Vec<u8>,
    /// `write_at` was used: the streamed digest no longer describes the file.
    patched: bool,
}

impl<'a> HashingSink<'a> {
    /// Hash what is written to `inner` from its current position on (a fresh output:
    /// from offset 0).
    pub fn new(inner: &'a mut dyn Sink) -> Self {
        HashingSink {
            inner,
            hasher: blake3::Hasher::new(),
            pending: Vec::with_capacity(HASH_BLOCK),
            patched: false,
        }
    }

    /// The digest of everything written, or `None` when the writer patched earlier
    /// bytes (then hash the finished file).
    pub fn digest(&mut self) -> Option<String> {
        self.hasher.update(&self.pending);
        self.pending.clear();
        (!self.patched).then(|| hex(&self.hasher.finalize()))
    }

    fn hash(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= HASH_BLOCK {
                // Large enough already: no copy.
                self.hasher.update(data);
                return;
            }
            let n = (HASH_BLOCK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == HASH_BLOCK {
                self.hasher.update(&self.pending);
                self.pending.clear();
            }
        }
    }

    fn hash_zeros(&mut self, mut len: u64) {
        while len > 0 {
            if self.pending.is_empty() && len >= HASH_BLOCK as u64 {
                let whole = len - len % HASH_BLOCK as u64;
                update_zeros(&mut self.hasher, whole);
                len -= whole;
                continue;
            }
            let n =
                (HASH_BLOCK - self.pending.len()).min(usize::try_from(len).unwrap_or(usize::MAX));
            self.hash(&ZEROS[..n]);
            len -= n as u64;
        }
    }
}

impl Sink for HashingSink<'_> {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.inner.write_all(buf)?;
        self.hash(buf);
        Ok(())
    }

    fn skip(&mut self, len: u64) -> Result<()> {
        self.inner.skip(len)?;
        self.hash_zeros(len);
        Ok(())
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn is_seekable(&self) -> bool {
        self.inner.is_seekable()
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        // Even a failed patch may have changed some bytes.
        self.patched = true;
        self.inner.write_at(offset, buf)
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()
    }

    fn check_len(&mut self, len: u64) -> Result<()> {
        self.inner.check_len(len)
    }
}

/// A writer that hashes what goes through it (a compressor's output on its way to the
/// file).
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Option<blake3::Hasher>,
}

impl<W: Write> HashingWriter<W> {
    /// Hash only when `hash`; otherwise a plain pass-through.
    pub fn new(inner: W, hash: bool) -> Self {
        HashingWriter {
            inner,
            hasher: hash.then(blake3::Hasher::new),
        }
    }

    /// The writer and the digest of everything written through it (`None` when not
    /// hashing).
    pub fn into_parts(self) -> (W, Option<String>) {
        (self.inner, self.hasher.map(|h| hex(&h.finalize())))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// BLAKE3 of a whole file, read back (holes read as zeros), hex: what `b3sum` prints.
pub fn file_blake3(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dumpconv_core::{FileSink, StreamSink};

    #[test]
    fn streamed_digest_equals_the_files_digest_with_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        let mut file = FileSink::new(std::fs::File::create(&p).unwrap(), &p);
        let mut s = HashingSink::new(&mut file);
        s.write_all(b"header").unwrap();
        s.skip(3 << 20).unwrap();
        s.write_all(&[7u8; 5000]).unwrap();
        s.skip(123).unwrap();
        s.finish().unwrap();
        let streamed = s.digest().unwrap();
        assert_eq!(streamed, file_blake3(&p).unwrap());
        // And it is BLAKE3 of the logical bytes, computed independently.
        let mut bytes = b"header".to_vec();
        bytes.resize(6 + (3 << 20), 0);
        bytes.extend_from_slice(&[7u8; 5000]);
        bytes.resize(bytes.len() + 123, 0);
        assert_eq!(streamed, blake3::hash(&bytes).to_hex().to_string());
    }

    #[test]
    fn fragmented_writes_and_holes_hash_as_one_stream() {
        // Pieces of every size around the block size, data and holes alternating.
        let mut stream = StreamSink::new(Vec::new(), "<mem>");
        let mut s = HashingSink::new(&mut stream);
        let sizes = [
            1,
            4096,
            HASH_BLOCK - 1,
            3,
            HASH_BLOCK,
            2 * HASH_BLOCK + 7,
            4095,
        ];
        for (i, n) in sizes.iter().cycle().take(40).enumerate() {
            if i % 3 == 1 {
                s.skip(*n as u64).unwrap();
            } else {
                let data: Vec<u8> = (0..*n).map(|b| (b * 7 + i) as u8 | 1).collect();
                s.write_all(&data).unwrap();
            }
        }
        s.finish().unwrap();
        let streamed = s.digest().unwrap();
        assert_eq!(
            streamed,
            blake3::hash(&stream.into_inner()).to_hex().to_string()
        );
    }

    #[test]
    fn a_patched_output_has_no_streamed_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        let mut file = FileSink::new(std::fs::File::create(&p).unwrap(), &p);
        let mut s = HashingSink::new(&mut file);
        s.write_all(b"....body").unwrap();
        s.write_at(0, b"HEAD").unwrap();
        s.finish().unwrap();
        assert_eq!(s.digest(), None);
        assert_eq!(
            file_blake3(&p).unwrap(),
            blake3::hash(b"HEADbody").to_hex().to_string()
        );
    }

    #[test]
    fn a_refused_patch_on_a_stream_still_voids_the_digest() {
        let mut stream = StreamSink::new(Vec::new(), "<mem>");
        let mut s = HashingSink::new(&mut stream);
        s.write_all(b"abc").unwrap();
        assert!(s.write_at(0, b"x").is_err());
        assert_eq!(s.digest(), None);
    }

    #[test]
    fn hashing_writer_hashes_what_passes() {
        let mut w = HashingWriter::new(Vec::new(), true);
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (bytes, digest) = w.into_parts();
        assert_eq!(bytes, b"hello world");
        assert_eq!(
            digest.unwrap(),
            blake3::hash(b"hello world").to_hex().to_string()
        );
        let (_, none) = HashingWriter::new(Vec::new(), false).into_parts();
        assert_eq!(none, None);
    }
}
