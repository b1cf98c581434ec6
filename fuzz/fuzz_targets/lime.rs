//! The LiME reader, then reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("lime.in", data);
    let opts = dumpconv_formats::OpenOptions::default();
    if let Ok(dump) = dumpconv_formats::lime::open(&path, &opts) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
