//! An input file opened for positioned reads, with errors that name the path and the
//! offset.
//!
//! Every reader goes through this so that the checks every format needs (a directory,
//! an empty file, a pipe, a short read) are made once and worded the same way. Reads
//! are positioned (`read_exact_at`): the `File` can be shared with the `PhysicalMemory`
//! built from it and read from many threads without a shared cursor.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dumpconv_core::{Dump, Error, PhysicalMemory, Result};

/// How many bytes of the file content probes look at.
pub const HEAD_LEN: usize = 4096;

/// Largest metadata blob (program header table, note segment) a reader loads into
/// memory in one piece. Real dumps have a few MiB at most (65535 program headers are
/// 3.6 MiB); anything bigger is a lying header, and refusing it keeps a corrupt file
/// from making us allocate gigabytes.
pub const MAX_METADATA: u64 = 256 << 20;

/// An open input file.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Size in bytes (for a block device, its capacity).
    pub len: u64,
}

impl Input {
    /// Open `path` for reading. Refuses directories, empty files and anything that
    /// cannot be read at arbitrary offsets (pipes, sockets, character devices: streams
    /// are spilled to a file by [`crate::wrapped`] before they get here).
    pub fn open(path: &Path) -> Result<Input> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            return Err(Error::io(
                path,
                io::Error::other("is a directory, not a dump file"),
            ));
        }
        if !(ft.is_file() || ft.is_block_device()) {
            return Err(Error::io(
                path,
                io::Error::other(
                    "not a regular file or block device (dumps are read at random \
                     offsets; `dumpconv` copies standard input `-` and named pipes to a \
                     temporary file first, but cannot read character devices: copy it \
                     to a file first)",
                ),
            ));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = if ft.is_block_device() {
            // A block device reports size 0 in its metadata; its capacity is where
            // its end is. Seeking this fresh, not yet shared handle is harmless: every
            // read below is positioned.
            (&file)
                .seek(SeekFrom::End(0))
                .map_err(|e| Error::io(path, e))?
        } else {
            meta.len()
        };
        if len == 0 {
            return Err(Error::format(
                path.to_path_buf(),
                None,
                "input",
                "the file is empty (0 bytes)",
            ));
        }
        Ok(Input {
            path: path.to_path_buf(),
            file: Arc::new(file),
            len,
        })
    }

    /// The first [`HEAD_LEN`] bytes (fewer if the file is shorter).
    pub fn head(&self) -> Result<Vec<u8>> {
        let n = self.len.min(HEAD_LEN as u64);
        self.read_vec(0, n, "input", "the start of the file")
    }

    /// Read exactly `buf.len()` bytes at `offset`. A file that ends early is a format
    /// error at `offset` naming `what` was being read.
    pub fn read_exact_at(
        &self,
        buf: &mut [u8],
        offset: u64,
        format: &'static str,
        what: &str,
    ) -> Result<()> {
        if !fits(offset, buf.len() as u64, self.len) {
            return Err(self.past_eof(offset, buf.len() as u64, format, what));
        }
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // The file shrank under us.
                self.past_eof(offset, buf.len() as u64, format, what)
            } else {
                Error::io(&self.path, e)
            }
        })
    }

    /// Read `len` bytes at `offset` into a new buffer; `len` is checked against the
    /// file size before anything is allocated.
    pub fn read_vec(
        &self,
        offset: u64,
        len: u64,
        format: &'static str,
        what: &str,
    ) -> Result<Vec<u8>> {
        if !fits(offset, len, self.len) {
            return Err(self.past_eof(offset, len, format, what));
        }
        let n = usize::try_from(len).map_err(|_| self.past_eof(offset, len, format, what))?;
        let mut buf = vec![0u8; n];
        self.read_exact_at(&mut buf, offset, format, what)?;
        Ok(buf)
    }

    /// The [`Dump`] of a format that holds physical memory only (raw, LiME, AVML): no
    /// architecture, CPU state, notes or VMCOREINFO of its own.
    pub fn memory_only_dump(
        &self,
        format: &'static str,
        details: Vec<(String, String)>,
        memory: Arc<dyn PhysicalMemory>,
    ) -> Dump {
        Dump {
            path: self.path.clone(),
            format,
            details,
            arch: None,
            memory,
            cpus: Vec::new(),
            notes: Vec::new(),
            vmcoreinfo: None,
        }
    }

    fn past_eof(&self, offset: u64, len: u64, format: &'static str, what: &str) -> Error {
        Error::format(
            self.path.clone(),
            offset,
            format,
            format!(
                "{what} ({len:#x} bytes) runs past the end of the file ({:#x} bytes; \
                 truncated file?)",
                self.len
            ),
        )
    }
}

/// True if `[offset, offset + len)` lies inside a file of `file_len` bytes (without
/// overflowing).
pub fn fits(offset: u64, len: u64, file_len: u64) -> bool {
    matches!(offset.checked_add(len), Some(end) if end <= file_len)
}
