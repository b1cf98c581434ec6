//! The qcow2 savevm reader: header, snapshot table, the snapshot's L1/L2 tables and
//! clusters (plain, zero, compressed, extended L2), then the migration stream inside.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("qcow2.in", data);
    let opts = dumpconv_formats::OpenOptions::default();
    if let Ok(dump) = dumpconv_formats::qcow2::open(&path, &opts) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
