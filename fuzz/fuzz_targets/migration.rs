//! The QEMU migration stream reader, mapped-ram files included (bitmaps and page
//! offsets), then reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("migration.in", data);
    let opts = dumpconv_formats::OpenOptions::default();
    if let Ok(dump) = dumpconv_formats::migration::open(&path, &opts) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
