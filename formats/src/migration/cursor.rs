//! A buffered, position-tracking sequential reader over an [`Input`]: the migration
//! stream has no index, so it is read front to back once. Page data is skipped, not
//! read (a skip inside the buffer costs nothing, a longer one just moves the position).

use dumpconv_core::{Error, Result};

use crate::input::Input;

const BUF: usize = 1 << 20;

pub struct Cursor<'a> {
    pub input: &'a Input,
    /// File offset of the next byte.
    pub pos: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
    buf_len: usize,
    /// What is being read, for errors ("section 2 \"ram\"").
    pub what: String,
    /// Fields and elements of device state walked so far that took no bytes (a
    /// VMDESCRIPTION's size-0 fields and empty structs): bounded for the whole stream
    /// ([`super::vmdesc`]), since the input's size does not bound them.
    pub free_visits: u64,
}

impl<'a> Cursor<'a> {
    pub fn new(input: &'a Input, pos: u64) -> Cursor<'a> {
        Cursor {
            input,
            pos,
            buf: Vec::new(),
            buf_at: 0,
            buf_len: 0,
            what: "file header".into(),
            free_visits: 0,
        }
    }

    /// A format error at `offset`, naming the part being read.
    pub fn err_at(&self, offset: u64, msg: impl std::fmt::Display) -> Error {
        Error::format(
            self.input.path.clone(),
            offset,
            super::FMT,
            format!("{}: {msg}", self.what),
        )
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.input.len
    }

    /// Make `n` bytes at `pos` available in the buffer (n <= BUF).
    fn fill(&mut self, n: usize) -> Result<&[u8]> {
        let in_buf =
            self.pos >= self.buf_at && self.pos + n as u64 <= self.buf_at + self.buf_len as u64;
        if !in_buf {
            let left = self.input.len.saturating_sub(self.pos);
            if left < n as u64 {
                return Err(self.err_at(
                    self.pos,
                    format!(
                        "the stream ends inside a {n}-byte field ({left} byte(s) left; \
                         truncated file?)"
                    ),
                ));
            }
            let want = left.min(BUF as u64) as usize;
            if self.buf.len() < BUF {
                self.buf = vec![0u8; BUF];
            }
            let pos = self.pos;
            let what = self.what.clone();
            self.input
                .read_exact_at(&mut self.buf[..want], pos, super::FMT, &what)?;
            self.buf_at = pos;
            self.buf_len = want;
        }
        let i = (self.pos - self.buf_at) as usize;
        Ok(&self.buf[i..i + n])
    }

    /// Look at the next `n` bytes without consuming them; fewer at the end of the file.
    pub fn peek(&mut self, n: usize) -> Result<Vec<u8>> {
        let n = (n as u64).min(self.input.len.saturating_sub(self.pos)) as usize;
        Ok(self.fill(n)?.to_vec())
    }

    pub fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        if n > BUF {
            return Err(self.err_at(self.pos, format!("a {n}-byte field is too large")));
        }
        let v = self.fill(n)?.to_vec();
        self.pos += n as u64;
        Ok(v)
    }

    pub fn u8(&mut self) -> Result<u8> {
        let b = self.fill(1)?[0];
        self.pos += 1;
        Ok(b)
    }

    pub fn be_u32(&mut self) -> Result<u32> {
        let b = self.fill(4)?;
        let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        self.pos += 4;
        Ok(v)
    }

    pub fn be_u64(&mut self) -> Result<u64> {
        let b = self.fill(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        self.pos += 8;
        Ok(u64::from_be_bytes(a))
    }

    /// A big-endian unsigned number of 1 to 8 bytes.
    pub fn be_uint(&mut self, n: usize) -> Result<u64> {
        let b = self.bytes(n)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// A string with a one-byte length (section and block names).
    pub fn name8(&mut self) -> Result<String> {
        let n = self.u8()? as usize;
        let b = self.bytes(n)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Skip `n` bytes, which must be in the file.
    pub fn skip(&mut self, n: u64) -> Result<()> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.input.len);
        match end {
            Some(e) => {
                self.pos = e;
                Ok(())
            }
            None => Err(self.err_at(
                self.pos,
                format!(
                    "the stream ends inside {n:#x} bytes of data ({:#x} left; truncated \
                     file?)",
                    self.input.len.saturating_sub(self.pos)
                ),
            )),
        }
    }
}
