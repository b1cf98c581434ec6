//! A PFN bitmap that costs what the RAM costs, not what the address space costs.
//!
//! A kdump bitmap has one bit per page up to the highest address: 8 MiB per bitmap at
//! 256 GiB of address space, 512 MiB at 16 TiB, even when the RAM is a few ranges high
//! up. [`PageBitmap`] keeps only the chunks of the bitmap that hold a set bit, and a
//! chunk whose bits are all set as a marker, so it costs at most one bit per page of
//! RAM (far less for long runs), and the writer renders the file's bitmap bytes from it
//! a block at a time ([`PageBitmap::render`]).

use std::collections::BTreeMap;

/// Bits per chunk: 4 KiB of bitmap, 128 MiB of memory at 4 KiB pages.
const CHUNK_BITS: u64 = 1 << 15;
const CHUNK_BYTES: usize = (CHUNK_BITS / 8) as usize;

#[derive(Debug, Clone)]
enum Chunk {
    /// Every bit set.
    Full,
    /// Some bits set: `ones` of them (never 0 or `CHUNK_BITS`).
    Bits { bits: Box<[u8]>, ones: u32 },
}

/// A set of PFNs as an LSB-first bitmap (bit `n` of byte `n / 8` is PFN `n`, as in a
/// kdump file), holding only the chunks with a set bit.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageBitmap {
    /// Chunk index → chunk; an absent chunk is all clear.
    chunks: BTreeMap<u64, Chunk>,
}

fn ones(b: &[u8]) -> u32 {
    b.iter().map(|x| x.count_ones()).sum()
}

