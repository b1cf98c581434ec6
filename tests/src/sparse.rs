//! Synthetic guests' RAM as a [`SegmentMemory`]: the written 4 KiB pages go to an
//! anonymous temp file, the rest of RAM is zero segments, so a guest with gigabytes of
//! RAM costs only its tables. Shared by the x86 and arm64 synthetic guests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use dumpconv_core::{PhysRange, Segment, SegmentMemory, SegmentSource};

/// `pages` (4 KiB each, keyed by address) inside the RAM `ranges` (`[start, end)`) as
/// one memory named `name`; only the RAM part of a page that straddles a range edge
/// counts.
pub fn segment_memory(
    name: &str,
    ranges: &[(u64, u64)],
    pages: &BTreeMap<u64, Box<[u8]>>,
) -> SegmentMemory {
    let mut file = tempfile::tempfile().expect("temp file");
    let mut segs = Vec::new();
    let mut off = 0u64;
    let mut buf = Vec::new();
    for &(start, end) in ranges {
        let mut pos = start;
        let mut run: Option<(u64, u64, u64)> = None; // (start, end, file offset)
        for (&page, bytes) in pages.range(start & !0xFFF..end) {
            // Only the RAM part of a page that straddles a range edge.
            let (ps, pe) = (page.max(start), (page + 0x1000).min(end));
            if ps > pos {
                flush(&mut segs, &mut run);
                segs.push(Segment {
                    range: PhysRange::new(pos, ps),
                    source: SegmentSource::Zero,
                });
            }
            match &mut run {
                Some((_, e, _)) if *e == ps => *e = pe,
                _ => {
                    flush(&mut segs, &mut run);
                    run = Some((ps, pe, off));
                }
            }
            buf.extend_from_slice(&bytes[(ps - page) as usize..(pe - page) as usize]);
            off += pe - ps;
            pos = pe;
            if buf.len() >= 1 << 22 {
                file.write_all(&buf).expect("write temp file");
                buf.clear();
            }
        }
        flush(&mut segs, &mut run);
        if pos < end {
            segs.push(Segment {
                range: PhysRange::new(pos, end),
                source: SegmentSource::Zero,
            });
        }
    }
    file.write_all(&buf).expect("write temp file");
    SegmentMemory::new(vec![(PathBuf::from(name), Arc::new(file))], segs).expect("segment memory")
}
fn flush(segs: &mut Vec<Segment>, run: &mut Option<(u64, u64, u64)>) {
    if let Some((s, e, off)) = run.take() {
        segs.push(Segment {
            range: PhysRange::new(s, e),
            source: SegmentSource::File {
                file: 0,
                offset: off,
            },
        });
    }
}
