//! Reference tools from Debian 13 (trixie) for the oracles of page filtering (issue 13)
//! and the reader matrix (issue 18): makedumpfile 1.7.6, crash 8.0.6 and drgn, run in
//! the minimal Debian 13 roots that `tests/reference-tools/ensure-debian13.sh` builds
//! (`scripts/test.sh` calls it), plus two independent readers written for the tests:
//! `kdump_excluded.py` (a kdump file's bitmaps, Python standard library only) and
//! `drgn_page_classes.py` (each page frame's class from the kernel's own `struct page`,
//! through drgn's helpers). See `tests/reference-tools/README.md`.
//!
//! [`debian13`] is `None` (the test skips, saying why) when the root is missing, unless
//! `DUMPCONV_REQUIRE_REFTOOLS=1` (set by `scripts/test.sh` once the roots are built),
//! where a missing root fails the test.
//!
//! Page-frame sets are sorted, merged, half-open `(start, end)` ranges of frame numbers.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guests::{cache_dir, Guest};

/// Sorted, merged, half-open page-frame ranges.
pub type Ranges = Vec<(u64, u64)>;

/// `tests/reference-tools/`.
pub const TOOLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/reference-tools");

fn tool(name: &str) -> PathBuf {
    Path::new(TOOLS).join(name)
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The amd64 root: `$DUMPCONV_DEBIAN13`, else `~/.cache/dumpconv/debian13`.
pub fn debian13_dir() -> PathBuf {
    std::env::var_os("DUMPCONV_DEBIAN13")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/dumpconv/debian13"))
}

/// The i386 root: `$DUMPCONV_DEBIAN13_I386`, else `~/.cache/dumpconv/debian13-i386`.
pub fn debian13_i386_dir() -> PathBuf {
    std::env::var_os("DUMPCONV_DEBIAN13_I386")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/dumpconv/debian13-i386"))
}

/// Where makedumpfile_excluded.sh caches its outputs:
/// `$DUMPCONV_REFERENCE_CACHE`, else `~/.cache/dumpconv/reference`.
pub fn reference_cache() -> PathBuf {
    std::env::var_os("DUMPCONV_REFERENCE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/dumpconv/reference"))
}

fn required() -> bool {
    std::env::var("DUMPCONV_REQUIRE_REFTOOLS").is_ok_and(|v| v == "1")
}

fn is_root_user() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn complete(root: &Path) -> bool {
    root.join(".dumpconv-debian13").is_file()
}

/// The Debian 13 roots.
#[derive(Debug, Clone)]
pub struct Debian13 {
    /// The amd64 root (makedumpfile, crash, drgn, libkdumpfile's Python binding).
    pub root: PathBuf,
    /// The i386 root (makedumpfile and crash for i386 dumps), if built.
    pub root_i386: Option<PathBuf>,
    /// `.dumpconv-versions` of the amd64 root: the tool versions it holds.
    pub versions: String,
}

/// The Debian 13 roots, or `None` (printing why) when the amd64 root is not built or we
/// are not root (chroot needs it); panics instead when `DUMPCONV_REQUIRE_REFTOOLS=1`.
pub fn debian13() -> Option<Debian13> {
    let root = debian13_dir();
    let why = if !complete(&root) {
        Some(format!(
            "no Debian 13 root at {} (run tests/reference-tools/ensure-debian13.sh)",
            root.display()
        ))
    } else if !is_root_user() {
        Some("the Debian 13 reference tools need root (mount namespace, chroot)".to_string())
    } else {
        None
    };
    if let Some(msg) = why {
        assert!(!required(), "{msg}");
        eprintln!("SKIP: {msg}");
        return None;
    }
    let i386 = debian13_i386_dir();
    Some(Debian13 {
        versions: std::fs::read_to_string(root.join(".dumpconv-versions")).unwrap_or_default(),
        root,
        root_i386: complete(&i386).then_some(i386),
    })
}

