//! Zero pages, decided from contents, for outputs that cannot leave a zero page out by
//! themselves (ELF, raw, LiME; the kdump writer checks each page as it compresses it).

use dumpconv_core::{is_zero, Extent, PhysicalMemory};
use rayon::prelude::*;

/// Pages per parallel piece.
const PIECE_PAGES: u64 = 1024;

/// The all-zero pages among the PFN runs `pfns` (sorted, disjoint `[start, end)`), as
/// merged PFN runs. A page that cannot be read is not zero. `threads` 0 = all cores.
pub fn zero_pages(
    mem: &dyn PhysicalMemory,
    pfns: &[(u64, u64)],
    page_size: u64,
    threads: usize,
) -> Vec<(u64, u64)> {
    let mut pieces = Vec::new();
    for &(s, e) in pfns {
        let mut p = s;
        while p < e {
            let q = (p + PIECE_PAGES).min(e);
            pieces.push((p, q));
            p = q;
        }
    }
    let scan = || -> Vec<Vec<(u64, u64)>> {
        pieces
            .par_iter()
            .map(|&(s, e)| {
                let mut buf = vec![0u8; page_size as usize];
                let mut out: Vec<(u64, u64)> = Vec::new();
                let mut push = |a: u64, b: u64| match out.last_mut() {
                    Some(l) if l.1 == a => l.1 = b,
                    _ => out.push((a, b)),
                };
                let mut pfn = s;
                while pfn < e {
                    // Whole pages the memory knows are zero (holes of a sparse input,
                    // zero fill) are zero pages without reading; the others are read.
                    let pages = match mem.extent(pfn * page_size, (e - pfn) * page_size) {
                        Extent::Zero(n) if n >= page_size => {
                            let k = (n / page_size).min(e - pfn);
                            push(pfn, pfn + k);
                            pfn += k;
                            continue;
                        }
                        // Pages the input does not hold are not zero pages.
                        Extent::Missing(n) if n >= page_size => {
                            pfn += (n / page_size).min(e - pfn);
                            continue;
                        }
                        Extent::Data(n) | Extent::Missing(n) => {
                            n.div_ceil(page_size).clamp(1, e - pfn)
                        }
                        Extent::Zero(_) => 1,
                    };
                    for p in pfn..pfn + pages {
                        if mem.read_at(p * page_size, &mut buf).is_ok() && is_zero(&buf) {
                            push(p, p + 1);
                        }
                    }
                    pfn += pages;
                }
                out
            })
            .collect()
    };
    let parts = if threads > 0 {
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(scan),
            Err(_) => scan(),
        }
    } else {
        scan()
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in parts.into_iter().flatten() {
        match out.last_mut() {
            Some(l) if l.1 == s => l.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}
