//! Reading `lzop` files (libvirt's `save_image_format = "lzop"`, and `lzop` files in
//! general) as a stream.
//!
//! The container, written from the format's description (all integers big-endian):
//!
//! | field | bytes | notes |
//! |---|---|---|
//! | magic | 9 | `89 4c 5a 4f 00 0d 0a 1a 0a` |
//! | version | 2 | lzop's version; fields marked *0x940* exist only from version 0x0940 on |
//! | library version | 2 | |
//! | version needed to extract | 2 | *0x940* |
//! | method | 1 | 1, 2: LZO1X-1 (`-1`..`-6`); 3: LZO1X-999 (`-7`..`-9`); all decode with the LZO1X decompressor |
//! | level | 1 | *0x940* |
//! | flags | 4 | see below |
//! | filter | 4 | only with flag `0x800` |
//! | mode, mtime low | 4 + 4 | |
//! | mtime high | 4 | *0x940* |
//! | name length, name | 1 + n | |
//! | header checksum | 4 | Adler-32 of the header from `version` on, CRC-32 with flag `0x1000` |
//! | extra field | 4 + n + 4 | only with flag `0x40`: length, data, checksum |
//!
//! Then blocks: uncompressed length (0 ends the file), compressed length, the checksum
//! of the uncompressed data (Adler-32 with flag `0x1`, CRC-32 with flag `0x100`), the
//! checksum of the compressed data (flags `0x2` / `0x200`; present only when the block
//! is compressed, i.e. shorter than its uncompressed length), then the data: stored as
//! is when both lengths are equal, else one LZO1X block. Several lzop files one after
//! the other (`cat a.lzo b.lzo`) read as their concatenation, as `lzop -dc` reads them.

use std::io::{self, Read};

pub const MAGIC: [u8; 9] = [0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a];