/// A directory bound into the root for one command.
#[derive(Debug, Clone)]
pub struct Bind {
    pub host: PathBuf,
    /// Absolute path inside the root.
    pub inside: String,
    pub read_only: bool,
}

impl Bind {
    /// `dir` at the same path inside, read-only.
    pub fn same_ro(dir: &Path) -> Bind {
        Bind {
            host: dir.to_path_buf(),
            inside: dir.to_string_lossy().into_owned(),
            read_only: true,
        }
    }
    /// `dir` at the same path inside, writable.
    pub fn same_rw(dir: &Path) -> Bind {
        Bind {
            read_only: false,
            ..Bind::same_ro(dir)
        }
    }
}

impl Debian13 {
    /// `in-debian13.sh [--i386] --bind ... CMD...` as a Command (not run).
    pub fn command<S: AsRef<OsStr>>(&self, i386: bool, binds: &[Bind], cmd: &[S]) -> Command {
        let mut c = Command::new("bash");
        c.arg(tool("in-debian13.sh"));
        if i386 {
            c.arg("--i386");
        }
        for b in binds {
            let mut spec = b.host.clone().into_os_string();
            spec.push(":");
            spec.push(&b.inside);
            if b.read_only {
                spec.push(":ro");
            }
            c.arg("--bind").arg(spec);
        }
        c.arg("--");
        c.args(cmd);
        c
    }

    /// Run CMD in the root; its stdout, or an error with its status and stderr.
    pub fn run<S: AsRef<OsStr>>(
        &self,
        i386: bool,
        binds: &[Bind],
        cmd: &[S],
    ) -> Result<String, String> {
        if i386 && self.root_i386.is_none() {
            return Err(format!(
                "no i386 Debian 13 root at {} (run tests/reference-tools/ensure-debian13.sh \
                 --arch i386)",
                debian13_i386_dir().display()
            ));
        }
        let mut c = self.command(i386, binds, cmd);
        output_of(&mut c)
    }
}

fn output_of(c: &mut Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("cannot run {c:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{c:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What `kdump_excluded.py --zero` reads from a kdump file's header and bitmaps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KdumpBitmaps {
    /// The sub-header's dump_level (makedumpfile's `-d`).
    pub dump_level: u32,
    pub block_size: u64,
    pub max_mapnr: u64,
    /// 64 or 32: which header layout the file uses.
    pub layout: u32,
    pub flattened: bool,
    /// Frames that are RAM (first bitmap) but not dumped (second bitmap).
    pub excluded: Ranges,
    /// Dumped frames whose descriptor points at a shared all-zero block (how makedumpfile
    /// and QEMU store zero pages in a kdump file).
    pub zero: Ranges,
}

fn hex(s: &str, line: &str) -> Result<u64, String> {
    let h = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("bad number {s:?} in line {line:?}"))?;
    u64::from_str_radix(h, 16).map_err(|e| format!("bad number {s:?} in line {line:?}: {e}"))
}

fn num(s: &str, line: &str) -> Result<u64, String> {
    if s.starts_with("0x") {
        hex(s, line)
    } else {
        s.parse()
            .map_err(|e| format!("bad number {s:?} in line {line:?}: {e}"))
    }
}

/// Parse `kdump_excluded.py` output.
pub fn parse_kdump_excluded(text: &str) -> Result<KdumpBitmaps, String> {
    let mut b = KdumpBitmaps::default();
    let mut seen_level = false;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["dump_level", v] => {
                b.dump_level = num(v, line)? as u32;
                seen_level = true;
            }
            ["block_size", v] => b.block_size = num(v, line)?,
            ["max_mapnr", v] => b.max_mapnr = num(v, line)?,
            ["layout", v] => b.layout = num(v, line)? as u32,
            ["flattened", v] => b.flattened = *v == "yes",
            ["zero", s, e] => b.zero.push((hex(s, line)?, hex(e, line)?)),
            ["ram", _, _] => {}
            [s, e] => b.excluded.push((hex(s, line)?, hex(e, line)?)),
            [] => {}
            _ => return Err(format!("unexpected line {line:?} from kdump_excluded.py")),
        }
    }
    if !seen_level {
        return Err("kdump_excluded.py printed no dump_level".to_string());
    }
    Ok(b)
}

