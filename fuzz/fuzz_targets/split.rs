//! kdump split sets (makedumpfile --split): the input cut in two at a fuzzed point,
//! both halves opened as the parts of one set, then read.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first two bytes say where the second part starts (in 64-byte units).
    let cut = (usize::from(u16::from_le_bytes([data[0], data[1]])) * 64).min(data.len());
    let body = &data[2..];
    let cut = cut.min(body.len());
    let a = dumpconv_fuzz::write_input("split.1", &body[..cut]);
    let b = dumpconv_fuzz::write_input("split.2", &body[cut..]);
    if let Ok(dump) = dumpconv::split::open_split_set(&a, &[b]) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