const F_ADLER32_D: u32 = 0x1;
const F_ADLER32_C: u32 = 0x2;
const F_H_EXTRA_FIELD: u32 = 0x40;
const F_CRC32_D: u32 = 0x100;
const F_CRC32_C: u32 = 0x200;
const F_H_FILTER: u32 = 0x800;
const F_H_CRC32: u32 = 0x1000;
/// lzop itself writes blocks of 256 KiB; its format allows up to 64 MiB.
const MAX_BLOCK: u32 = 64 << 20;

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Adler-32 (RFC 1950), starting from `a` (1 for a fresh sum).
fn adler32(start: u32, data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (start & 0xffff, start >> 16);
    // 5552 bytes is the most that can be summed before b may overflow 32 bits.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    b << 16 | a
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// A reader giving the decompressed content of an lzop stream.
pub struct LzopDecoder<R: Read> {
    inner: R,
    /// Flags of the current member's header; `None` before a header is read.
    flags: Option<u32>,
    /// Bytes of the decompressed stream handed out so far (for error messages).
    out_pos: u64,
    /// Bytes of the compressed stream consumed so far (for error messages).
    in_pos: u64,
    block: Vec<u8>,
    compressed: Vec<u8>,
    at: usize,
    done: bool,
}

impl<R: Read> LzopDecoder<R> {
    pub fn new(inner: R) -> Self {
        LzopDecoder {
            inner,
            flags: None,
            out_pos: 0,
            in_pos: 0,
            block: Vec::new(),
            compressed: Vec::new(),
            at: 0,
            done: false,
        }
    }

    /// Fill `buf` or fail with "truncated" naming `what`.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> io::Result<()> {
        let at = self.in_pos;
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                        "lzop: {what} at compressed offset {at:#x} is cut short ({n} of {} bytes)",
                        buf.len()
                    ),
                    ))
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.in_pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.fill(&mut b, what)?;
        Ok(u32::from_be_bytes(b))
    }

    /// Read one member's header (after its magic), checking its checksum.
    fn header(&mut self) -> io::Result<u32> {
        let start = self.in_pos;
        // Everything from `version` to before the checksum, as the checksum covers it.
        let mut h = Vec::with_capacity(64);
        let take = |s: &mut Self, n: usize, what: &str, h: &mut Vec<u8>| -> io::Result<u64> {
            let mut b = [0u8; 4];
            s.fill(&mut b[..n], what)?;
            h.extend_from_slice(&b[..n]);
            Ok(b[..n].iter().fold(0u64, |v, &x| v << 8 | u64::from(x)))
        };
        let version = take(self, 2, "the header's version", &mut h)?;
        take(self, 2, "the header's library version", &mut h)?;
        if version >= 0x0940 {
            let needed = take(self, 2, "the header's version needed to extract", &mut h)?;
            if needed > 0x1040 {
                return Err(bad(format!(
                    "lzop: the header at compressed offset {start:#x} needs lzop version \
                     {needed:#x} to extract; versions up to 0x1040 are known"
                )));
            }
        }
        let method = take(self, 1, "the header's method", &mut h)?;
        if !(1..=3).contains(&method) {
            return Err(bad(format!(
                "lzop: method {method} in the header at compressed offset {start:#x}; \
                 1, 2 (LZO1X-1) and 3 (LZO1X-999) are known"
            )));
        }
        if version >= 0x0940 {
            take(self, 1, "the header's level", &mut h)?;
        }
        let flags = take(self, 4, "the header's flags", &mut h)? as u32;
        if flags & F_H_FILTER != 0 {
            return Err(bad(format!(
                "lzop: the header at compressed offset {start:#x} names a filter (flags \
                 {flags:#x}, an old lzop option): not supported"
            )));
        }
        take(self, 4, "the header's mode", &mut h)?;
        take(self, 4, "the header's mtime", &mut h)?;
        if version >= 0x0940 {
            take(self, 4, "the header's mtime (high)", &mut h)?;
        }
        let name_len = take(self, 1, "the header's name length", &mut h)? as usize;
        let mut name = vec![0u8; name_len];
        self.fill(&mut name, "the header's file name")?;
        h.extend_from_slice(&name);
        let sum = self.u32("the header checksum")?;
        let want = if flags & F_H_CRC32 != 0 {
            crc32(&h)
        } else {
            adler32(1, &h)
        };
        if sum != want {
            return Err(bad(format!(
                "lzop: header checksum {sum:#010x} at compressed offset {:#x} does not \
                 match the header ({want:#010x}): not an lzop file, or a corrupt one",
                self.in_pos - 4
            )));
        }
        if flags & F_H_EXTRA_FIELD != 0 {
            let len = self.u32("the extra field's length")?;
            if len > MAX_BLOCK {
                return Err(bad(format!(
                    "lzop: extra field of {len:#x} bytes at compressed offset {:#x}",
                    self.in_pos - 4
                )));
            }
            let mut extra = vec![0u8; len as usize];
            self.fill(&mut extra, "the extra field")?;
            self.u32("the extra field's checksum")?;
        }
        Ok(flags)
    }

    /// Read the next block into `self.block`; false at the end of the last member.
    fn next_block(&mut self) -> io::Result<bool> {
        let flags = match self.flags {
            Some(f) => f,
            None => {
                let mut magic = [0u8; 9];
                self.fill(&mut magic, "the magic")?;
                if magic != MAGIC {
                    return Err(bad(format!(
                        "lzop: no lzop magic at compressed offset {:#x}",
                        self.in_pos - 9
                    )));
                }
                let f = self.header()?;
                self.flags = Some(f);
                f
            }
        };
        let block_at = self.in_pos;
        let ulen = self.u32("a block's uncompressed length")?;
        if ulen == 0 {
            // End of this member; another may follow (concatenated files).
            self.flags = None;
            let mut first = [0u8; 1];
            loop {
                match self.inner.read(&mut first) {
                    Ok(0) => return Ok(false),
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.in_pos += 1;
            let mut rest = [0u8; 8];
            self.fill(&mut rest, "the magic of a following lzop file")?;
            if first[0] != MAGIC[0] || rest != MAGIC[1..] {
                return Err(bad(format!(
                    "lzop: data after the end of the lzop file at compressed offset {:#x} \
                     that is not another lzop file",
                    self.in_pos - 9
                )));
            }
            let f = self.header()?;
            self.flags = Some(f);
            return self.next_block();
        }
        let clen = self.u32("a block's compressed length")?;
        if ulen > MAX_BLOCK || clen > ulen {
            return Err(bad(format!(
                "lzop: block at compressed offset {block_at:#x} (decompressed offset \
                 {:#x}) has lengths {ulen:#x} uncompressed, {clen:#x} compressed; a block \
                 is at most {MAX_BLOCK:#x} bytes and never grows",
                self.out_pos
            )));
        }
        let d_adler = if flags & F_ADLER32_D != 0 {
            Some(self.u32("a block's checksum")?)
        } else {
            None
        };
        let d_crc = if flags & F_CRC32_D != 0 {
            Some(self.u32("a block's checksum")?)
        } else {
            None
        };
        let stored = clen == ulen;
        let c_adler = if !stored && flags & F_ADLER32_C != 0 {
            Some(self.u32("a block's checksum")?)
        } else {
            None
        };
        let c_crc = if !stored && flags & F_CRC32_C != 0 {
            Some(self.u32("a block's checksum")?)
        } else {
            None
        };
        let mismatch = |what: &str, got: u32, want: u32, out_pos: u64| {
            bad(format!(
                "lzop: block at compressed offset {block_at:#x} (decompressed offset \
                 {out_pos:#x}): {what} checksum {want:#010x} in the file, {got:#010x} \
                 computed: the file is corrupt"
            ))
        };
        self.block.resize(ulen as usize, 0);
        if stored {
            let mut b = std::mem::take(&mut self.block);
            let r = self.fill(&mut b, "a block's data");
            self.block = b;
            r?;
        } else {
            let mut c = std::mem::take(&mut self.compressed);
            c.resize(clen as usize, 0);
            let r = self.fill(&mut c, "a block's data");
            self.compressed = c;
            r?;
            if let Some(want) = c_adler {
                let got = adler32(1, &self.compressed);
                if got != want {
                    return Err(mismatch("compressed Adler-32", got, want, self.out_pos));
                }
            }
            if let Some(want) = c_crc {
                let got = crc32(&self.compressed);
                if got != want {
                    return Err(mismatch("compressed CRC-32", got, want, self.out_pos));
                }
            }
            let n = lzo::decompress_into(&self.compressed, &mut self.block).map_err(|e| {
                bad(format!(
                    "lzop: block at compressed offset {block_at:#x} (decompressed offset \
                     {:#x}): LZO1X data is corrupt: {e}",
                    self.out_pos
                ))
            })?;
            if n != ulen as usize {
                return Err(bad(format!(
                    "lzop: block at compressed offset {block_at:#x} (decompressed offset \
                     {:#x}) decompresses to {n:#x} bytes, its header says {ulen:#x}",
                    self.out_pos
                )));
            }
        }
        if let Some(want) = d_adler {
            let got = adler32(1, &self.block);
            if got != want {
                return Err(mismatch("Adler-32", got, want, self.out_pos));
            }
        }
        if let Some(want) = d_crc {
            let got = crc32(&self.block);
            if got != want {
                return Err(mismatch("CRC-32", got, want, self.out_pos));
            }
        }
        self.at = 0;
        Ok(true)
    }
}

impl<R: Read> Read for LzopDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.at == self.block.len() {
            if self.done || !self.next_block()? {
                self.done = true;
                self.block.clear();
                self.at = 0;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        self.out_pos += n as u64;
        Ok(n)
    }
}

/// True if `head` starts with lzop's 9-byte magic (a NUL, CR, LF and SUB among its bytes:
/// unlikely at the start of a raw image or text).
pub fn probe(head: &[u8]) -> bool {
    head.starts_with(&MAGIC)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn adler32_matches_the_rfc_1950_example() {
        // RFC 1950's sample: "Wikipedia" is 0x11E60398 (a widely quoted check value).
        assert_eq!(adler32(1, b"Wikipedia"), 0x11e6_0398);
        let big = vec![0xffu8; 100_000];
        // Incremental and one-shot sums agree.
        let a = adler32(adler32(1, &big[..7000]), &big[7000..]);
        assert_eq!(a, adler32(1, &big));
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let mut out = Vec::new();
        let e = LzopDecoder::new(&b"not lzop at all"[..])
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("lzop"), "{e}");
        let mut cut = MAGIC.to_vec();
        cut.extend_from_slice(&[0x10, 0x30]);
        let e = LzopDecoder::new(&cut[..])
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    /// `data` through the real `lzop -c ARGS`, or None when lzop is not installed.
    /// Also serves the wrapper tests (`wrapped.rs`), there being no Rust lzop writer.
    pub(crate) fn lzop(args: &[&str], data: &[u8]) -> Option<Vec<u8>> {
        use std::io::Write;
        let mut c = std::process::Command::new("lzop")
            .args(args)
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = c.stdin.take().unwrap();
        let data = data.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
        let out = c.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(out.status.success());
        Some(out.stdout)
    }

    fn decode(z: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        LzopDecoder::new(z).read_to_end(&mut out).map(|_| out)
    }

    /// Files from the real `lzop` (the independent reference): both methods, CRC-32
    /// instead of Adler-32, stored (incompressible) blocks, concatenated files; a
    /// flipped byte in a block is caught by its checksum.
    #[test]
    fn files_of_the_lzop_tool_decode_to_their_input() {
        // compressible text, then pseudo-random bytes (stored blocks), 1.5 MiB in all
        let mut data: Vec<u8> = (0..(1u32 << 20))
            .map(|i| b"dumpconv lzop test "[(i % 19) as usize] ^ (i >> 16) as u8)
            .collect();
        data.extend((0..(1u32 << 19)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        let Some(fast) = lzop(&["-1"], &data) else {
            eprintln!("NOTE: lzop is not installed; skipping");
            return;
        };
        assert_eq!(decode(&fast).unwrap(), data);
        for args in [&["-9"][..], &["-1", "--crc32"][..]] {
            let z = lzop(args, &data).unwrap();
            assert_eq!(decode(&z).unwrap(), data, "lzop {args:?}");
        }
        let mut two = fast.clone();
        two.extend_from_slice(&lzop(&["-9"], b"second file").unwrap());
        let mut want = data.clone();
        want.extend_from_slice(b"second file");
        assert_eq!(decode(&two).unwrap(), want);
        // a byte of the first block's data (after the header and block header, which
        // are a few dozen bytes)
        let mut bad = fast.clone();
        bad[200] ^= 0x55;
        let e = decode(&bad).unwrap_err().to_string();
        assert!(e.contains("lzop: block at compressed offset"), "{e}");
        // the end marker gone: truncated, not a shorter file
        let e = decode(&fast[..fast.len() - 4]).unwrap_err().to_string();
        assert!(e.contains("cut short"), "{e}");
    }
}
