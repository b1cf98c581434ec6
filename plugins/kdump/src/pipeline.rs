//! Reading and compressing pages in parallel while the output stays in PFN order.
//!
//! The pages are cut into batches of fixed size (independent of the thread count). Worker
//! threads take batches from a bounded channel, read and compress them, and send them
//! back tagged with their sequence number; the calling thread puts them back in order
//! and hands each to `consume`. At most `window` batches are in flight, so memory is
//! bounded by `window × batch size` whatever the dump's size, and the bytes written
//! depend only on the pages, never on which thread compressed them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use dumpconv_core::memory::{for_each_extent, subtract_ranges};
use dumpconv_core::{is_zero, Error, Extent, PhysRange, PhysicalMemory, Result};
use dumpconv_formats::kdump::layout::bit;

use crate::encode::{PageEncoder, Stored};

/// A batch of pages: runs of PFNs `[start, end)`, all known zero or all to be read.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub seq: u64,
    pub runs: Vec<(u64, u64)>,
    /// Every byte of these pages in the plan's ranges is known zero without reading
    /// ([`Extent::Zero`]): nothing is read, each page is a zero page.
    pub known_zero: bool,
}

/// A processed batch.
#[derive(Debug)]
pub(crate) struct Batch {
    pub runs: Vec<(u64, u64)>,
    /// One entry per page, in PFN order; empty for a known-zero batch (every page zero).
    pub pages: Vec<Stored>,
    /// Stored bytes of the `Stored::Data` pages, concatenated in order.
    pub data: Vec<u8>,
    /// Bytes of memory (plan ranges) this batch covers, for progress.
    pub bytes: u64,
    pub known_zero: bool,
}

/// What a run of pages is, as known before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Pages to read (some byte is [`Extent::Data`]).
    Data,
    /// Every byte of the pages inside the plan's ranges is known zero.
    Zero,
    /// The input does not hold these pages ([`Extent::Missing`]): they leave the 2nd
    /// bitmap without being read.
    Missing,
}

/// A run of pages `[start, end)` of one kind.
pub(crate) type Span = (u64, u64, Kind);

/// Merge `[s, e)` into sorted runs.
fn push_run(runs: &mut Vec<(u64, u64)>, s: u64, e: u64) {
    match runs.last_mut() {
        Some(last) if s <= last.1 => last.1 = last.1.max(e),
        _ => runs.push((s, e)),
    }
}

/// Cut `page_runs` (sorted, disjoint) into spans of pages to read, known-zero pages
/// (every byte of the page inside the plan's `ranges` is [`Extent::Zero`]: a hole of the
/// input, zero fill) and pages the input does not hold, in PFN order. A page with any
/// data byte is read; one with missing bytes and no data is missing. One sweep over the
/// memory's extents, no read.
pub(crate) fn spans(
    mem: &dyn PhysicalMemory,
    ranges: &[PhysRange],
    page_runs: &[(u64, u64)],
    bs: u64,
) -> Result<Vec<Span>> {
    let mut data: Vec<(u64, u64)> = Vec::new();
    let mut missing: Vec<(u64, u64)> = Vec::new();
    for r in ranges.iter().filter(|r| !r.is_empty()) {
        for_each_extent(mem, *r, |addr, e| {
            let (s, end) = (addr / bs, (addr + e.len()).div_ceil(bs));
            match e {
                Extent::Data(_) => push_run(&mut data, s, end),
                Extent::Missing(_) => push_run(&mut missing, s, end),
                Extent::Zero(_) => {}
            }
            Ok(())
        })?;
    }
    // Pages with a missing byte and no data byte (runs of page frames, as ranges).
    let frames = |runs: &[(u64, u64)]| -> Vec<PhysRange> {
        runs.iter().map(|&(s, e)| PhysRange::new(s, e)).collect()
    };
    let missing: Vec<(u64, u64)> = subtract_ranges(&frames(&missing), &frames(&data))
        .into_iter()
        .map(|r| (r.start, r.end))
        .collect();
    // Pages that are not zero, by kind, sorted and disjoint.
    let mut marked: Vec<(u64, u64, Kind)> = data
        .iter()
        .map(|&(s, e)| (s, e, Kind::Data))
        .chain(missing.iter().map(|&(s, e)| (s, e, Kind::Missing)))
        .collect();
    marked.sort_unstable_by_key(|m| m.0);
    let mut out: Vec<Span> = Vec::new();
    let mut push = |s: u64, e: u64, k: Kind| {
        if s >= e {
            return;
        }
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == k => last.1 = e,
            _ => out.push((s, e, k)),
        }
    };
    let mut j = 0usize;
    for &(s, e) in page_runs {
        while marked.get(j).is_some_and(|d| d.1 <= s) {
            j += 1;
        }
        let mut cur = s;
        let mut k = j;
        while cur < e {
            match marked.get(k) {
                Some(&(ds, de, kind)) if ds < e => {
                    push(cur, ds.max(cur), Kind::Zero);
                    let to = de.min(e);
                    push(ds.max(cur), to, kind);
                    cur = to;
                    if de <= e {
                        k += 1;
                    }
                }
                _ => {
                    push(cur, e, Kind::Zero);
                    cur = e;
                }
            }
        }
        j = k;
    }
    Ok(out)
}

