//! Helpers shared by the fuzz targets: the readers take paths, so every input is
//! written to one scratch file per process; an opened dump is then exercised (memory
//! read at its range edges and at offsets taken from the input).

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use dumpconv_core::Dump;

/// A scratch directory living as long as the fuzzing process.
fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("DUMPCONV_FUZZ_TMP").unwrap_or_else(|| "/tmp".into());
        tempfile::Builder::new()
            .prefix("dumpconv-fuzz-")
            .tempdir_in(base)
            .unwrap_or_else(|e| panic!("fuzz harness: no scratch dir: {e}"))
    })
}

/// An empty directory `name` in the scratch directory (emptied on every call).
pub fn scratch_dir(name: &str) -> PathBuf {
    let path = scratch().path().join(name);
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path)
        .unwrap_or_else(|e| panic!("fuzz harness: cannot create {}: {e}", path.display()));
    path
}

/// Write `data` to the scratch file `name` and return its path.
pub fn write_input(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().path().join(name);
    let mut f = std::fs::File::create(&path)
        .unwrap_or_else(|e| panic!("fuzz harness: cannot create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("fuzz harness: cannot write {}: {e}", path.display()));
    path
}

/// A small deterministic generator seeded from the input, for "random" offsets.
pub struct Rng(u64);

impl Rng {
    pub fn from_bytes(data: &[u8]) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data.iter().take(4096) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Read memory of an opened dump: both ends of every range (at most 64 ranges), and a
/// few offsets inside the RAM it claims. Errors are fine; panics, aborts and hangs are
/// findings.
pub fn exercise(dump: &Dump, data: &[u8]) {
    let mem = dump.memory.as_ref();
    let ranges = mem.ranges();
    let mut buf = vec![0u8; 4096];
    for r in ranges.iter().take(64) {
        let _ = mem.read_at(r.start, &mut buf[..1]);
        let _ = mem.read_at(r.end.saturating_sub(1), &mut buf[..1]);
        let len = r.len().min(4096) as usize;
        let _ = mem.read_at(r.start, &mut buf[..len]);
        let _ = mem.backing(r.start);
    }
    let _ = mem.total_bytes();
    let mut rng = Rng::from_bytes(data);
    if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
        let span = last.end.saturating_sub(first.start).max(1);
        for _ in 0..16 {
            let addr = first.start.saturating_add(rng.next() % span);
            let len = (rng.next() % 4096) as usize + 1;
            let _ = mem.is_ram(addr, len as u64);
            let _ = mem.read_at(addr, &mut buf[..len]);
        }
    }
    for _ in 0..4 {
        let _ = mem.read_at(rng.next(), &mut buf[..8]);
    }
    let _ = format!("{dump:?}");
    if let Some(v) = &dump.vmcoreinfo {
        let _ = v.osrelease();
        let _ = v.page_size();
        let _ = v.phys_base();
        let _ = v.kernel_offset();
    }
}

/// Fuzzed RAM: `bytes` at physical `base`, as one range or two (a hole of `gap` bytes
/// after the first `split` bytes).
pub struct FuzzRam {
    pieces: Vec<(u64, usize, usize)>,
    bytes: Vec<u8>,
    ranges: Vec<dumpconv_core::PhysRange>,
}

impl FuzzRam {
    /// `bytes` padded to whole 4 KiB pages; `split` and `gap` rounded to pages.
    pub fn new(base: u64, mut bytes: Vec<u8>, split: usize, gap: u64) -> FuzzRam {
        let len = bytes.len().div_ceil(4096).max(1) * 4096;
        bytes.resize(len, 0);
        let split = (split / 4096 * 4096).min(len);
        let gap = gap / 4096 * 4096;
        let mut pieces = vec![(base, 0, split)];
        if gap == 0 || split == 0 || split == len {
            pieces = vec![(base, 0, len)];
        } else {
            pieces.push((base + split as u64 + gap, split, len));
        }
        let ranges = pieces
            .iter()
            .map(|&(at, s, e)| dumpconv_core::PhysRange::with_len(at, (e - s) as u64))
            .collect();
        FuzzRam {
            pieces,
            bytes,
            ranges,
        }
    }
}

impl dumpconv_core::PhysicalMemory for FuzzRam {
    fn ranges(&self) -> &[dumpconv_core::PhysRange] {
        &self.ranges
    }

    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> dumpconv_core::Result<()> {
        dumpconv_core::memory::read_in_pieces(paddr, buf, |addr, out| {
            let piece = self
                .pieces
                .iter()
                .find(|&&(at, s, e)| addr >= at && addr - at < (e - s) as u64);
            let Some(&(at, s, e)) = piece else {
                return Err(dumpconv_core::Error::Hole { paddr: addr });
            };
            let off = s + (addr - at) as usize;
            let n = out.len().min(e - off);
            out[..n].copy_from_slice(&self.bytes[off..off + n]);
            Ok(n)
        })
    }
}

impl FuzzRam {
    /// The ranges as 4 KiB PFN runs.
    pub fn ranges_pfns(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .map(|r| (r.start / 4096, r.end.div_ceil(4096)))
            .collect()
    }
}
