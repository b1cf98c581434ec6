//! An lz4 frame decoder that tells a finished stream from a truncated one.
//!
//! lz4_flex's `FrameDecoder` treats the end of its input where a block header should be
//! as the end of the frame, so a stream cut just after a data block (a writer killed
//! midway, a partial download, our own `--compress lz4` output to a pipe after a failed
//! write) decodes "successfully" to a shorter dump. The `lz4` tool reports such input as
//! "Unfinished stream". Here the compressed bytes the decoder consumes are followed
//! through the frame layout (magic, descriptor, blocks, end mark, content checksum;
//! skippable frames), and the decoder's end of stream is accepted only at a frame
//! boundary.

use std::io::{self, Read};

/// lz4 frame magic.
const FRAME_MAGIC: u32 = 0x184D_2204;
/// Skippable frames: magic 0x184D2A50 to 0x184D2A5F, a u32 length, that many bytes.
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// FLG bits.
const FLG_DICT_ID: u8 = 0x01;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;

/// The next fixed-size field the frame layout expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Magic,
    SkippableLen,
    /// FLG and BD.
    Descriptor,
    BlockSize,
}

/// Follows the frame layout over the bytes read through it.
#[derive(Debug)]
struct Tracked<R> {
    inner: R,
    field: Field,
    buf: [u8; 4],
    have: usize,
    /// Bytes to pass over (block data, checksums, optional descriptor fields) before the
    /// next field.
    skip: u64,
    flg: u8,
    /// Compressed bytes read so far.
    consumed: u64,
    /// Not an lz4 frame as far as we can tell: the decoder reports that itself.
    lost: bool,
}

impl<R> Tracked<R> {
    fn need(&self) -> usize {
        match self.field {
            Field::Descriptor => 2,
            _ => 4,
        }
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(data.len(), |s| s.min(data.len()));
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (self.need() - self.have).min(data.len());
            self.buf[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == self.need() {
                self.have = 0;
                self.field_done();
            }
        }
    }

    fn field_done(&mut self) {
        let v = u32::from_le_bytes(self.buf);
        match self.field {
            Field::Magic if v == FRAME_MAGIC => self.field = Field::Descriptor,
            Field::Magic if v & SKIPPABLE_MASK == SKIPPABLE_MAGIC => {
                self.field = Field::SkippableLen;
            }
            Field::Magic => self.lost = true,
            Field::SkippableLen => {
                self.skip = u64::from(v);
                self.field = Field::Magic;
            }
            Field::Descriptor => {
                self.flg = self.buf[0];
                let content_size = if self.flg & FLG_CONTENT_SIZE != 0 {
                    8
                } else {
                    0
                };
                let dict_id = if self.flg & FLG_DICT_ID != 0 { 4 } else { 0 };
                // The header checksum byte always follows.
                self.skip = content_size + dict_id + 1;
                self.field = Field::BlockSize;
            }
            Field::BlockSize if v == 0 => {
                // End mark, then the content checksum if the frame has one.
                self.skip = if self.flg & FLG_CONTENT_CHECKSUM != 0 {
                    4
                } else {
                    0
                };
                self.field = Field::Magic;
            }
            Field::BlockSize => {
                let checksum = if self.flg & FLG_BLOCK_CHECKSUM != 0 {
                    4
                } else {
                    0
                };
                self.skip = u64::from(v & 0x7FFF_FFFF) + checksum;
            }
        }
    }

    /// True between frames (or when the input is not something we can follow).
    fn at_frame_end(&self) -> bool {
        self.lost || (self.field == Field::Magic && self.have == 0 && self.skip == 0)
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        self.observe(buf.get(..n).unwrap_or(buf));
        Ok(n)
    }
}

/// An lz4 frame decoder whose end of stream is an error unless the frame ended.
pub struct Lz4Decoder<R: Read> {
    /// None only while being replaced by a fresh decoder for the next frame.
    dec: Option<lz4_flex::frame::FrameDecoder<Tracked<R>>>,
}

impl<R: Read> Lz4Decoder<R> {
    pub fn new(r: R) -> Self {
        Lz4Decoder {
            dec: Some(lz4_flex::frame::FrameDecoder::new(Tracked {
                inner: r,
                field: Field::Magic,
                buf: [0; 4],
                have: 0,
                skip: 0,
                flg: 0,
                consumed: 0,
                lost: false,
            })),
        }
    }
}

impl<R: Read> Read for Lz4Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let before = dec.get_ref().consumed;
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let t = dec.get_ref();
            if !t.at_frame_end() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the input ends inside an lz4 frame, before its end mark (truncated: \
                     the `lz4` tool calls this an unfinished stream)",
                ));
            }
            // lz4_flex also returns 0 at the end of each frame: go on with the next one
            // (`cat a.lz4 b.lz4`, as `lz4 -d` reads it) unless nothing more was read.
            if t.consumed == before {
                return Ok(0);
            }
            // A fresh decoder per frame: lz4_flex's keeps the first frame's block size
            // (and asserts in debug builds when the next differs). It reads exactly
            // what it decodes, so nothing is lost in handing its input over.
            if let Some(old) = self.dec.take() {
                self.dec = Some(lz4_flex::frame::FrameDecoder::new(old.into_inner()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lz4_flex::frame::{BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;

    fn frame(data: &[u8], info: FrameInfo) -> Vec<u8> {
        let mut e = FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(z: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Lz4Decoder::new(z).read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn every_frame_option_and_concatenation_decode_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 / 13) as u8).collect();
        let infos = [
            FrameInfo::new(),
            FrameInfo::new()
                .block_size(BlockSize::Max64KB)
                .block_checksums(true)
                .content_checksum(true)
                .content_size(Some(data.len() as u64)),
            FrameInfo::new()
                .block_size(BlockSize::Max256KB)
                .content_checksum(true),
        ];
        let mut all = Vec::new();
        for info in infos {
            let z = frame(&data, info);
            assert!(decode(&z).unwrap() == data);
            all.extend_from_slice(&z);
        }
        // Three frames, one after the other, as `cat a.lz4 b.lz4` makes.
        assert_eq!(decode(&all).unwrap().len(), 3 * data.len());
    }

    #[test]
    fn every_cut_inside_a_frame_is_an_error() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_checksums(true)
            .content_checksum(true);
        let z = frame(&data, info);
        for cut in (0..z.len())
            .step_by(997)
            .chain([z.len() - 8, z.len() - 4, z.len() - 1])
        {
            if cut == 0 {
                continue;
            }
            assert!(decode(&z[..cut]).is_err(), "cut at {cut} of {}", z.len());
        }
    }
}
