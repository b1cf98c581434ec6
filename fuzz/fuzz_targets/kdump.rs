//! The kdump reader (seekable and flattened, every page codec), then reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("kdump.in", data);
    let opts = dumpconv_formats::OpenOptions::default();
    if let Ok(dump) = dumpconv_formats::kdump::reader::open(&path, &opts) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
