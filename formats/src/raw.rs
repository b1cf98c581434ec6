//! Raw images: file offset = physical address, no header, no CPU state.
//!
//! A raw image says nothing about where the holes are: by default the whole file is
//! RAM. `--ram-map` (or a copy of the guest's /proc/iomem) narrows it down, so that
//! MMIO and firmware holes that the capture filled with zeros or junk do not end up as
//! "RAM" in the output.

use std::path::Path;
use std::sync::Arc;

use dumpconv_core::memory::normalize_ranges;
use dumpconv_core::{Dump, Error, PhysRange, Result, Segment, SegmentMemory, SegmentSource};

use crate::detect::OpenOptions;
use crate::input::Input;

/// Open a raw image. RAM is `opts.ram_map` (which must lie inside the file) or, without
/// one, the whole file.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Dump> {
    let input = Input::open(path)?;
    let file_extent = PhysRange::new(0, input.len);
    let (ranges, source) = match &opts.ram_map {
        Some(map) => {
            let map = normalize_ranges(map.clone());
            if let Some(bad) = map.iter().find(|r| r.end > input.len) {
                return Err(Error::format(
                    input.path.clone(),
                    None,
                    "raw",
                    format!(
                        "RAM map range {:#x}-{:#x} (inclusive) runs past the end of the \
                         image ({:#x} bytes): the image is shorter than the RAM map says \
                         (truncated capture, or a map from another machine?)",
                        bad.start,
                        bad.end - 1,
                        input.len
                    ),
                ));
            }
            if map.is_empty() {
                return Err(Error::invalid(format!(
                    "{}: the RAM map is empty",
                    input.path.display()
                )));
            }
            (map, "--ram-map")
        }
        None => (vec![file_extent], "whole file"),
    };
    let segments = ranges
        .iter()
        .map(|r| Segment {
            range: *r,
            source: SegmentSource::File {
                file: 0,
                offset: r.start,
            },
        })
        .collect();
    let memory = SegmentMemory::new(
        vec![(input.path.clone(), Arc::clone(&input.file))],
        segments,
    )?;
    let ram: u64 = ranges.iter().map(PhysRange::len).sum();
    let details = vec![
        ("file size".into(), format!("{:#x}", input.len)),
        ("RAM map".into(), source.into()),
        ("RAM ranges".into(), ranges.len().to_string()),
        ("RAM bytes".into(), format!("{ram:#x}")),
    ];
    Ok(input.memory_only_dump("raw", details, Arc::new(memory)))
}