/// Set (`value`) or clear bits `[s, e)` of `bits` (bit offsets inside it); returns the
/// change in set bits.
fn fill_bits(bits: &mut [u8], s: usize, e: usize, value: bool) -> i64 {
    if s >= e {
        return 0;
    }
    let (fb, lb) = (s / 8, (e - 1) / 8);
    let Some(slice) = bits.get_mut(fb..=lb) else {
        return 0;
    };
    let before = i64::from(ones(slice));
    for (i, byte) in slice.iter_mut().enumerate() {
        let at = (fb + i) * 8;
        let lo = s.saturating_sub(at).min(8);
        let hi = (e - at).min(8);
        let mask = (((1u16 << hi) - 1) & !((1u16 << lo) - 1)) as u8;
        if value {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
    i64::from(ones(slice)) - before
}

impl PageBitmap {
    /// The bitmap with bits `[s, e)` set for each run.
    pub(crate) fn from_runs<'a>(runs: impl IntoIterator<Item = &'a (u64, u64)>) -> Self {
        let mut b = PageBitmap::default();
        for &(s, e) in runs {
            b.set_range(s, e);
        }
        b
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Set (`value`) or clear bits `[start, end)`.
    fn change(&mut self, start: u64, end: u64, value: bool) {
        let mut n = start;
        while n < end {
            let c = n / CHUNK_BITS;
            let base = c * CHUNK_BITS;
            let to = end.min(base + CHUNK_BITS);
            let whole = n == base && to == base + CHUNK_BITS;
            if whole {
                if value {
                    self.chunks.insert(c, Chunk::Full);
                } else {
                    self.chunks.remove(&c);
                }
            } else {
                let (s, e) = ((n - base) as usize, (to - base) as usize);
                let next = match self.chunks.remove(&c) {
                    None if !value => None,
                    Some(Chunk::Full) if value => Some(Chunk::Full),
                    cur => {
                        let (mut bits, o) = match cur {
                            None => (vec![0u8; CHUNK_BYTES].into_boxed_slice(), 0),
                            Some(Chunk::Full) => (
                                vec![0xffu8; CHUNK_BYTES].into_boxed_slice(),
                                CHUNK_BITS as u32,
                            ),
                            Some(Chunk::Bits { bits, ones }) => (bits, ones),
                        };
                        let o = (i64::from(o) + fill_bits(&mut bits, s, e, value)) as u32;
                        match o {
                            0 => None,
                            o if u64::from(o) == CHUNK_BITS => Some(Chunk::Full),
                            o => Some(Chunk::Bits { bits, ones: o }),
                        }
                    }
                };
                if let Some(ch) = next {
                    self.chunks.insert(c, ch);
                }
            }
            n = to;
        }
    }

    /// Set bits `[start, end)`.
    pub(crate) fn set_range(&mut self, start: u64, end: u64) {
        self.change(start, end, true);
    }

    /// Clear bits `[start, end)`.
    pub(crate) fn clear_range(&mut self, start: u64, end: u64) {
        self.change(start, end, false);
    }

    /// The runs of set bits inside `[start, end)`, in order, lazily; a run crossing
    /// chunks is one run.
    pub(crate) fn set_runs(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let chunks = if start < end {
            Some(
                self.chunks
                    .range(start / CHUNK_BITS..=(end - 1) / CHUNK_BITS),
            )
        } else {
            None
        };
        let mut pieces = chunks.into_iter().flatten().flat_map(move |(&c, chunk)| {
            let base = c * CHUNK_BITS;
            let (s, e) = (start.max(base), end.min(base + CHUNK_BITS));
            let runs: Box<dyn Iterator<Item = (u64, u64)> + '_> = match chunk {
                Chunk::Full => Box::new(std::iter::once((s, e))),
                Chunk::Bits { bits, .. } => Box::new(
                    crate::pipeline::set_runs(bits, s - base, e - base)
                        .map(move |(a, b)| (a + base, b + base)),
                ),
            };
            runs
        });
        let mut pending: Option<(u64, u64)> = None;
        std::iter::from_fn(move || loop {
            match pieces.next() {
                Some((s, e)) => match pending {
                    Some((ps, pe)) if pe == s => pending = Some((ps, e)),
                    Some(p) => {
                        pending = Some((s, e));
                        return Some(p);
                    }
                    None => pending = Some((s, e)),
                },
                None => return pending.take(),
            }
        })
    }

    /// For each chunk overlapping the bitmap bytes `[first_byte, first_byte + out.len())`:
    /// the chunk, and the overlapping bytes as (offset in `out`, offset in the chunk, len).
    fn overlaps(
        &self,
        first_byte: u64,
        len: usize,
    ) -> impl Iterator<Item = (&Chunk, usize, usize, usize)> + '_ {
        let cb = CHUNK_BYTES as u64;
        let end_byte = first_byte + len as u64;
        let range = if len > 0 {
            Some(self.chunks.range(first_byte / cb..=(end_byte - 1) / cb))
        } else {
            None
        };
        range.into_iter().flatten().map(move |(&c, chunk)| {
            let cs = c * cb;
            let (s, e) = (cs.max(first_byte), (cs + cb).min(end_byte));
            (
                chunk,
                (s - first_byte) as usize,
                (s - cs) as usize,
                (e - s) as usize,
            )
        })
    }

    /// Write the bitmap's bytes `[first_byte, first_byte + out.len())` into `out`.
    pub(crate) fn render(&self, first_byte: u64, out: &mut [u8]) {
        out.fill(0);
        for (chunk, o, c, n) in self.overlaps(first_byte, out.len()) {
            match chunk {
                Chunk::Full => out[o..o + n].fill(0xff),
                Chunk::Bits { bits, .. } => out[o..o + n].copy_from_slice(&bits[c..c + n]),
            }
        }
    }

    /// Clear in `out` (the bytes from `first_byte` on) the bits this bitmap has set.
    pub(crate) fn clear_from(&self, first_byte: u64, out: &mut [u8]) {
        for (chunk, o, c, n) in self.overlaps(first_byte, out.len()) {
            match chunk {
                Chunk::Full => out[o..o + n].fill(0),
                Chunk::Bits { bits, .. } => {
                    for (x, b) in out[o..o + n].iter_mut().zip(&bits[c..c + n]) {
                        *x &= !b;
                    }
                }
            }
        }
    }

    /// True if some bit of the bytes `[first_byte, first_byte + len)` may be set.
    pub(crate) fn touches(&self, first_byte: u64, len: u64) -> bool {
        let (s, e) = (first_byte * 8, (first_byte + len) * 8);
        s < e
            && self
                .chunks
                .range(s / CHUNK_BITS..=(e - 1) / CHUNK_BITS)
                .next()
                .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dumpconv_formats::kdump::layout::{bit, set_bit, set_bits};

    /// A tiny deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn dense(b: &PageBitmap, bytes: usize) -> Vec<u8> {
        let mut out = vec![0u8; bytes];
        b.render(0, &mut out);
        out
    }

    /// Random set/clear ranges, checked against a plain bitmap (set_bit/set_bits of
    /// the format crate, one bit at a time for clears): rendering at any offset, runs,
    /// and the chunk bookkeeping (all-clear chunks dropped).
    #[test]
    fn matches_a_plain_bitmap() {
        let nbits = 5 * CHUNK_BITS + 77;
        let bytes = nbits.div_ceil(8) as usize;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            let mut plain = vec![0u8; bytes];
            let mut b = PageBitmap::default();
            for _ in 0..60 {
                let s = rng.next() % nbits;
                // Short runs mostly, whole chunks sometimes.
                let len = match rng.next() % 4 {
                    0 => rng.next() % (3 * CHUNK_BITS),
                    _ => rng.next() % 100,
                };
                let e = (s + len).min(nbits);
                if rng.next().is_multiple_of(3) {
                    b.clear_range(s, e);
                    for n in s..e {
                        set_bit(&mut plain, n, false);
                    }
                } else {
                    b.set_range(s, e);
                    set_bits(&mut plain, s, e);
                }
            }
            assert_eq!(dense(&b, bytes), plain, "round {round}");
            // Any window of bytes.
            for _ in 0..20 {
                let s = (rng.next() % bytes as u64) as usize;
                let e = s + (rng.next() % (bytes - s) as u64) as usize;
                let mut w = vec![0xa5u8; e - s];
                b.render(s as u64, &mut w);
                assert_eq!(w, plain[s..e]);
                let mut all = vec![0xffu8; e - s];
                b.clear_from(s as u64, &mut all);
                let want: Vec<u8> = plain[s..e].iter().map(|x| !x).collect();
                assert_eq!(all, want);
                assert!(
                    e == s
                        || b.touches(s as u64, (e - s) as u64)
                            == b.chunks
                                .keys()
                                .any(|&c| c * CHUNK_BYTES as u64 + CHUNK_BYTES as u64 > s as u64
                                    && (c * CHUNK_BYTES as u64) < e as u64)
                );
            }
            // Runs of set bits against the plain bitmap, bit by bit.
            let (s, e) = (rng.next() % nbits, nbits - rng.next() % 50);
            let mut want = Vec::new();
            let mut n = s;
            while n < e {
                if bit(&plain, n) {
                    let a = n;
                    while n < e && bit(&plain, n) {
                        n += 1;
                    }
                    want.push((a, n));
                } else {
                    n += 1;
                }
            }
            assert_eq!(b.set_runs(s, e).collect::<Vec<_>>(), want, "round {round}");
            // No chunk kept that is all clear; a full chunk is kept as such.
            for (c, ch) in &b.chunks {
                if let Chunk::Bits { bits, ones: o } = ch {
                    assert_eq!(*o, ones(bits), "chunk {c}");
                    assert!(*o > 0 && u64::from(*o) < CHUNK_BITS, "chunk {c}");
                }
            }
        }
    }

    #[test]
    fn a_high_range_costs_its_chunks_only() {
        // 64 pages at 2^44 / 4 KiB: one chunk, not 2^32 / 8 bytes.
        let pfn = 1u64 << 32;
        let mut b = PageBitmap::from_runs(&[(pfn, pfn + 64)]);
        assert_eq!(b.chunks.len(), 1);
        assert_eq!(
            b.set_runs(0, u64::MAX).collect::<Vec<_>>(),
            vec![(pfn, pfn + 64)]
        );
        let mut w = vec![0u8; 16];
        b.render(pfn / 8 - 4, &mut w);
        assert_eq!(
            w,
            [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]
        );
        // A whole-chunk run is one marker; clearing all of it drops it.
        b.set_range(0, 4 * CHUNK_BITS);
        assert!(matches!(b.chunks.get(&0), Some(Chunk::Full)));
        b.clear_range(0, 4 * CHUNK_BITS);
        b.clear_range(pfn, pfn + 64);
        assert!(b.is_empty());
    }
}
