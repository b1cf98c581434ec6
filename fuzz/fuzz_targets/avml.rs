//! The AVML reader (snappy-framed ranges), then reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("avml.in", data);
    let opts = dumpconv_formats::OpenOptions::default();
    if let Ok(dump) = dumpconv_formats::avml::open(&path, &opts) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
