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

use dumpconv_core::{Error, PhysRange, PhysicalMemory, Result};

use crate::encode::{PageEncoder, Stored};

/// A batch of pages: runs of PFNs `[start, end)`.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub seq: u64,
    pub runs: Vec<(u64, u64)>,
}

/// A processed batch.
#[derive(Debug)]
pub(crate) struct Batch {
    pub runs: Vec<(u64, u64)>,
    /// One entry per page, in PFN order.
    pub pages: Vec<Stored>,
    /// Stored bytes of the `Stored::Data` pages, concatenated in order.
    pub data: Vec<u8>,
    /// Bytes of memory (plan ranges) this batch covers, for progress.
    pub bytes: u64,
}

/// Cut page runs into jobs of at most `batch_pages` pages.
pub(crate) fn jobs(page_runs: &[(u64, u64)], batch_pages: u64) -> impl Iterator<Item = Job> + '_ {
    let mut run = 0usize;
    let mut pfn = page_runs.first().map_or(0, |r| r.0);
    let mut seq = 0u64;
    std::iter::from_fn(move || {
        let mut runs = Vec::new();
        let mut left = batch_pages;
        while left > 0 {
            let end = page_runs.get(run)?.1;
            let take = (end - pfn).min(left);
            runs.push((pfn, pfn + take));
            left -= take;
            pfn += take;
            if pfn == end {
                run += 1;
                match page_runs.get(run) {
                    Some(r) => pfn = r.0,
                    None => break,
                }
            }
        }
        if runs.is_empty() {
            return None;
        }
        let job = Job { seq, runs };
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

    fn bytes_in(&self, region: PhysRange) -> u64 {
        let i = self.ranges.partition_point(|r| r.end <= region.start);
        self.ranges[i..]
            .iter()
            .take_while(|r| r.start < region.end)
            .filter_map(|r| r.intersect(&region))
            .map(|x| x.len())
            .sum()
    }

    /// Read and encode one batch. `buf` is scratch space kept between batches.
    pub(crate) fn process(
        &self,
        job: Job,
        enc: &mut PageEncoder,
        buf: &mut Vec<u8>,
    ) -> Result<Batch> {
        let bs = self.bs as usize;
        let npages: u64 = job.runs.iter().map(|(s, e)| e - s).sum();
        buf.clear();
        buf.resize(npages as usize * bs, 0);
        let mut unavailable: Vec<bool> = Vec::new();
        let mut bytes = 0;
        let mut off = 0usize;
        for &(s, e) in &job.runs {
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
        let mut data = Vec::with_capacity(buf.len() / 2);
        let mut pages = Vec::with_capacity(npages as usize);
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
        })
    }
}

/// Process every job on `encoders.len()` threads (the calling thread alone when there
/// is one encoder) and give the batches to `consume` in sequence order. Stops at the
/// first error, from a batch or from `consume`.
pub(crate) fn run<I, C>(
    jobs: I,
    ctx: &WorkCtx<'_>,
    mut encoders: Vec<PageEncoder>,
    window: usize,
    mut consume: C,
) -> Result<()>
where
    I: Iterator<Item = Job>,
    C: FnMut(Batch) -> Result<()>,
{
    if encoders.len() <= 1 {
        let mut enc = encoders
            .pop()
            .ok_or_else(|| Error::internal("kdump: no compression context"))?;
        let mut buf = Vec::new();
        for job in jobs {
            consume(ctx.process(job, &mut enc, &mut buf)?)?;
        }
        return Ok(());
    }
    let window = window.max(1) as u64;
    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(window as usize);
        let (res_tx, res_rx) = crossbeam_channel::unbounded::<(u64, Result<Batch>)>();
        for mut enc in encoders {
            let (job_rx, res_tx, cancel) = (job_rx.clone(), res_tx.clone(), &cancel);
            s.spawn(move || {
                let mut buf = Vec::new();
                for job in job_rx {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let seq = job.seq;
                    let r = ctx.process(job, &mut enc, &mut buf);
                    if res_tx.send((seq, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((job_rx, res_tx));
        let mut jobs = jobs;
        let mut pending: BTreeMap<u64, Result<Batch>> = BTreeMap::new();
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
        let runs = [(0, 5), (10, 11), (20, 27)];
        let js: Vec<_> = jobs(&runs, 4).map(|j| (j.seq, j.runs)).collect();
        assert_eq!(
            js,
            vec![
                (0, vec![(0, 4)]),
                (1, vec![(4, 5), (10, 11), (20, 22)]),
                (2, vec![(22, 26)]),
                (3, vec![(26, 27)]),
            ]
        );
        assert_eq!(jobs(&[], 4).count(), 0);
    }
}
