//! Time the writers on a flat image: `write_bench INPUT OUTPUT elf|raw|elf-paging`.
//! OUTPUT `-` writes to stdout (a stream sink). The input is taken as RAM from
//! physical 0; `elf-paging` adds a direct-map mapping of all of it plus a 16 MiB alias.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dumpconv_core::{
    Arch, DumpPlan, DumpWriter, FileSink, Mapping, MappingList, NoProgress, PhysRange,
    PhysicalMemory, Segment, SegmentMemory, SegmentSource, Sink, StreamSink,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output, format] = &args[..] else {
        return Err("usage: write_bench INPUT OUTPUT elf|raw|elf-paging".into());
    };
    let f = File::open(input)?;
    let len = f.metadata()?.len();
    let mem = SegmentMemory::new(
        vec![(PathBuf::from(input), Arc::new(f))],
        vec![Segment {
            range: PhysRange::new(0, len),
            source: SegmentSource::File { file: 0, offset: 0 },
        }],
    )?;
    let mappings = (format == "elf-paging").then(|| {
        let mut l = MappingList::new();
        l.push(Mapping {
            virt: 0xffff_8880_0000_0000,
            phys: 0,
            len,
        });
        l.push(Mapping {
            virt: 0xffff_ffff_8100_0000,
            phys: 0x100_0000.min(len),
            len: 0x100_0000.min(len.saturating_sub(0x100_0000)),
        });
        l
    });
    let plan = DumpPlan {
        filter: None,
        arch: Arch::X86_64,
        page_size: 4096,
        ranges: mem.ranges().to_vec(),
        mappings,
        notes: vec![],
        cpus: vec![],
        vmcoreinfo: None,
        options: BTreeMap::new(),
    };
    let writer: Box<dyn DumpWriter> = match format.as_str() {
        "raw" => Box::new(dumpconv_raw::RawWriter::new()),
        _ => Box::new(dumpconv_elf::ElfWriter::new()),
    };
    let mut sink: Box<dyn Sink> = if output == "-" {
        // Stdout is line buffered: give binary output a real buffer.
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        Box::new(StreamSink::new(out, "<stdout>"))
    } else {
        Box::new(FileSink::new(File::create(output)?, output))
    };
    let t = Instant::now();
    writer.write(&plan, &mem, sink.as_mut(), &NoProgress)?;
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "{format}: {} MiB in {s:.2} s = {:.0} MiB/s",
        len >> 20,
        (len >> 20) as f64 / s
    );
    Ok(())
}
