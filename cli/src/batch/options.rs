//! The per-job option vocabulary: the long flags of `dumpconv convert`, without the
//! dashes, as `key=value` words (`format=kdump compress=zstd paging=1`). The batch
//! command line and every manifest line are turned into one such map; the manifest's
//! keys override the command line's, and the merged map becomes a [`ConvertOptions`]
//! here, in one place, so a manifest can say exactly what the command line can.

use std::collections::BTreeMap;
use std::path::Path;

use dumpconv_core::{Arch, Error, Result, VmcoreInfo};

use crate::numbers::parse_u64;
use crate::pipeline::{read_cpu_state_file, ConvertOptions, PagingOptions};

/// Option key → value, sorted (so its JSON form is canonical and can be hashed).
pub type OptionMap = BTreeMap<String, String>;

/// Every key a job may set, with what its value is. Same names as `convert`'s flags.
pub const KEYS: &[(&str, &str)] = &[
    ("format", "output format: elf, kdump, raw"),
    ("input-format", "read the input as this format (raw)"),
    (
        "ram-map",
        "RAM ranges of a raw image, or a file holding /proc/iomem",
    ),
    (
        "spill-dir",
        "directory for the decompressed copy of a compressed input",
    ),
    (
        "max-spill",
        "refuse a compressed input decompressing to more than this",
    ),
    ("arch", "x86_64 or i386, for raw images"),
    ("cr3", "page-table root for inputs without CPU state"),
    ("paging-mode", "32bit, pae, 4level or 5level (with cr3)"),
    ("cpu-state", "CPU-state JSON file"),
    ("vmcoreinfo", "VMCOREINFO text file"),
    ("begin", "first physical address to write"),
    ("length", "bytes of physical address space to write"),
    ("paging", "1: write virtual mappings"),
    ("cpu", "CPU whose user mappings are kept"),
    ("paging-cpus", "all or one"),
    ("max-phys-bits", "MAXPHYADDR, 32..52"),
    ("compress", "kdump codec: zlib, lzo, snappy, zstd, none"),
    ("level", "compression level"),
    ("threads", "kdump compression threads"),
    ("exclude-zero", "1: leave zero pages out of a kdump file"),
    (
        "keep-partial",
        "1: keep a partial kdump file on a write error",
    ),
];

/// Keys whose value is a file name: a relative one in a manifest is taken relative to
/// the manifest's directory (`ram-map` only when that names an existing file).
pub const FILE_KEYS: &[&str] = &["cpu-state", "vmcoreinfo", "ram-map", "spill-dir"];

/// Keys that do not change the output's bytes, left out of the options hash (kdump
/// output is identical for any thread count, and the batch picks the count itself;
/// where an input is spilled and how large it may grow change whether a job runs, not
/// what it writes).
const NEUTRAL_KEYS: &[&str] = &["threads", "spill-dir", "max-spill"];

fn known(key: &str) -> bool {
    KEYS.iter().any(|(k, _)| *k == key)
}

/// Parse `key=value key2=value2 flag` (a bare key means `1`). Leading dashes are
/// accepted (`--paging`) so a line can be pasted from a command.
pub fn parse_words(text: &str) -> std::result::Result<OptionMap, String> {
    let mut map = OptionMap::new();
    for word in text.split_whitespace() {
        let word = word.trim_start_matches('-');
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, v),
            None => (word, "1"),
        };
        insert(&mut map, k, v.to_string())?;
    }
    Ok(map)
}

/// Check a key and its value's syntax and add it.
pub fn insert(map: &mut OptionMap, key: &str, value: String) -> std::result::Result<(), String> {
    let key = key.trim_start_matches('-').to_ascii_lowercase();
    if !known(&key) {
        return Err(format!(
            "unknown option {key:?} (known: {})",
            KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        ));
    }
    check_value(&key, &value)?;
    map.insert(key, value);
    Ok(())
}