fn python() -> String {
    std::env::var("DUMPCONV_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The bitmaps of a kdump file (seekable or flattened) as `kdump_excluded.py` reads them.
/// Runs on the host's python3 (standard library only).
pub fn kdump_bitmaps(path: &Path) -> Result<KdumpBitmaps, String> {
    let text = output_of(
        Command::new("python3")
            .arg(tool("kdump_excluded.py"))
            .arg("--zero")
            .arg(path),
    )?;
    parse_kdump_excluded(&text)
}

/// `(dump_level, excluded frames)` of a kdump file: frames that are RAM in the first
/// bitmap but absent from the second (zero pages stored as shared zero blocks are *not*
/// in it: see [`KdumpBitmaps::zero`]).
pub fn kdump_excluded(path: &Path) -> Result<(u32, Ranges), String> {
    let b = kdump_bitmaps(path)?;
    Ok((b.dump_level, b.excluded))
}

/// makedumpfile 1.7.6's kdump of a guest at one dump level.
#[derive(Debug, Clone)]
pub struct MakedumpfileOutput {
    /// The cached kdump file (`-c`, zlib, unless `DUMPCONV_MDF_COMPRESS` says otherwise).
    pub kdump: PathBuf,
    pub bitmaps: KdumpBitmaps,
    /// makedumpfile's messages and its run time.
    pub log: String,
}

/// Run (or take from the cache) makedumpfile 1.7.6 `-c -d level` on the guest's QEMU
/// `phys.elf` (`makedumpfile_excluded.sh`), and read its output's bitmaps.
pub fn makedumpfile_output(guest: &str, level: u32) -> Result<MakedumpfileOutput, String> {
    makedumpfile_output_with(guest, level, "-c")
}

/// [`makedumpfile_output`] with another codec option: `-c` zlib, `-z` zstd, `-l` lzo,
/// `-p` snappy (Debian 13's makedumpfile has no snappy: that fails).
pub fn makedumpfile_output_with(
    guest: &str,
    level: u32,
    compress: &str,
) -> Result<MakedumpfileOutput, String> {
    let out = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let printed = output_of(
        Command::new("bash")
            .arg(tool("makedumpfile_excluded.sh"))
            .arg(guest)
            .arg(level.to_string())
            .arg(out.path())
            .env("DUMPCONV_MDF_COMPRESS", compress),
    )?;
    let excluded = PathBuf::from(printed.trim());
    let text =
        std::fs::read_to_string(&excluded).map_err(|e| format!("{}: {e}", excluded.display()))?;
    let bitmaps = parse_kdump_excluded(&text)?;
    let dir = reference_cache().join("makedumpfile").join(guest);
    let base = if compress == "-c" {
        format!("d{level}")
    } else {
        format!("d{level}{compress}")
    };
    let log = std::fs::read_to_string(dir.join(format!("{base}.log"))).unwrap_or_default();
    Ok(MakedumpfileOutput {
        kdump: dir.join(format!("{base}.kdump")),
        bitmaps,
        log,
    })
}

/// The frames makedumpfile 1.7.6 `-d level` leaves out of the guest's dump (RAM in its
/// output's first bitmap, not in the second).
pub fn makedumpfile_excluded(guest: &str, level: u32) -> Result<Ranges, String> {
    Ok(makedumpfile_output(guest, level)?.bitmaps.excluded)
}

/// The guest kernel's debug vmlinux: the cache's (x86_64), else the one extracted from
/// the `-dbg` .deb next to the guest cache into
/// `~/.cache/dumpconv/tools/vmlinux/<release>/vmlinux` (extracted on first use).
pub fn vmlinux(g: &Guest) -> Option<PathBuf> {
    let own = g.file("vmlinux");
    if own.exists() {
        return Some(own);
    }
    let release = g.meta["kernel_release"].as_str()?.to_string();
    let root = cache_dir().parent()?.to_path_buf();
    let out_dir = root.join("tools/vmlinux").join(&release);
    let out = out_dir.join("vmlinux");
    if out.exists() {
        return Some(out);
    }
    let prefix = format!("linux-image-{release}-dbg_");
    let deb = std::fs::read_dir(root.join("debs"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .max()?;
    std::fs::create_dir_all(&out_dir).ok()?;
    let tmp = tempfile::tempdir_in(&out_dir).ok()?;
    let member = format!("./usr/lib/debug/boot/vmlinux-{release}");
    let t = std::time::Instant::now();
    // --occurrence: stop once the member is out (it is near the start of the archive).
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"dpkg-deb --fsys-tarfile "$1" 2>/dev/null | tar -x -C "$2" --occurrence=1 "$3""#)
        .args(["sh", deb.to_str()?, tmp.path().to_str()?, &member])
        .status()
        .ok()?;
    let got = tmp.path().join(&member);
    if !got.exists() {
        eprintln!("cannot extract {member} from {} ({status})", deb.display());
        return None;
    }
    std::fs::rename(&got, &out).ok()?;
    eprintln!(
        "{}: extracted vmlinux from {} in {:.1} s",
        g.name,
        deb.display(),
        t.elapsed().as_secs_f64()
    );
    Some(out)
}

/// Parse `drgn_page_classes.py` output: `CLASS 0xSTART 0xEND` lines (and `#` comments).
pub fn parse_page_classes(text: &str) -> Result<BTreeMap<String, Ranges>, String> {
    let mut m: BTreeMap<String, Ranges> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [class, s, e] => m
                .entry((*class).to_string())
                .or_default()
                .push((hex(s, line)?, hex(e, line)?)),
            _ => {
                return Err(format!(
                    "unexpected line {line:?} from drgn_page_classes.py"
                ))
            }
        }
    }
    Ok(m)
}

/// Each page frame's class in `dump` as the kernel's own `struct page` says, read by
/// drgn (`drgn_page_classes.py` with the guest's debug vmlinux): classes `free`, `user`,
/// `cache`, `cache-private`, `zero`, `slab`, `reserved`, `other` (see the script's
/// header). Host drgn (`DUMPCONV_PYTHON`, PyPI) unless `DUMPCONV_DRGN_FROM=debian13`.
/// Also `#` lines with the counts and what the script could not classify.
pub fn drgn_page_classes(dump: &Path, guest: &Guest) -> Result<BTreeMap<String, Ranges>, String> {
    let text = drgn_page_classes_text(dump, guest)?;
    parse_page_classes(&text)
}

/// The raw output of `drgn_page_classes.py` (cached next to nothing: it runs each time).
pub fn drgn_page_classes_text(dump: &Path, guest: &Guest) -> Result<String, String> {
    let vmlinux = vmlinux(guest).ok_or_else(|| format!("{}: no debug vmlinux", guest.name))?;
    let script = tool("drgn_page_classes.py");
    if std::env::var("DUMPCONV_DRGN_FROM").is_ok_and(|v| v == "debian13") {
        let d = debian13().ok_or("no Debian 13 root")?;
        let binds = [
            Bind::same_ro(Path::new(TOOLS)),
            Bind::same_ro(dump.parent().unwrap_or(Path::new("/"))),
            Bind::same_ro(vmlinux.parent().unwrap_or(Path::new("/"))),
        ];
        let cmd: Vec<&OsStr> = vec![
            OsStr::new("python3"),
            script.as_os_str(),
            dump.as_os_str(),
            vmlinux.as_os_str(),
        ];
        return d.run(false, &binds, &cmd);
    }
    output_of(Command::new(python()).arg(&script).arg(dump).arg(&vmlinux))
}

/// Is `vmlinux` an i386 (EM_386) ELF file?
fn is_i386_elf(vmlinux: &Path) -> Result<bool, String> {
    use std::io::Read;
    let mut h = [0u8; 20];
    std::fs::File::open(vmlinux)
        .and_then(|mut f| f.read_exact(&mut h))
        .map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    if &h[..4] != b"\x7fELF" {
        return Err(format!("{}: offset 0: not an ELF file", vmlinux.display()));
    }
    Ok(u16::from_le_bytes([h[18], h[19]]) == 3)
}

/// crash 8.0.6 from the Debian 13 root (the i386 root for an i386 vmlinux) on `dump`
/// with `vmlinux`, running `cmds` in batch mode (`crash -s`); its stdout.
pub fn crash_d13(dump: &Path, vmlinux: &Path, cmds: &[&str]) -> Result<String, String> {
    let d = debian13().ok_or("no Debian 13 root")?;
    let i386 = is_i386_elf(vmlinux)?;
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let input = dir.path().join("cmds");
    let mut text: String = cmds.iter().map(|c| format!("{c}\n")).collect();
    text.push_str("exit\n");
    std::fs::write(&input, text).map_err(|e| format!("{}: {e}", input.display()))?;
    let dump = dump
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dump.display()))?;
    let vmlinux = vmlinux
        .canonicalize()
        .map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    let binds = [
        Bind::same_ro(dir.path()),
        Bind::same_ro(dump.parent().unwrap_or(Path::new("/"))),
        Bind::same_ro(vmlinux.parent().unwrap_or(Path::new("/"))),
    ];
    let cmd: Vec<&OsStr> = vec![
        OsStr::new("crash"),
        OsStr::new("-s"),
        OsStr::new("-i"),
        input.as_os_str(),
        vmlinux.as_os_str(),
        dump.as_os_str(),
    ];
    d.run(i386, &binds, &cmd)
}

