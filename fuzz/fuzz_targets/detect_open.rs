//! Format detection and the reader it picks (every format, compressed wrappers), then reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("detect_open.in", data);
    let opts = dumpconv_formats::OpenOptions::default();
    if let Ok(dump) = dumpconv_formats::open(&path, &opts) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