fn check_value(key: &str, v: &str) -> std::result::Result<(), String> {
    let bad = |what: &str| Err(format!("option {key}={v:?}: {what}"));
    match key {
        "begin" | "length" | "cr3" | "max-spill" => {
            parse_u64(v).map(drop).map_err(|e| format!("{key}: {e}"))
        }
        "cpu" | "level" => match v.trim().parse::<i64>() {
            Ok(_) => Ok(()),
            Err(_) => bad("expected an integer"),
        },
        "max-phys-bits" => match v.trim().parse::<u8>() {
            Ok(n) if (32..=52).contains(&n) => Ok(()),
            _ => bad("expected 32..52"),
        },
        "paging" | "exclude-zero" | "keep-partial" if parse_bool(v).is_none() => {
            bad("expected 1/0, true/false, yes/no")
        }
        "paging-cpus" if v != "all" && v != "one" => bad("expected all or one"),
        "arch" if arch(v).is_none() => {
            bad("expected an architecture name (x86_64, i386, aarch64, ...)")
        }
        "paging-mode" if paging_mode(v).is_none() => {
            bad("expected a paging-mode name (32bit, pae, 4level, 5level, ...)")
        }
        "threads" if v != "auto" && v.trim().parse::<usize>().map_or(true, |n| n == 0) => {
            bad("expected a count of 1 or more, or auto")
        }
        _ if v.is_empty() => bad("empty value"),
        _ => Ok(()),
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// An architecture by the table's names (see `dumpconv_core::arch`).
fn arch(v: &str) -> Option<Arch> {
    Arch::from_name(v)
}

/// A mode name some built-in walker accepts.
fn paging_mode(v: &str) -> Option<&str> {
    let r = crate::Registry::builtin();
    (!v.is_empty() && r.cpu_from_root(None, v, 0).is_ok()).then_some(v)
}

/// Make relative file-valued options of a manifest line relative to `dir`.
pub fn resolve_files(map: &mut OptionMap, dir: &Path) {
    for key in FILE_KEYS {
        if let Some(v) = map.get_mut(*key) {
            let p = Path::new(v.as_str());
            if p.is_relative() {
                let joined = dir.join(p);
                // A ram-map is usually a range list, not a file.
                if *key != "ram-map" || joined.is_file() {
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
        if NEUTRAL_KEYS.contains(&k.as_str()) {
            continue;
        }
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let files: Vec<(&str, String)> = FILE_KEYS
        .iter()
        // spill-dir names a directory that changes nothing in the output.
        .filter(|key| !NEUTRAL_KEYS.contains(key))
        .filter_map(|key| {
            let v = map.get(*key)?;
            let p = Path::new(v.as_str());
            // A ram-map that is no file is a range list, hashed above as text.
            if *key == "ram-map" && !p.is_file() {
                return None;
            }
            // An unreadable file fails the job when it runs; it has no done record to
            // compare with, so any marker will do.
            let digest = std::fs::read(p).map_or_else(
                |_| "unreadable".to_string(),
                |bytes| blake3::hash(&bytes).to_hex().to_string(),
            );
            Some((*key, digest))
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

/// Build the options of one conversion. Files named by options are read here, so a
/// missing one fails that job only.
pub fn build(map: &OptionMap) -> Result<ConvertOptions> {
    let get = |k: &str| map.get(k).map(String::as_str);
    let num = |k: &str| -> Result<Option<u64>> {
        get(k)
            .map(|v| parse_u64(v).map_err(|e| Error::invalid(format!("option {k}: {e}"))))
            .transpose()
    };
    let flag = |k: &str| get(k).and_then(parse_bool).unwrap_or(false);
    let mut o = ConvertOptions {
        format: get("format").map(str::to_string),
        begin: num("begin")?,
        length: num("length")?,
        arch: get("arch").and_then(arch),
        ..ConvertOptions::default()
    };
    o.open.input_format = get("input-format").map(str::to_string);
    o.open.spill_dir = get("spill-dir").map(std::path::PathBuf::from);
    o.open.max_spill = num("max-spill")?;
    if let Some(m) = get("ram-map") {
        let p = Path::new(m);
        let text = if p.is_file() {
            std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?
        } else {
            m.to_string()
        };
        o.open.ram_map = Some(dumpconv_formats::raw::parse_ram_map(&text)?);
    }
    if let Some(cr3) = num("cr3")? {
        let mode = get("paging-mode").and_then(paging_mode).ok_or_else(|| {
            Error::invalid("option cr3 needs paging-mode (32bit, pae, 4level or 5level)")
        })?;
        if map.contains_key("cpu-state") {
            return Err(Error::invalid(
                "options cr3 and cpu-state exclude each other",
            ));
        }
        let arch = get("arch").and_then(arch);
        o.cpus = Some(vec![
            crate::Registry::builtin().cpu_from_root(arch, mode, cr3)?
        ]);
    } else if let Some(p) = get("cpu-state") {
        o.cpus = Some(read_cpu_state_file(Path::new(p))?);
    }
    if let Some(p) = get("vmcoreinfo") {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        o.vmcoreinfo = Some(VmcoreInfo::parse(&bytes));
    }
    if flag("paging") {
        o.paging = Some(PagingOptions {
            user_cpu: get("cpu").and_then(|v| v.trim().parse().ok()),
            all_cpus: get("paging-cpus") == Some("all"),
            max_phys_bits: get("max-phys-bits")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(52),
        });
    }
    for key in ["compress", "level", "threads"] {
        if let Some(v) = get(key) {
            o.writer_options.insert(key.to_string(), v.to_string());
        }
    }
    for key in ["exclude-zero", "keep-partial"] {
        if flag(key) {
            o.writer_options.insert(key.to_string(), "1".to_string());
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        let m = parse_words("format=kdump --compress=zstd paging").unwrap();
        assert_eq!(m["format"], "kdump");
        assert_eq!(m["compress"], "zstd");
        assert_eq!(m["paging"], "1");
        let o = build(&m).unwrap();
        assert_eq!(o.format.as_deref(), Some("kdump"));
        assert!(o.paging.is_some());
        assert_eq!(o.writer_options["compress"], "zstd");
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(parse_words("colour=blue")
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse_words("begin=zz").is_err());
        assert!(parse_words("max-phys-bits=60").is_err());
        assert!(parse_words("paging=maybe").is_err());
        assert!(parse_words("threads=0").is_err());
    }

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
    fn cr3_needs_mode() {
        let m = parse_words("cr3=0x1000").unwrap();
        assert!(build(&m).is_err());
        let m = parse_words("cr3=0x1000 paging-mode=pae").unwrap();
        assert_eq!(build(&m).unwrap().cpus.unwrap().len(), 1);
    }
}
