//! `--ram-map` text parsing and the raw reader under it: the input is the map text, a
//! NUL, then the raw image.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let text = String::from_utf8_lossy(&data[..split]);
    let image = data.get(split + 1..).unwrap_or(&[]);
    let Ok(map) = dumpconv_formats::raw::parse_ram_map(&text) else {
        return;
    };
    let path = dumpconv_fuzz::write_input("raw.in", image);
    let opts = dumpconv_formats::OpenOptions {
        ram_map: Some(map),
        ..Default::default()
    };
    if let Ok(dump) = dumpconv_formats::raw::open(&path, &opts) {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
