//! Where a writer's bytes go: a seekable file (holes for skipped ranges, positioned
//! rewrites of headers) or a forward-only stream (stdout, a pipe).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::zero::ZEROS;

pub trait Sink: Send {
    /// Append `buf` at the current position.
    fn write_all(&mut self, buf: &[u8]) -> Result<()>;

    /// Advance `len` bytes that must read back as zeros. A file leaves a sparse hole;
    /// a stream writes zeros.
    fn skip(&mut self, len: u64) -> Result<()>;

    /// Bytes of output so far (the current position).
    fn position(&self) -> u64;

    /// True if `write_at` works.
    fn is_seekable(&self) -> bool;

    /// Overwrite bytes at an earlier offset (headers written last). Streams refuse.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()>;

    /// Flush everything; the output is complete when this returns Ok.
    fn finish(&mut self) -> Result<()>;

    /// Check, before writing, that the output can be `len` bytes long: a file system
    /// refuses files past its largest size (EFBIG; ext4 with 4 KiB blocks: 16 TiB), and
    /// a raw image is as long as its highest address. Streams accept any length.
    fn check_len(&mut self, _len: u64) -> Result<()> {
        Ok(())
    }
}

const FILE_BUFFER: usize = 1 << 20;

/// A sink over a regular file, with a 1 MiB write buffer and positioned writes.
#[derive(Debug)]
pub struct FileSink {
    file: File,
    path: PathBuf,
    /// Output offset of `buf[0]`.
    buf_start: u64,
    buf: Vec<u8>,
}

impl FileSink {
    /// Wrap a file opened for writing; writing starts at offset 0.
    pub fn new(file: File, path: impl Into<PathBuf>) -> Self {
        FileSink {
            file,
            path: path.into(),
            buf_start: 0,
            buf: Vec::with_capacity(FILE_BUFFER),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, offset: u64, source: std::io::Error) -> Error {
        Error::Output {
            path: self.path.clone(),
            offset,
            source,
        }
    }

    fn flush_buf(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file
                .write_all_at(&self.buf, self.buf_start)
                .map_err(|e| self.err(self.buf_start, e))?;
            self.buf_start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Give back the file (after `finish`).
    pub fn into_file(self) -> File {
        self.file
    }
}

impl Sink for FileSink {
    fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            if self.buf.is_empty() && buf.len() >= FILE_BUFFER {
                // Large writes go straight to the file.
                self.file
                    .write_all_at(buf, self.buf_start)
                    .map_err(|e| self.err(self.buf_start, e))?;
                self.buf_start += buf.len() as u64;
                return Ok(());
            }
            let n = (FILE_BUFFER - self.buf.len()).min(buf.len());
            self.buf.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.buf.len() == FILE_BUFFER {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    fn skip(&mut self, len: u64) -> Result<()> {
        self.flush_buf()?;
        self.buf_start = self
            .buf_start
            .checked_add(len)
            .ok_or_else(|| Error::internal("output offset overflows 64 bits"))?;
        Ok(())
    }

    fn position(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    fn is_seekable(&self) -> bool {
        true
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        self.flush_buf()?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.err(offset, e))
    }

    /// Grows the file to `len` (a sparse hole) and back: the file system answers at
    /// once, before anything is written, where writing would fail at that offset.
    fn check_len(&mut self, len: u64) -> Result<()> {
        self.flush_buf()?;
        let now = self.file.metadata().map_err(|e| self.err(0, e))?.len();
        if len > now {
            self.file.set_len(len).map_err(|e| self.err(len, e))?;
            self.file.set_len(now).map_err(|e| self.err(now, e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_buf()?;
        // A trailing hole needs the length set explicitly.
        let len = self.buf_start;
        self.file.set_len(len).map_err(|e| self.err(len, e))?;
        self.file.sync_data().map_err(|e| self.err(len, e))
    }
}

/// Write `len` zero bytes: how a forward-only sink (a stream, a compressor) makes a
/// hole, since it cannot seek over it.
pub fn write_zeros<S: Sink + ?Sized>(sink: &mut S, mut len: u64) -> Result<()> {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        sink.write_all(&ZEROS[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// A forward-only sink over any writer (stdout, a pipe, a compressor).
pub struct StreamSink<W: Write + Send> {
    inner: W,
    name: PathBuf,
    pos: u64,
}

impl<W: Write + Send> StreamSink<W> {
    pub fn new(inner: W, name: impl Into<PathBuf>) -> Self {
        StreamSink {
            inner,
            name: name.into(),
            pos: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The writer underneath (for a wrapper that must end it, a compressor's frame).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The name errors give.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// An output error at the current position.
    pub fn err(&self, source: std::io::Error) -> Error {
        Error::Output {
            path: self.name.clone(),
            offset: self.pos,
            source,
        }
    }
}

impl<W: Write + Send> Sink for StreamSink<W> {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.inner.write_all(buf).map_err(|e| self.err(e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, len: u64) -> Result<()> {
        write_zeros(self, len)
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn write_at(&mut self, offset: u64, _buf: &[u8]) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{}: cannot go back to offset {offset:#x} in a stream",
            self.name.display()
        )))
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.flush().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn file_sink_holes_and_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        let mut s = FileSink::new(File::create(&p).unwrap(), &p);
        s.write_all(b"abc").unwrap();
        s.skip(5).unwrap();
        s.write_all(b"xyz").unwrap();
        s.write_at(1, b"B").unwrap();
        s.skip(4).unwrap();
        assert_eq!(s.position(), 15);
        s.finish().unwrap();
        let mut v = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut v).unwrap();
        assert_eq!(v, b"aBc\0\0\0\0\0xyz\0\0\0\0");
    }

    #[test]
    fn stream_sink_writes_zeros_and_refuses_seek() {
        let mut s = StreamSink::new(Vec::new(), "<mem>");
        s.write_all(b"a").unwrap();
        s.skip(3).unwrap();
        assert!(s.write_at(0, b"x").is_err());
        s.finish().unwrap();
        assert_eq!(s.into_inner(), b"a\0\0\0");
    }
}
