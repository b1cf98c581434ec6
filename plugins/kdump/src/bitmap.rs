//! A PFN bitmap that costs what the RAM costs, not what the address space costs.
//!
//! A kdump bitmap has one bit per page up to the highest address: 8 MiB per bitmap at
//! 256 GiB of address space, 512 MiB at 16 TiB, even when the RAM is a few ranges high
//! up. [`PageBitmap`] keeps runs of chunks whose bits are all set (one entry per run,
//! however long) and the chunks with some bits set, nothing for clear chunks: it costs
//! at most one bit per page of RAM, far less for long runs, and nothing for the address
//! space between. The writer renders the file's bitmap bytes from it a block at a time
//! ([`PageBitmap::render`]).

use std::collections::BTreeMap;

/// Bits per chunk: 4 KiB of bitmap, 128 MiB of memory at 4 KiB pages.
const CHUNK_BITS: u64 = 1 << 15;
const CHUNK_BYTES: usize = (CHUNK_BITS / 8) as usize;

#[derive(Debug, Clone)]
enum Node {
    /// Chunks `[key, end)`, every bit set: a run of RAM costs one node however long.
    Full { end: u64 },
    /// Chunk `key` alone, `ones` bits set (never 0 or `CHUNK_BITS`).
    Bits { bits: Box<[u8]>, ones: u32 },
}

impl Node {
    /// The chunk after the node's last.
    fn end(&self, key: u64) -> u64 {
        match self {
            Node::Full { end } => *end,
            Node::Bits { .. } => key + 1,
        }
    }
}

/// What one chunk holds, taken out of the map.
enum ChunkState {
    Clear,
    Full,
    Bits(Box<[u8]>, u32),
}

/// A set of PFNs as an LSB-first bitmap (bit `n` of byte `n / 8` is PFN `n`, as in a
/// kdump file): runs of whole chunks with every bit set, and the chunks with some bits
/// set; all other chunks are clear. Nodes are disjoint, and no two runs of full chunks
/// touch (they are merged).
#[derive(Debug, Clone, Default)]
pub(crate) struct PageBitmap {
    /// First chunk → node.
    nodes: BTreeMap<u64, Node>,
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

/// A piece of rendered bitmap: bytes `[o, o + n)` of the window are all ones, or a copy.
enum Piece<'a> {
    Ones(usize, usize),
    Copy(usize, &'a [u8]),
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
        self.nodes.is_empty()
    }

