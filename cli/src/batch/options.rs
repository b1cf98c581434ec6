//! The per-job option vocabulary: the long flags of `dumpconv convert`, without the
//! dashes, as `key=value` words (`format=kdump compress=zstd paging=1`). The batch
//! command line and every manifest line are turned into one such map; the manifest's
//! keys override the command line's, and the merged map becomes a [`ConvertOptions`]
//! through [`crate::schema::build`], the builder `convert` uses too. The options
//! themselves are defined once, in [`crate::schema`]; this module adds what a batch
//! needs on top: manifest-relative file names and the journal's options hash.
//!
//! [`ConvertOptions`]: crate::pipeline::ConvertOptions

use std::path::{Path, PathBuf};

pub use crate::schema::{build, insert, parse_words, OptionMap};
pub use dumpconv_core::numbers::parse_bool;

/// The file-valued options of earlier builds, in the order their contents were hashed
/// (kept, so their journals still match); any other `file: true` option of the schema
/// comes after them.
const HASH_ORDER: &[&str] = &["cpu-state", "vmcoreinfo", "ram-map", "spill-dir"];

/// Options whose value is a file name (`file: true` in the schema), in hash order.
fn file_keys() -> Vec<&'static str> {
    let mut keys = HASH_ORDER.to_vec();
    keys.extend(
        crate::schema::OPTIONS
            .iter()
            .filter(|d| d.file && !HASH_ORDER.contains(&d.name))
            .map(|d| d.name),
    );
    keys
}

fn neutral(key: &str) -> bool {
    crate::schema::find(key).is_some_and(|d| d.neutral)
}

/// Make relative file-valued options of a manifest line relative to `dir`.
pub fn resolve_files(map: &mut OptionMap, dir: &Path) {
    for key in file_keys() {
        if let Some(v) = map.get_mut(key) {
            let p = Path::new(v.as_str());
            if p.is_relative() {
                let joined = dir.join(p);
                // A ram-map is usually a range list, not a file.
                if key != "ram-map" || joined.is_file() {
                    *v = joined.to_string_lossy().into_owned();
                }
            }
        }
    }
}

/// A short hash of the options that change the output's bytes, for the journal. SHA-256
/// (not BLAKE3 like the output digest): it hashes a few bytes, and changing it would
/// make every journal written before look like different options and redo its jobs.
///
/// The files named by `cpu-state`, `vmcoreinfo` and `ram-map` (when it names a file)
/// change the output too: the BLAKE3 of each one's contents is hashed after the
/// options, so editing such a file redoes its jobs. Options naming no file hash as
/// before this was added, so journals written earlier still skip their jobs; a job
/// with a file option gets a new hash and is redone once (an earlier build did not
/// record what the file held).
pub fn options_hash(map: &OptionMap) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in map {
        if neutral(k) {
            continue;
        }
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let files: Vec<(&str, String)> = file_keys()
        .into_iter()
        // spill-dir names a directory that changes nothing in the output.
        .filter(|key| !neutral(key))
        .filter_map(|key| {
            let v = map.get(key)?;
            let p = Path::new(v.as_str());
            // A ram-map that is no file is a range list, hashed above as text.
            if key == "ram-map" && !p.is_file() {
                return None;
            }
            // An unreadable file fails the job when it runs; it has no done record to
            // compare with, so any marker will do.
            let digest = std::fs::read(p).map_or_else(
                |_| "unreadable".to_string(),
                |bytes| blake3::hash(&bytes).to_hex().to_string(),
            );
            Some((key, digest))
        })
        .collect();
    if !files.is_empty() {
        h.update(b"file contents\0");
        for (key, digest) in files {
            h.update(key.as_bytes());
            h.update([0]);
            h.update(digest.as_bytes());
            h.update([0]);
        }
    }
    crate::batch::hex(&h.finalize()[..16])
}

