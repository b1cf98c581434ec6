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
    if !dump.details.iter().any(|(k, _)| k == "split") {
        return Err(Error::invalid(format!(
            "{}: several inputs were given, but it is no part of a kdump split set \
             (makedumpfile --split); convert one dump at a time",
            first.display()
        )));
    }
    check_complete(&dump)?;
    Ok(dump)
}

/// Refuse a split set that lacks a part (a lone part given alone, or a set with a gap):
/// its missing pages could only be written as lost.
pub fn check_complete(dump: &Dump) -> Result<()> {
    let gaps: Vec<&str> = dump
        .details
        .iter()
        .filter(|(k, _)| k == "missing part")
        .map(|(_, v)| v.as_str())
        .collect();
    if gaps.is_empty() {
        return Ok(());
    }
    let parts: Vec<&str> = dump
        .details
        .iter()
        .filter(|(k, _)| k == "split")
        .map(|(_, v)| v.as_str())
        .collect();
    Err(Error::invalid(format!(
        "{}: incomplete kdump split set: {}; give every part (dumpconv convert PART1 \
         PART2 ... -o OUT). Parts given: {}",
        dump.path.display(),
        gaps.join("; "),
        parts.join("; ")
    )))
}
