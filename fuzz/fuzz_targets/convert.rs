//! A whole conversion: the input (detected as `open` would) to each writer (raw, ELF,
//! ELF with --paging, kdump, LiME, AVML, zstd-compressed ELF) into a temporary
//! directory. Writers size their output from what the reader claims (the highest
//! address, zero fill, the RAM map), so this is where issue #17's 2 TiB bitmap and
//! 1 TiB of zero fill live. A failed conversion must leave nothing in the directory.
//! (Raw in a stream writes its holes as zeros, up to 8 GiB by design: not fuzzed here,
//! where it would only time out; the corpus has its bound.)
#![no_main]
use libfuzzer_sys::fuzz_target;

use dumpconv::{ConvertOptions, Output, Registry};

const OUTPUTS: [&str; 7] = [
    "o.raw",
    "o.elf",
    "p.elf",
    "o.kdump",
    "o.lime",
    "o.avml",
    "o.elf.zst",
];

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // The first byte picks the writer; the rest is the input.
    let (sel, input) = (data[0], &data[1..]);
    if input.is_empty() {
        return;
    }
    let path = dumpconv_fuzz::write_input("convert.in", input);
    let out_dir = dumpconv_fuzz::scratch_dir("convert.out");
    let name = OUTPUTS[usize::from(sel) % OUTPUTS.len()];
    let out = out_dir.join(name);
    let mut opts = ConvertOptions::default();
    if name == "p.elf" {
        opts.paging = Some(dumpconv::PagingOptions::default());
    }
    opts.force = true;
    let registry = Registry::builtin();
    let res = dumpconv::pipeline::convert_with(
        &registry,
        &path,
        &Output::Path(out.clone()),
        &opts,
        &dumpconv_core::NoProgress,
    );
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    if res.is_err() {
        assert!(left.is_empty(), "a failed conversion left {left:?}");
    }
    let _ = std::fs::remove_file(&out);
});