/// The journal's hash of a job: [`options_hash`], and for a kdump split set the other
/// parts' names, sizes and modification times, so a changed or replaced part redoes the
/// job as a changed input does (the journal stamps the first part, the job's input).
pub fn job_hash(options: &OptionMap, parts: &[PathBuf]) -> String {
    use sha2::{Digest, Sha256};
    let base = options_hash(options);
    if parts.is_empty() {
        return base;
    }
    let mut h = Sha256::new();
    h.update(base.as_bytes());
    h.update(b"\0split parts\0");
    for p in parts {
        let stamp = super::journal::Stamp::of(p);
        h.update(p.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(stamp.map_or(0, |s| s.size).to_le_bytes());
        h.update(stamp.map_or(0, |s| s.mtime_ns).to_le_bytes());
    }
    crate::batch::hex(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_threads_only() {
        let a = parse_words("format=kdump threads=1").unwrap();
        let b = parse_words("format=kdump threads=2").unwrap();
        let c = parse_words("format=kdump compress=zstd").unwrap();
        assert_eq!(options_hash(&a), options_hash(&b));
        assert_ne!(options_hash(&a), options_hash(&c));
    }

    #[test]
    fn hash_follows_the_contents_of_files_named_by_options() {
        let dir = tempfile::tempdir().unwrap();
        let vmci = dir.path().join("vmcoreinfo.txt");
        std::fs::write(&vmci, "OSRELEASE=6.1.0\n").unwrap();
        let mut m = parse_words("format=elf").unwrap();
        let plain = options_hash(&m);
        // Without file options the hash is the one earlier builds wrote: SHA-256 of
        // key, NUL, value, NUL, truncated to 16 bytes.
        use sha2::{Digest, Sha256};
        let earlier = Sha256::digest(b"format\0elf\0");
        assert_eq!(plain, crate::batch::hex(&earlier[..16]));
        m.insert("vmcoreinfo".into(), vmci.to_string_lossy().into_owned());
        let before = options_hash(&m);
        assert_ne!(before, plain);
        assert_eq!(options_hash(&m), before);
        std::fs::write(&vmci, "OSRELEASE=6.1.1\n").unwrap();
        assert_ne!(options_hash(&m), before);
        // A ram-map range list is no file: hashed as its text only.
        let mut r = parse_words("format=elf").unwrap();
        r.insert("ram-map".into(), "0-0x9ffff".into());
        let ranges = options_hash(&r);
        let earlier = Sha256::digest(b"format\0elf\0ram-map\x000-0x9ffff\0");
        assert_eq!(ranges, crate::batch::hex(&earlier[..16]));
    }

    #[test]
    fn spill_options_reach_the_open_options_and_not_the_hash() {
        let m = parse_words("spill-dir=/var/tmp max-spill=16M").unwrap();
        let o = build(&m).unwrap();
        assert_eq!(o.open.spill_dir.as_deref(), Some(Path::new("/var/tmp")));
        assert_eq!(o.open.max_spill, Some(16 << 20));
        assert_eq!(options_hash(&m), options_hash(&OptionMap::new()));
        assert!(parse_words("max-spill=lots").is_err());
    }

    #[test]
    fn split_parts_change_the_job_hash() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("s2");
        std::fs::write(&part, "one").unwrap();
        let m = parse_words("format=elf").unwrap();
        assert_eq!(job_hash(&m, &[]), options_hash(&m));
        let before = job_hash(&m, std::slice::from_ref(&part));
        assert_ne!(before, options_hash(&m));
        assert_eq!(job_hash(&m, std::slice::from_ref(&part)), before);
        std::fs::write(&part, "three").unwrap();
        assert_ne!(job_hash(&m, std::slice::from_ref(&part)), before);
    }

    #[test]
    fn file_keys_are_the_schema_file_options() {
        let mut schema: Vec<&str> = crate::schema::OPTIONS
            .iter()
            .filter(|d| d.file)
            .map(|d| d.name)
            .collect();
        let mut ours = file_keys();
        schema.sort();
        ours.sort();
        assert_eq!(
            schema, ours,
            "an option of earlier builds is no longer a file"
        );
    }
}
