//! The ELF reader (ELF64/ELF32, PN_XNUM, notes), then reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("elf.in", data);
    let opts = dumpconv_formats::OpenOptions::default();
    if let Ok(dump) = dumpconv_formats::elf::read::open(&path, &opts) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