/// The runs of set bits of an LSB-first bitmap inside `[start, end)`, lazily.
pub(crate) fn set_runs(bm: &[u8], start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut n = start;
    std::iter::from_fn(move || {
        // Skip clear bits, a byte at a time where whole bytes are clear.
        while n < end && !bit(bm, n) {
            n = if n.is_multiple_of(8) && bm.get((n / 8) as usize) == Some(&0) {
                n + 8
            } else {
                n + 1
            };
        }
        if n >= end {
            return None;
        }
        let s = n;
        while n < end && bit(bm, n) {
            n = if n.is_multiple_of(8) && end - n >= 8 && bm.get((n / 8) as usize) == Some(&0xff) {
                n + 8
            } else {
                n + 1
            };
        }
        Some((s, n.min(end)))
    })
}

/// Cut spans into jobs: at most `batch_pages` pages to read, or `zero_batch_pages`
/// known-zero pages, never both kinds in one job (missing pages are in none). Fixed sizes, so the jobs (and the
/// output) do not depend on the thread count.
pub(crate) fn jobs<I: Iterator<Item = Span>>(
    spans: I,
    batch_pages: u64,
    zero_batch_pages: u64,
) -> impl Iterator<Item = Job> {
    let mut spans = spans
        .filter(|s| s.0 < s.1 && s.2 != Kind::Missing)
        .map(|(s, e, k)| (s, e, k == Kind::Zero));
    let mut pending: Option<(u64, u64, bool)> = None;
    let mut seq = 0u64;
    std::iter::from_fn(move || {
        let first = pending.take().or_else(|| spans.next())?;
        let kz = first.2;
        let mut left = if kz { zero_batch_pages } else { batch_pages }.max(1);
        let mut runs = Vec::new();
        let mut span = Some(first);
        while let Some((s, e, k)) = span {
            if k != kz {
                pending = Some((s, e, k));
                break;
            }
            let take = (e - s).min(left);
            runs.push((s, s + take));
            left -= take;
            if s + take < e {
                pending = Some((s + take, e, k));
                break;
            }
            if left == 0 {
                break;
            }
            span = spans.next();
        }
        let job = Job {
            seq,
            runs,
            known_zero: kz,
        };
        seq += 1;
        Some(job)
    })
    .fuse()
}

/// What workers share.
pub(crate) struct WorkCtx<'a> {
    pub mem: &'a dyn PhysicalMemory,
    /// The plan's ranges: bytes of a page outside them are zero padding.
    pub ranges: &'a [PhysRange],
    pub bs: u64,
}

/// What the first pass (exclude-zero) found in a batch.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Pages that leave the 2nd bitmap (all zero, or not supplied by the input), as
    /// sorted runs `[start, end)`: a known-zero batch is its runs, not a page list.
    pub dropped: Vec<(u64, u64)>,
    pub unavailable: u64,
    /// Bytes of memory of the dropped pages, for progress.
    pub dropped_bytes: u64,
}

