//! Measure AVML read costs: opening (indexing), a sequential read of all RAM in 1 MiB
//! pieces, and random 4 KiB page reads.
//!
//! `cargo run --release -p dumpconv-formats --example avml_read_bench -- FILE.avml [N]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use dumpconv_formats::OpenOptions;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: avml_read_bench FILE [RANDOM_READS]");
    let n: usize = args.next().map_or(20_000, |s| s.parse().expect("count"));
    let t = Instant::now();
    let d = dumpconv_formats::open(path.as_ref(), &OpenOptions::default()).expect("open");
    println!("open ({}): {:.3} s", d.format, t.elapsed().as_secs_f64());
    let ranges = d.memory.ranges().to_vec();
    let total: u64 = ranges.iter().map(|r| r.len()).sum();

    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for r in &ranges {
        let mut a = r.start;
        while a < r.end {
            let k = (r.end - a).min(buf.len() as u64) as usize;
            d.memory.read_at(a, &mut buf[..k]).expect("read");
            a += k as u64;
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "sequential: {:#x} bytes in {s:.3} s = {:.0} MiB/s",
        total,
        total as f64 / s / 1048576.0
    );

    // Random pages (xorshift, deterministic).
    let pages: Vec<(u64, u64)> = ranges.iter().map(|r| (r.start, r.len() / 4096)).collect();
    let all: u64 = pages.iter().map(|p| p.1).sum();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut page = [0u8; 4096];
    let t = Instant::now();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut i = x % all.max(1);
        let addr = pages
            .iter()
            .find_map(|&(s, c)| {
                if i < c {
                    Some(s + i * 4096)
                } else {
                    i -= c;
                    None
                }
            })
            .unwrap();
        d.memory.read_at(addr, &mut page).expect("read");
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "random 4 KiB reads: {n} in {s:.3} s = {:.1} us each",
        s / n as f64 * 1e6
    );
}
