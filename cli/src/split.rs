//! kdump split sets (`makedumpfile --split`): one dump written as several files, each
//! holding a range of page frames. `dumpconv convert part1 part2 ... -o out` and a
//! manifest line with several inputs open them together; see docs/inputs.md.

use std::path::{Path, PathBuf};

use dumpconv_core::{Dump, Error, Result};

/// Open `first` and `rest` as the files of one split set (in any order). Every file
/// must be a kdump part of the same dump, and together they must hold every page
/// frame: a missing, repeated or foreign part is an error naming the file or the gap.
pub fn open_split_set(first: &Path, rest: &[PathBuf]) -> Result<Dump> {
    let mut paths = Vec::with_capacity(rest.len() + 1);
    paths.push(first.to_path_buf());
    paths.extend(rest.iter().cloned());
    for (i, p) in paths.iter().enumerate() {
        if let Some(j) = paths[..i]
            .iter()
            .position(|q| crate::output::same_file(p, q))
        {
            return Err(Error::invalid(format!(
                "{}: given twice as a part of one split set (as input {} and {})",
                p.display(),
                j + 1,
                i + 1
            )));
        }
    }
    let dump = dumpconv_formats::kdump::open_kdump(&paths)?;
    if details(&dump, "split").is_empty() {
        return Err(Error::invalid(format!(
            "{}: several inputs were given, but it is no part of a kdump split set \
             (makedumpfile --split); convert one dump at a time",
            first.display()
        )));
    }
    check_same_dump(&paths)?;
    check_complete(&dump)?;
    Ok(dump)
}

/// Header fields every part of one dump repeats (makedumpfile copies them into each).
const SAME_IN_EVERY_PART: &[&str] = &[
    "signature",
    "header version",
    "layout",
    "machine",
    "release",
    "codec",
    "block size",
    "max_mapnr",
    "nr_cpus",
    "dump level",
    "phys_base",
    "timestamp",
];

/// Refuse a part of another dump: each part repeats the dump's header, ELF notes (CPU
/// registers) and VMCOREINFO, and they must be the first file's. (The reader checks
/// block size, page count and layout, and that the page-frame ranges do not overlap;
/// a part of another dump of the same machine passes those.)
fn check_same_dump(paths: &[PathBuf]) -> Result<()> {
    let opened = paths
        .iter()
        .map(|p| dumpconv_formats::kdump::open_kdump(std::slice::from_ref(p)))
        .collect::<Result<Vec<_>>>()?;
    let Some((first, rest)) = opened.split_first() else {
        return Ok(());
    };
    let field = |d: &Dump, key: &str| details(d, key).first().map(|v| v.to_string());
    for d in rest {
        let differs = SAME_IN_EVERY_PART
            .iter()
            .find(|key| field(d, key) != field(first, key))
            .map(|key| {
                let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
                format!(
                    "{key} ({} here, {} there)",
                    show(field(d, key)),
                    show(field(first, key))
                )
            })
            .or_else(|| (d.notes != first.notes).then(|| "ELF notes (CPU state)".into()))
            .or_else(|| (d.vmcoreinfo != first.vmcoreinfo).then(|| "VMCOREINFO".into()));
        if let Some(what) = differs {
            return Err(Error::invalid(format!(
                "{}: a part of another dump than {}: its {what} differs",
                d.path.display(),
                first.path.display()
            )));
        }
    }
    Ok(())
}

/// Refuse a split set that lacks a part (a lone part given alone, or a set with a gap):
/// its missing pages could only be written as lost.
pub fn check_complete(dump: &Dump) -> Result<()> {
    let gaps = details(dump, "missing part");
    if gaps.is_empty() {
        return Ok(());
    }
    let parts = details(dump, "split");
    Err(Error::invalid(format!(
        "{}: incomplete kdump split set: {}; give every part (dumpconv convert PART1 \
         PART2 ... -o OUT). Parts given: {}",
        dump.path.display(),
        gaps.join("; "),
        parts.join("; ")
    )))
}

/// The values of the reader's detail lines named `key` (`split`, `missing part`...).
fn details<'a>(dump: &'a Dump, key: &str) -> Vec<&'a str> {
    dump.details
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}
