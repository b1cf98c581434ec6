//! Batch manifests (CSV and JSON lines) and journals: `manifest::parse` on the input as
//! CSV and as JSONL, then the input as a journal file read by `Journal::open`.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dumpconv::batch::{journal::Journal, manifest};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let dir = dumpconv_fuzz::scratch_dir("batch");
    for csv in [true, false] {
        if let Ok(jobs) = manifest::parse(&text, "fuzz.manifest", &dir, csv) {
            for j in &jobs {
                let _ = (&j.input, &j.parts, &j.output, &j.origin);
            }
        }
    }
    let journal = dir.join(".dumpconv-journal.jsonl");
    if std::fs::write(&journal, data).is_ok() {
        let _ = Journal::open(&dir, None);
    }
});