/// Merge sorted half-open ranges that touch or overlap.
pub fn merge(mut r: Ranges) -> Ranges {
    r.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(r.len());
    for (s, e) in r {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Frames in `a` and not in `b` (both merged).
pub fn subtract(a: &Ranges, b: &Ranges) -> Ranges {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, e) in a {
        let mut cur = s;
        while j < b.len() && b[j].1 <= cur {
            j += 1;
        }
        let mut k = j;
        while cur < e {
            match b.get(k) {
                Some(&(bs, be)) if bs < e => {
                    if bs > cur {
                        out.push((cur, bs));
                    }
                    cur = cur.max(be);
                    k += 1;
                }
                _ => {
                    out.push((cur, e));
                    cur = e;
                }
            }
        }
    }
    out
}

/// Frames in both (both merged).
pub fn intersect(a: &Ranges, b: &Ranges) -> Ranges {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Number of frames in the ranges.
pub fn count(r: &Ranges) -> u64 {
    r.iter().map(|(s, e)| e - s).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_algebra() {
        let a = vec![(0, 10), (20, 30)];
        let b = vec![(5, 22), (25, 26), (29, 40)];
        assert_eq!(subtract(&a, &b), vec![(0, 5), (22, 25), (26, 29)]);
        assert_eq!(
            intersect(&a, &b),
            vec![(5, 10), (20, 22), (25, 26), (29, 30)]
        );
        assert_eq!(
            merge(vec![(5, 6), (0, 2), (2, 3), (6, 9)]),
            vec![(0, 3), (5, 9)]
        );
        assert_eq!(count(&a), 20);
        assert_eq!(subtract(&a, &vec![]), a);
    }

    #[test]
    fn parses_kdump_excluded_output() {
        let t = "dump_level 31\nblock_size 4096\nmax_mapnr 0x20000\nlayout 64\nflattened no\n\
                 0x120 0x1000\nzero 0x1000 0x1002\nram 0x0 0x20000\n";
        let b = parse_kdump_excluded(t).unwrap();
        assert_eq!(b.dump_level, 31);
        assert_eq!(b.max_mapnr, 0x20000);
        assert_eq!(b.excluded, vec![(0x120, 0x1000)]);
        assert_eq!(b.zero, vec![(0x1000, 0x1002)]);
        assert!(parse_kdump_excluded("block_size 4096\n").is_err());
    }
}
