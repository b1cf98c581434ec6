//! `--verify`: read a finished output back through our own readers and compare a
//! digest of its RAM with the same digest of the input.
//!
//! The digest is BLAKE3 over, for each RAM range written (the input's ranges clipped
//! to `begin`/`length`, in address order), the range's start and length (little-endian
//! u64) and then its bytes. Both sides are digested over the *input's* ranges, so a raw
//! output (which covers holes with zeros) verifies too; an output that lacks some of
//! that RAM fails to read and so fails verification. A page a dump marks unavailable
//! (excluded, or lost in an incomplete dump) is digested as a marker with its address;
//! with `exclude-zero` the output leaves zero pages out, so there both sides digest an
//! unavailable page as zeros. With page filtering (`--dump-level`), both sides are
//! digested over the pages the conversion kept (what it reports), not all RAM.

use std::path::Path;

use dumpconv_core::{Error, NoProgress, PhysRange, PhysicalMemory, Progress, Result, PAGE_SIZE};
use dumpconv_formats::OpenOptions;

use crate::pipeline::{open_input, selected_ranges, ConvertOptions};

const CHUNK: usize = 4 << 20;

/// The stage name given to [`Progress::start`] while verifying.
pub const STAGE: &str = "verifying";

/// The result of reading an output back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub input_digest: String,
    pub output_digest: String,
    /// RAM bytes compared.
    pub bytes: u64,
}

impl Verification {
    pub fn matches(&self) -> bool {
        self.input_digest == self.output_digest
    }
}

/// Digest `ranges` of `mem` (see the module comment).
pub fn memory_digest(
    mem: &dyn PhysicalMemory,
    ranges: &[PhysRange],
    unavailable_as_zero: bool,
) -> Result<String> {
    memory_digest_with(mem, ranges, unavailable_as_zero, &NoProgress)
}

/// [`memory_digest`], advancing `progress` by the bytes hashed.
pub fn memory_digest_with(
    mem: &dyn PhysicalMemory,
    ranges: &[PhysRange],
    unavailable_as_zero: bool,
    progress: &dyn Progress,
) -> Result<String> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    for r in ranges {
        h.update(&r.start.to_le_bytes());
        h.update(&r.len().to_le_bytes());
        let mut at = r.start;
        while at < r.end {
            let n = (r.end - at).min(CHUNK as u64) as usize;
            match mem.read_at(at, &mut buf[..n]) {
                Ok(()) => {
                    h.update(&buf[..n]);
                }
                Err(Error::PageUnavailable { .. }) => {
                    digest_pages(mem, at, &mut buf[..n], unavailable_as_zero, &mut h)?
                }
                Err(e) => return Err(e),
            }
            progress.advance(n as u64);
            at += n as u64;
        }
    }
    Ok(crate::digest::hex(&h.finalize()))
}

/// Page by page, for a chunk that holds unavailable pages.
fn digest_pages(
    mem: &dyn PhysicalMemory,
    start: u64,
    buf: &mut [u8],
    unavailable_as_zero: bool,
    h: &mut blake3::Hasher,
) -> Result<()> {
    let end = start + buf.len() as u64;
    let mut at = start;
    while at < end {
        // Up to the next page boundary.
        let n = ((at / PAGE_SIZE + 1) * PAGE_SIZE).min(end) - at;
        let page = &mut buf[..n as usize];
        match mem.read_at(at, page) {
            Ok(()) => {
                h.update(page);
            }
            Err(Error::PageUnavailable { .. }) if unavailable_as_zero => {
                page.fill(0);
                h.update(page);
            }
            Err(Error::PageUnavailable { .. }) => {
                h.update(b"\0unavailable\0");
                h.update(&at.to_le_bytes());
                h.update(&n.to_le_bytes());
            }
            Err(e) => return Err(e),
        }
        at += n;
    }
    Ok(())
}