    /// The nodes over chunks `[c0, c1)`, in order.
    fn nodes_over(&self, c0: u64, c1: u64) -> impl Iterator<Item = (u64, &Node)> + '_ {
        let first = self
            .nodes
            .range(..=c0)
            .next_back()
            .filter(|(&k, n)| n.end(k) > c0)
            .map_or(c0, |(&k, _)| k);
        let r = (c0 < c1).then(|| self.nodes.range(first..c1));
        r.into_iter().flatten().map(|(&k, n)| (k, n))
    }

    /// Cut a run of full chunks that crosses the start of chunk `c` in two there.
    fn split_at(&mut self, c: u64) {
        let cut = match self.nodes.range(..c).next_back() {
            Some((&k, &Node::Full { end })) if end > c => Some((k, end)),
            _ => None,
        };
        if let Some((k, end)) = cut {
            self.nodes.insert(k, Node::Full { end: c });
            self.nodes.insert(c, Node::Full { end });
        }
    }

    /// Clear chunks `[c0, c1)` whole.
    fn remove_chunks(&mut self, c0: u64, c1: u64) {
        self.split_at(c0);
        self.split_at(c1);
        let keys: Vec<u64> = self.nodes.range(c0..c1).map(|(&k, _)| k).collect();
        for k in keys {
            self.nodes.remove(&k);
        }
    }

    /// Mark chunks `[c0, c1)` (clear now) full, merged with the full runs either side.
    fn insert_full(&mut self, mut c0: u64, mut c1: u64) {
        if let Some((&k, &Node::Full { end })) = self.nodes.range(..c0).next_back() {
            if end == c0 {
                c0 = k;
            }
        }
        if let Some(&Node::Full { end }) = self.nodes.get(&c1) {
            self.nodes.remove(&c1);
            c1 = end;
        }
        self.nodes.insert(c0, Node::Full { end: c1 });
    }

    /// Take chunk `c` out of the map, saying what it held.
    fn take_chunk(&mut self, c: u64) -> ChunkState {
        let holder = self
            .nodes
            .range(..=c)
            .next_back()
            .filter(|(&k, n)| n.end(k) > c)
            .map(|(&k, n)| (k, matches!(n, Node::Full { .. })));
        match holder {
            None => ChunkState::Clear,
            Some((_, true)) => {
                self.remove_chunks(c, c + 1);
                ChunkState::Full
            }
            Some((k, false)) => match self.nodes.remove(&k) {
                Some(Node::Bits { bits, ones }) => ChunkState::Bits(bits, ones),
                _ => ChunkState::Clear,
            },
        }
    }

    /// Set (`value`) or clear bits `[start, end)`.
    fn change(&mut self, start: u64, end: u64, value: bool) {
        let mut n = start;
        while n < end {
            let c = n / CHUNK_BITS;
            let base = c * CHUNK_BITS;
            if n == base && end - n >= CHUNK_BITS {
                let c1 = c + (end - n) / CHUNK_BITS;
                self.remove_chunks(c, c1);
                if value {
                    self.insert_full(c, c1);
                }
                n = c1 * CHUNK_BITS;
                continue;
            }
            let to = end.min(base + CHUNK_BITS);
            let (s, e) = ((n - base) as usize, (to - base) as usize);
            n = to;
            // A partly set chunk changed in place (the first pass of exclude-zero clears
            // page runs one by one).
            if let Some(Node::Bits { bits, ones }) = self.nodes.get_mut(&c) {
                let o = (i64::from(*ones) + fill_bits(bits, s, e, value)) as u32;
                if o != 0 && u64::from(o) != CHUNK_BITS {
                    *ones = o;
                    continue;
                }
                self.nodes.remove(&c);
                if o != 0 {
                    self.insert_full(c, c + 1);
                }
                continue;
            }
            let (mut bits, o) = match (self.take_chunk(c), value) {
                (ChunkState::Clear, false) => continue,
                (ChunkState::Full, true) => {
                    self.insert_full(c, c + 1);
                    continue;
                }
                (ChunkState::Clear, true) => (vec![0u8; CHUNK_BYTES].into_boxed_slice(), 0),
                (ChunkState::Full, false) => (
                    vec![0xffu8; CHUNK_BYTES].into_boxed_slice(),
                    CHUNK_BITS as u32,
                ),
                (ChunkState::Bits(bits, o), _) => (bits, o),
            };
            let o = (i64::from(o) + fill_bits(&mut bits, s, e, value)) as u32;
            match o {
                0 => {}
                o if u64::from(o) == CHUNK_BITS => self.insert_full(c, c + 1),
                o => {
                    self.nodes.insert(c, Node::Bits { bits, ones: o });
                }
            }
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
    /// nodes is one run.
    pub(crate) fn set_runs(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let (c0, c1) = if start < end {
            (start / CHUNK_BITS, (end - 1) / CHUNK_BITS + 1)
        } else {
            (0, 0)
        };
        let mut pieces = self.nodes_over(c0, c1).flat_map(move |(k, node)| {
            let base = k * CHUNK_BITS;
            let (s, e) = (start.max(base), end.min(node.end(k) * CHUNK_BITS));
            let runs: Box<dyn Iterator<Item = (u64, u64)> + '_> = match node {
                Node::Full { .. } => Box::new(std::iter::once((s, e))),
                Node::Bits { bits, .. } => Box::new(
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

    /// The set parts of the bitmap bytes `[first_byte, first_byte + len)`, as pieces
    /// placed relative to `first_byte`.
    fn pieces(&self, first_byte: u64, len: usize) -> impl Iterator<Item = Piece<'_>> + '_ {
        let cb = CHUNK_BYTES as u64;
        let end_byte = first_byte + len as u64;
        let (c0, c1) = if len > 0 {
            (first_byte / cb, (end_byte - 1) / cb + 1)
        } else {
            (0, 0)
        };
        self.nodes_over(c0, c1).map(move |(k, node)| {
            let ns = k * cb;
            let (s, e) = (ns.max(first_byte), (node.end(k) * cb).min(end_byte));
            let o = (s - first_byte) as usize;
            match node {
                Node::Full { .. } => Piece::Ones(o, (e - s) as usize),
                Node::Bits { bits, .. } => {
                    let c = (s - ns) as usize;
                    Piece::Copy(o, &bits[c..c + (e - s) as usize])
                }
            }
        })
    }

    /// Write the bitmap's bytes `[first_byte, first_byte + out.len())` into `out`.
    pub(crate) fn render(&self, first_byte: u64, out: &mut [u8]) {
        out.fill(0);
        for p in self.pieces(first_byte, out.len()) {
            match p {
                Piece::Ones(o, n) => out[o..o + n].fill(0xff),
                Piece::Copy(o, b) => out[o..o + b.len()].copy_from_slice(b),
            }
        }
    }

    /// Clear in `out` (the bytes from `first_byte` on) the bits this bitmap has set.
    pub(crate) fn clear_from(&self, first_byte: u64, out: &mut [u8]) {
        for p in self.pieces(first_byte, out.len()) {
            match p {
                Piece::Ones(o, n) => out[o..o + n].fill(0),
                Piece::Copy(o, b) => {
                    for (x, y) in out[o..o + b.len()].iter_mut().zip(b) {
                        *x &= !y;
                    }
                }
            }
        }
    }

    /// True if a bit of the bytes `[first_byte, first_byte + len)` may be set (a node
    /// covers part of them).
    pub(crate) fn touches(&self, first_byte: u64, len: u64) -> bool {
        let cb = CHUNK_BYTES as u64;
        len > 0
            && self
                .nodes_over(first_byte / cb, (first_byte + len - 1) / cb + 1)
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
        for round in 0..200 {
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
                let cb = CHUNK_BYTES as u64;
                assert!(
                    e == s
                        || b.touches(s as u64, (e - s) as u64)
                            == b.nodes
                                .iter()
                                .any(|(&k, n)| n.end(k) * cb > s as u64 && k * cb < e as u64)
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
            check_nodes(&b, &format!("round {round}"));
        }
    }

    /// Nodes disjoint and in order, full runs merged, partial chunks' counts right and
    /// neither 0 nor full.
    fn check_nodes(b: &PageBitmap, what: &str) {
        let mut prev: Option<(u64, bool)> = None; // (end, full)
        for (&k, n) in &b.nodes {
            assert!(n.end(k) > k, "{what}: node {k}");
            if let Some((end, full)) = prev {
                assert!(end <= k, "{what}: node {k} overlaps");
                let touching_runs = full && end == k && matches!(n, Node::Full { .. });
                assert!(!touching_runs, "{what}: full runs not merged at {k}");
            }
            if let Node::Bits { bits, ones: o } = n {
                assert_eq!(*o, ones(bits), "{what}: chunk {k}");
                assert!(*o > 0 && u64::from(*o) < CHUNK_BITS, "{what}: chunk {k}");
            }
            prev = Some((n.end(k), matches!(n, Node::Full { .. })));
        }
    }

    #[test]
    fn memory_follows_the_runs_not_the_address_space() {
        // 64 pages at 2^44 / 4 KiB: one chunk, not 2^32 / 8 bytes.
        let pfn = 1u64 << 32;
        let mut b = PageBitmap::from_runs(&[(pfn, pfn + 64)]);
        assert_eq!(b.nodes.len(), 1);
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
        // 64 TiB of RAM from page 1 on: one partial chunk and one run of full chunks;
        // clearing pages inside it splits the run around one partial chunk.
        let all = 1u64 << 34;
        b.set_range(1, all);
        assert_eq!(b.nodes.len(), 2);
        b.clear_range(5 * CHUNK_BITS + 3, 5 * CHUNK_BITS + 4);
        assert_eq!(b.nodes.len(), 4);
        check_nodes(&b, "split");
        assert_eq!(
            b.set_runs(0, u64::MAX).collect::<Vec<_>>(),
            vec![(1, 5 * CHUNK_BITS + 3), (5 * CHUNK_BITS + 4, all)]
        );
        // Setting the page again merges the run back.
        b.set_range(5 * CHUNK_BITS + 3, 5 * CHUNK_BITS + 4);
        assert_eq!(b.nodes.len(), 2);
        check_nodes(&b, "merged");
        let mut w = vec![0u8; 4];
        b.render(all / 8 - 2, &mut w);
        assert_eq!(w, [0xff, 0xff, 0, 0]);
        b.clear_range(0, all);
        assert!(b.is_empty());
    }
}