/// Parse a RAM map given on the command line or in a file.
///
/// Two forms are accepted:
/// - a list of inclusive ranges like `/proc/iomem` writes them, separated by commas or
///   white space: `0-0x9ffff,0x100000-0xbfffffff` (each number hex with `0x`, or
///   decimal);
/// - the text of `/proc/iomem` itself (any line containing `:`): only lines naming
///   "System RAM" are taken, nested or not (hot-added "System RAM (kmem)" included);
///   numbers there are hex without `0x`, as the kernel prints them.
///
/// The result is sorted and merged. Ends are inclusive in the text and exclusive in the
/// returned [`PhysRange`]s.
pub fn parse_ram_map(text: &str) -> Result<Vec<PhysRange>> {
    let err = |msg: String| Error::invalid(format!("RAM map: {msg}"));
    let mut out = Vec::new();
    if text.contains(':') {
        let mut lines = 0usize;
        for (no, line) in text.lines().enumerate() {
            let Some((range, name)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if !(name == "System RAM" || name.starts_with("System RAM (")) {
                continue;
            }
            lines += 1;
            let (a, b) = range.trim().split_once('-').ok_or_else(|| {
                err(format!(
                    "line {}: {:?} is not START-END",
                    no + 1,
                    line.trim()
                ))
            })?;
            let hex = |s: &str| {
                u64::from_str_radix(s.trim(), 16).map_err(|_| {
                    err(format!(
                        "line {}: {:?} is not a hex address",
                        no + 1,
                        s.trim()
                    ))
                })
            };
            let line_err = |msg: String| err(format!("line {}: {msg}", no + 1));
            out.push(inclusive(hex(a)?, hex(b)?, &line_err)?);
        }
        if lines == 0 {
            return Err(err(
                "no \"System RAM\" lines in this /proc/iomem text".into()
            ));
        }
        if out.iter().all(|r| r.start == 0 && r.end == 1) {
            return Err(err(
                "every System RAM range reads 00000000-00000000: /proc/iomem hides \
                 addresses from non-root users; copy it as root"
                    .into(),
            ));
        }
    } else {
        for (no, line) in text.lines().enumerate() {
            let err = |msg: String| err(format!("line {}: {msg}", no + 1));
            for item in line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
            {
                let (a, b) = item
                    .split_once('-')
                    .ok_or_else(|| err(format!("{item:?} is not START-END (inclusive end)")))?;
                let num = |s: &str| {
                    dumpconv_core::cpu::hex::parse(s).ok_or_else(|| {
                        err(format!(
                            "{s:?} in {item:?} is not a number (hex needs 0x, else decimal)"
                        ))
                    })
                };
                out.push(inclusive(num(a)?, num(b)?, &err)?);
            }
        }
        if out.is_empty() {
            return Err(err("no ranges given".into()));
        }
    }
    Ok(normalize_ranges(out))
}

fn inclusive(start: u64, last: u64, err: &dyn Fn(String) -> Error) -> Result<PhysRange> {
    if last < start {
        return Err(err(format!(
            "range {start:#x}-{last:#x} ends before it starts"
        )));
    }
    let end = last
        .checked_add(1)
        .ok_or_else(|| err(format!("range {start:#x}-{last:#x} reaches past 2^64")))?;
    Ok(PhysRange::new(start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_lists() {
        let r = parse_ram_map("0-0x9ffff,0x100000-0xbfffffff").unwrap();
        assert_eq!(
            r,
            vec![
                PhysRange::new(0, 0xa0000),
                PhysRange::new(0x100000, 0xc000_0000)
            ]
        );
        let r = parse_ram_map(" 4096-8191 0-4095\n").unwrap();
        assert_eq!(r, vec![PhysRange::new(0, 8192)]);
        assert!(parse_ram_map("").is_err());
        assert!(parse_ram_map("0x10-0x5").is_err());
        assert!(parse_ram_map("ff-0x100").is_err());
        assert!(parse_ram_map("0-0xffffffffffffffff").is_err());
        assert!(parse_ram_map("0x100").is_err());
    }

    #[test]
    fn parses_proc_iomem() {
        let iomem = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : System ROM
00100000-bffdffff : System RAM
  01000000-01e02fff : Kernel code
  01e03000-0226efff : Kernel rodata
fd000000-fdffffff : PCI Bus 0000:00
100000000-13fffffff : System RAM
  138000000-13fffffff : System RAM (kmem)
";
        let r = parse_ram_map(iomem).unwrap();
        assert_eq!(
            r,
            vec![
                PhysRange::new(0x1000, 0x9fc00),
                PhysRange::new(0x100000, 0xbffe0000),
                PhysRange::new(0x1_0000_0000, 0x1_4000_0000),
            ]
        );
        let hidden = "00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n";
        let e = parse_ram_map(hidden).unwrap_err().to_string();
        assert!(e.contains("root"), "{e}");
        assert!(parse_ram_map("00000000-00000fff : Reserved\n").is_err());
    }

    fn image(len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i / 4096) as u8).collect();
        f.write_all(&data).unwrap();
        f
    }

    #[test]
    fn whole_file_without_map() {
        let f = image(3 * 4096);
        let d = open(f.path(), &OpenOptions::default()).unwrap();
        assert_eq!(d.format, "raw");
        assert_eq!(d.arch, None);
        assert_eq!(d.memory.ranges(), &[PhysRange::new(0, 3 * 4096)]);
        let mut b = [0u8; 2];
        d.memory.read_at(4095, &mut b).unwrap();
        assert_eq!(b, [0, 1]);
    }

    #[test]
    fn ram_map_selects_ranges_and_must_fit() {
        let f = image(4 * 4096);
        let opts = OpenOptions {
            ram_map: Some(parse_ram_map("0x1000-0x1fff,0x3000-0x3fff").unwrap()),
            ..OpenOptions::default()
        };
        let d = open(f.path(), &opts).unwrap();
        assert_eq!(
            d.memory.ranges(),
            &[
                PhysRange::new(0x1000, 0x2000),
                PhysRange::new(0x3000, 0x4000)
            ]
        );
        let mut b = [0u8; 1];
        d.memory.read_at(0x3000, &mut b).unwrap();
        assert_eq!(b[0], 3);
        assert!(d.memory.read_at(0x2000, &mut b).is_err());

        let opts = OpenOptions {
            ram_map: Some(parse_ram_map("0x1000-0x4fff").unwrap()),
            ..OpenOptions::default()
        };
        let e = open(f.path(), &opts).unwrap_err().to_string();
        assert!(e.contains("0x1000-0x4fff"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
    }
}
