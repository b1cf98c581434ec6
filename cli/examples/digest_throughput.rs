//! How fast one core hashes, for the batch journal's output digest (BENCHMARKS.md):
//! SHA-256 (what the journal used first) against BLAKE3 fed in 1 MiB and 4 KiB
//! updates, and BLAKE3 over zeros as `dumpconv::digest` feeds a hole.
//!
//! `cargo run --release -p dumpconv --example digest_throughput [MiB]` (default 512).

use std::time::Instant;

use sha2::Digest;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let len = mib << 20;
    // Incompressible-looking bytes, so nothing about the data is special.
    let data: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    let gbs = |secs: f64| len as f64 / secs / 1e9;
    for round in 1..=2 {
        let t = Instant::now();
        let mut h = sha2::Sha256::new();
        for c in data.chunks(1 << 20) {
            h.update(c);
        }
        let _ = h.finalize();
        let sha = gbs(t.elapsed().as_secs_f64());

        let mut blake = Vec::new();
        for piece in [1 << 20, 4096] {
            let t = Instant::now();
            let mut h = blake3::Hasher::new();
            for c in data.chunks(piece) {
                h.update(c);
            }
            let _ = h.finalize();
            blake.push(gbs(t.elapsed().as_secs_f64()));
        }

        let t = Instant::now();
        let mut h = blake3::Hasher::new();
        dumpconv::digest::update_zeros(&mut h, len as u64);
        let _ = h.finalize();
        let zeros = gbs(t.elapsed().as_secs_f64());

        println!(
            "round {round}, {mib} MiB: SHA-256 {sha:.2} GB/s; BLAKE3 1 MiB updates {:.2} GB/s, \
             4 KiB updates {:.2} GB/s, zeros (a hole) {zeros:.2} GB/s",
            blake[0], blake[1]
        );
    }
}