impl WorkCtx<'_> {
    /// Read the parts of `region` that lie in the plan's ranges into `out` (which
    /// covers `region` and is zero already). Returns the bytes read.
    fn read_region(&self, region: PhysRange, out: &mut [u8]) -> Result<u64> {
        let mut i = self.ranges.partition_point(|r| r.end <= region.start);
        let mut bytes = 0;
        while let Some(r) = self.ranges.get(i) {
            if r.start >= region.end {
                break;
            }
            if let Some(x) = r.intersect(&region) {
                let a = (x.start - region.start) as usize;
                let b = (x.end - region.start) as usize;
                self.mem.read_at(x.start, &mut out[a..b])?;
                bytes += x.len();
            }
            i += 1;
        }
        Ok(bytes)
    }

    pub(crate) fn bytes_in(&self, region: PhysRange) -> u64 {
        let i = self.ranges.partition_point(|r| r.end <= region.start);
        self.ranges[i..]
            .iter()
            .take_while(|r| r.start < region.end)
            .filter_map(|r| r.intersect(&region))
            .map(|x| x.len())
            .sum()
    }

    /// Read the pages of `runs` into `buf`. Returns the bytes of memory covered and,
    /// if the input could not supply some page, which (by index in the batch).
    fn read_pages(&self, runs: &[(u64, u64)], buf: &mut Vec<u8>) -> Result<(u64, Vec<bool>)> {
        let bs = self.bs as usize;
        let npages: u64 = runs.iter().map(|(s, e)| e - s).sum();
        buf.clear();
        buf.resize(npages as usize * bs, 0);
        let mut unavailable: Vec<bool> = Vec::new();
        let mut bytes = 0;
        let mut off = 0usize;
        for &(s, e) in runs {
            let region = PhysRange::new(s * self.bs, e * self.bs);
            let len = (e - s) as usize * bs;
            bytes += self.bytes_in(region);
            let slice = &mut buf[off..off + len];
            match self.read_region(region, slice) {
                Ok(_) => {}
                // The input lacks some page (a filtered or incomplete kdump, say):
                // go page by page and keep the others.
                Err(Error::PageUnavailable { .. }) => {
                    if unavailable.is_empty() {
                        unavailable = vec![false; npages as usize];
                    }
                    for (k, page) in slice.chunks_exact_mut(bs).enumerate() {
                        let pfn = s + k as u64;
                        let pr = PhysRange::new(pfn * self.bs, (pfn + 1) * self.bs);
                        page.fill(0);
                        match self.read_region(pr, page) {
                            Ok(_) => {}
                            Err(Error::PageUnavailable { .. }) => {
                                unavailable[off / bs + k] = true;
                                page.fill(0);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
            off += len;
        }
        Ok((bytes, unavailable))
    }

    /// First pass of exclude-zero: which pages of a batch to read leave the 2nd bitmap.
    pub(crate) fn scan(&self, job: Job, buf: &mut Vec<u8>) -> Result<Scan> {
        let mut scan = Scan::default();
        if job.known_zero {
            for &(s, e) in &job.runs {
                push_run(&mut scan.dropped, s, e);
                scan.dropped_bytes += self.bytes_in(PhysRange::new(s * self.bs, e * self.bs));
            }
            return Ok(scan);
        }
        let (_, unavailable) = self.read_pages(&job.runs, buf)?;
        let pfns = job.runs.iter().flat_map(|&(s, e)| s..e);
        for (i, (pfn, page)) in pfns.zip(buf.chunks_exact(self.bs as usize)).enumerate() {
            let gone = unavailable.get(i).copied().unwrap_or(false);
            if gone || is_zero(page) {
                push_run(&mut scan.dropped, pfn, pfn + 1);
                scan.unavailable += u64::from(gone);
                scan.dropped_bytes +=
                    self.bytes_in(PhysRange::new(pfn * self.bs, (pfn + 1) * self.bs));
            }
        }
        Ok(scan)
    }

    /// Read and encode one batch. `buf` is scratch space kept between batches.
    pub(crate) fn process(
        &self,
        job: Job,
        enc: &mut PageEncoder,
        buf: &mut Vec<u8>,
    ) -> Result<Batch> {
        if job.known_zero {
            let bytes = job
                .runs
                .iter()
                .map(|&(s, e)| self.bytes_in(PhysRange::new(s * self.bs, e * self.bs)))
                .sum();
            return Ok(Batch {
                runs: job.runs,
                pages: Vec::new(),
                data: Vec::new(),
                bytes,
                known_zero: true,
            });
        }
        let (bytes, unavailable) = self.read_pages(&job.runs, buf)?;
        let bs = self.bs as usize;
        let mut data = Vec::with_capacity(buf.len() / 2);
        let mut pages = Vec::with_capacity(buf.len() / bs);
        for (i, page) in buf.chunks_exact(bs).enumerate() {
            if unavailable.get(i).copied().unwrap_or(false) {
                pages.push(Stored::Unavailable);
            } else {
                pages.push(enc.encode(page, &mut data)?);
            }
        }
        Ok(Batch {
            runs: job.runs,
            pages,
            data,
            bytes,
            known_zero: false,
        })
    }
}

/// Process every job with `work` on `states.len()` threads, each with its own state
/// (the calling thread alone when there is one), and give the results to `consume` in
/// sequence order. Stops at the first error, from a job or from `consume`.
pub(crate) fn run<I, S, T, W, C>(
    jobs: I,
    mut states: Vec<S>,
    window: usize,
    work: W,
    mut consume: C,
) -> Result<()>
where
    I: Iterator<Item = Job>,
    S: Send,
    T: Send,
    W: Fn(&mut S, Job) -> Result<T> + Sync,
    C: FnMut(T) -> Result<()>,
{
    if states.len() <= 1 {
        let mut state = states
            .pop()
            .ok_or_else(|| Error::internal("kdump: no worker state"))?;
        for job in jobs {
            consume(work(&mut state, job)?)?;
        }
        return Ok(());
    }
    let window = window.max(1) as u64;
    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(window as usize);
        let (res_tx, res_rx) = crossbeam_channel::unbounded::<(u64, Result<T>)>();
        let work = &work;
        for mut state in states {
            let (job_rx, res_tx, cancel) = (job_rx.clone(), res_tx.clone(), &cancel);
            s.spawn(move || {
                for job in job_rx {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let seq = job.seq;
                    let r = work(&mut state, job);
                    if res_tx.send((seq, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((job_rx, res_tx));
        let mut jobs = jobs;
        let mut pending: BTreeMap<u64, Result<T>> = BTreeMap::new();
        let (mut sent, mut next) = (0u64, 0u64);
        let mut exhausted = false;
        let result = loop {
            while !exhausted && sent - next < window {
                match jobs.next() {
                    Some(j) => {
                        // Never blocks: the channel holds at most `window` jobs and
                        // no more than that are in flight.
                        if job_tx.send(j).is_err() {
                            break;
                        }
                        sent += 1;
                    }
                    None => exhausted = true,
                }
            }
            if next == sent {
                break Ok(());
            }
            let r = loop {
                if let Some(r) = pending.remove(&next) {
                    break Some(r);
                }
                match res_rx.recv() {
                    Ok((seq, r)) => {
                        pending.insert(seq, r);
                    }
                    Err(_) => break None,
                }
            };
            next += 1;
            match r {
                Some(Ok(batch)) => {
                    if let Err(e) = consume(batch) {
                        break Err(e);
                    }
                }
                Some(Err(e)) => break Err(e),
                None => break Err(Error::internal("kdump: a compression thread stopped")),
            }
        };
        // Let the workers go: no more jobs, skip queued ones, and dropping the result
        // receiver fails their next send.
        cancel.store(true, Ordering::Relaxed);
        drop(job_tx);
        drop(res_rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_cut_runs_into_fixed_batches() {
        let runs = [
            (0, 5, Kind::Data),
            (10, 11, Kind::Data),
            (20, 27, Kind::Data),
        ];
        let js: Vec<_> = jobs(runs.into_iter(), 4, 100)
            .map(|j| (j.seq, j.runs))
            .collect();
        assert_eq!(
            js,
            vec![
                (0, vec![(0, 4)]),
                (1, vec![(4, 5), (10, 11), (20, 22)]),
                (2, vec![(22, 26)]),
                (3, vec![(26, 27)]),
            ]
        );
        assert_eq!(jobs(std::iter::empty(), 4, 4).count(), 0);
    }

    #[test]
    fn jobs_never_mix_known_zero_and_data() {
        let spans = [
            (0, 3, Kind::Data),
            (3, 10, Kind::Zero),
            (10, 12, Kind::Data),
            (12, 15, Kind::Missing),
            (20, 21, Kind::Data),
        ];
        let js: Vec<_> = jobs(spans.into_iter(), 4, 5)
            .map(|j| (j.known_zero, j.runs))
            .collect();
        assert_eq!(
            js,
            vec![
                (false, vec![(0, 3)]),
                (true, vec![(3, 8)]),
                (true, vec![(8, 10)]),
                (false, vec![(10, 12), (20, 21)]),
            ]
        );
    }

    #[test]
    fn set_runs_of_a_bitmap() {
        // Bits 3..8, 16..20 and 30..31 set.
        let mut bm = vec![0u8; 8];
        dumpconv_formats::kdump::layout::set_bits(&mut bm, 3, 8);
        dumpconv_formats::kdump::layout::set_bits(&mut bm, 16, 20);
        dumpconv_formats::kdump::layout::set_bits(&mut bm, 30, 31);
        let r: Vec<_> = set_runs(&bm, 0, 64).collect();
        assert_eq!(r, vec![(3, 8), (16, 20), (30, 31)]);
        let r: Vec<_> = set_runs(&bm, 4, 17).collect();
        assert_eq!(r, vec![(4, 8), (16, 17)]);
    }

    /// Memory whose ranges' extents are given: known-zero where said, data elsewhere.
    struct Extents {
        ranges: Vec<PhysRange>,
        zero: Vec<PhysRange>,
    }
    impl PhysicalMemory for Extents {
        fn ranges(&self) -> &[PhysRange] {
            &self.ranges
        }
        fn read_at(&self, _: u64, _: &mut [u8]) -> Result<()> {
            unreachable!("spans() must not read")
        }
        fn extent(&self, paddr: u64, max: u64) -> Extent {
            for z in &self.zero {
                if z.contains(paddr) {
                    return Extent::Zero((z.end - paddr).min(max));
                }
            }
            let next = self
                .zero
                .iter()
                .map(|z| z.start)
                .filter(|&s| s > paddr)
                .min()
                .unwrap_or(u64::MAX);
            Extent::Data((next - paddr).min(max))
        }
    }

    #[test]
    fn spans_split_pages_by_known_zero_bytes() {
        // Pages of 0x1000: RAM 0..0x10000 and 0x20000..0x20800 (half a page).
        // Known zero: 0x2000..0x5800 (pages 2,3,4 whole; page 5 half) and the half page.
        let m = Extents {
            ranges: vec![PhysRange::new(0, 0x10000), PhysRange::new(0x20000, 0x20800)],
            zero: vec![
                PhysRange::new(0x2000, 0x5800),
                PhysRange::new(0x20000, 0x20800),
            ],
        };
        let runs = [(0, 0x10), (0x20, 0x21)];
        let s = spans(&m, &m.ranges, &runs, 0x1000).unwrap();
        // Page 0x20: its bytes in the ranges are all known zero, so it is a zero page.
        assert_eq!(
            s,
            vec![
                (0, 2, Kind::Data),
                (2, 5, Kind::Zero),
                (5, 0x10, Kind::Data),
                (0x20, 0x21, Kind::Zero)
            ]
        );
    }
}