/// Digest the input's written RAM and the same RAM read from `output` (written as
/// `format`), and return both. `progress` runs over both reads (twice the RAM).
pub fn verify(
    input: &Path,
    opts: &ConvertOptions,
    output: &Path,
    format: &str,
    kept: Option<&[PhysRange]>,
    progress: &dyn Progress,
) -> Result<Verification> {
    let dump = open_input(input, opts)?;
    let ranges = match kept {
        Some(k) => k.to_vec(),
        None => selected_ranges(&dump, opts)?,
    };
    let bytes: u64 = ranges.iter().map(PhysRange::len).sum();
    progress.start(STAGE, bytes.saturating_mul(2));
    let as_zero = opts.writer_options.contains_key("exclude-zero");
    let input_digest = memory_digest_with(dump.memory.as_ref(), &ranges, as_zero, progress)?;
    drop(dump);
    let out_opts = OpenOptions {
        // A raw image is detected by elimination; say it, so its first bytes cannot
        // look like another format.
        input_format: (format == "raw").then(|| "raw".to_string()),
        ram_map: None,
        spill_dir: opts.open.spill_dir.clone(),
        max_spill: opts.open.max_spill,
        snapshot: None,
    };
    let out = dumpconv_formats::open(output, &out_opts)?;
    let output_digest = memory_digest_with(out.memory.as_ref(), &ranges, as_zero, progress)?;
    Ok(Verification {
        input_digest,
        output_digest,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RAM held in a vector, with optional unavailable pages.
    struct VecMemory {
        ranges: Vec<PhysRange>,
        bytes: Vec<u8>,
        unavailable: Vec<u64>,
    }

    impl PhysicalMemory for VecMemory {
        fn ranges(&self) -> &[PhysRange] {
            &self.ranges
        }
        fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
            if !self.is_ram(paddr, buf.len() as u64) {
                return Err(Error::Hole { paddr });
            }
            for p in &self.unavailable {
                if *p < paddr + buf.len() as u64 && paddr < p + PAGE_SIZE {
                    return Err(Error::PageUnavailable {
                        paddr: *p,
                        why: "excluded",
                    });
                }
            }
            let at = paddr as usize;
            buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
            Ok(())
        }
    }

    fn mem(len: usize, seed: u8) -> VecMemory {
        VecMemory {
            ranges: vec![PhysRange::new(0, len as u64)],
            bytes: (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect(),
            unavailable: vec![],
        }
    }

    #[test]
    fn equal_memories_give_equal_digests() {
        let r = [PhysRange::new(0x1000, 0x9000)];
        let a = memory_digest(&mem(0x10000, 0), &r, false).unwrap();
        let b = memory_digest(&mem(0x10000, 0), &r, false).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn one_byte_changes_the_digest() {
        let r = [PhysRange::new(0, 0x10000)];
        let a = mem(0x10000, 0);
        let mut b = mem(0x10000, 0);
        b.bytes[0x8123] ^= 1;
        assert_ne!(
            memory_digest(&a, &r, false).unwrap(),
            memory_digest(&b, &r, false).unwrap()
        );
    }

    #[test]
    fn range_boundaries_count() {
        // Same bytes, cut differently: different digests.
        let m = mem(0x10000, 0);
        let one = [PhysRange::new(0, 0x2000)];
        let two = [PhysRange::new(0, 0x1000), PhysRange::new(0x1000, 0x2000)];
        assert_ne!(
            memory_digest(&m, &one, false).unwrap(),
            memory_digest(&m, &two, false).unwrap()
        );
    }

    #[test]
    fn unavailable_pages() {
        let r = [PhysRange::new(0, 0x4000)];
        let mut zeros = mem(0x4000, 0);
        zeros.bytes[0x2000..0x3000].fill(0);
        let mut excluded = mem(0x4000, 0);
        excluded.unavailable = vec![0x2000];
        // As a marker: differs from the zero page.
        assert_ne!(
            memory_digest(&zeros, &r, false).unwrap(),
            memory_digest(&excluded, &r, false).unwrap()
        );
        // With exclude-zero, an excluded page stands for zeros.
        assert_eq!(
            memory_digest(&zeros, &r, true).unwrap(),
            memory_digest(&excluded, &r, true).unwrap()
        );
    }

    #[test]
    fn missing_ram_is_an_error() {
        let m = mem(0x4000, 0);
        assert!(memory_digest(&m, &[PhysRange::new(0x3000, 0x5000)], false).is_err());
    }
}
