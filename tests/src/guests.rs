//! The real-guest cache built by `tests/real-guests/ensure-guests.sh`:
//! `${DUMPCONV_GUEST_CACHE:-~/.cache/dumpconv/guests}/<guest>/` with QEMU's dumps,
//! pmemsave images, System.map, vmlinux (x86_64) and `meta.json`.
//!
//! Tests call [`guests`] (the x86 guests) or [`arm64_guests`]; when the cache is missing
//! they skip with a printed reason,
//! unless `DUMPCONV_REQUIRE_GUESTS=1` (set by `scripts/test.sh`), where a missing
//! guest fails the test.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use dumpconv_core::PhysicalMemory;
use serde_json::Value;

pub const ALL: &[&str] = &[
    "x86_64-4level",
    "x86_64-kaslr",
    "x86_64-la57",
    "x86_64-highmem",
    "i386-pae",
    "i386-2level",
];

/// The aarch64 guests. Not in [`ALL`]: the tests that iterate [`guests`] are x86 tests.
pub const ARM64: &[&str] = &["arm64-4k"];

/// The guest dumped while its kdump capture kernel runs (two kernels in one dump, CPU 0
/// in the capture kernel, CPU 1 in the crashed one; `crashk-facts.json`). Not in
/// [`ALL`]: QEMU's `paging.elf` of it maps both kernels, so it is no single-kernel
/// reference. Read by `tests/tests/capture_kernel.rs`.
pub const CAPTURE_KERNEL: &str = "x86_64-crashk";

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DUMPCONV_GUEST_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/dumpconv/guests")
}

fn required() -> bool {
    std::env::var("DUMPCONV_REQUIRE_GUESTS").is_ok_and(|v| v == "1")
}

/// One captured guest.
#[derive(Debug, Clone)]
pub struct Guest {
    pub name: String,
    pub dir: PathBuf,
    pub meta: Value,
}

impl Guest {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn is_x86_64(&self) -> bool {
        self.meta["arch"] == "x86_64"
    }
    pub fn is_aarch64(&self) -> bool {
        self.meta["arch"] == "aarch64"
    }
    /// x86: "4level", "5level", "pae", "32bit"; aarch64: "<granule>-va<bits>" of the
    /// kernel half (TCR_EL1.TG1 / T1SZ), e.g. "4k-va48".
    pub fn paging(&self) -> &str {
        self.meta["paging"].as_str().unwrap_or("")
    }
    pub fn banner(&self) -> String {
        std::fs::read_to_string(self.file("banner.txt"))
            .unwrap_or_default()
            .trim_end()
            .to_string()
    }
    /// `(start, size)` of each RAM range.
    pub fn ram_ranges(&self) -> Vec<(u64, u64)> {
        self.meta["ram_ranges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| (as_u64(&r["start"]), as_u64(&r["size"])))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every kernel-half page that QEMU's paging dump of this guest (`paging.elf`)
    /// maps reads the same bytes, at the same virtual address, from the ELF `ours`.
    /// Returns the number of pages compared (more than 1000, or it panics).
    pub fn assert_kernel_half_equals_qemu_paging_dump(&self, ours: &Path) -> u64 {
        let theirs_path = self.file("paging.elf");
        let theirs = load_pages(&theirs_path);
        let mine = load_pages(ours);
        let (fa, fb) = (File::open(&theirs_path).unwrap(), File::open(ours).unwrap());
        let va_bits = if self.paging() == "5level" { 57 } else { 48 };
        let kernel_half = |v: u64| {
            if self.is_x86_64() {
                v >> 63 == 1 && is_canonical(v, va_bits)
            } else {
                v >= 0xc000_0000
            }
        };
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        let mut checked = 0;
        for (&v, &off) in theirs.iter().filter(|(v, _)| kernel_half(**v)) {
            let o2 = *mine
                .get(&v)
                .unwrap_or_else(|| panic!("{}: QEMU maps {v:#x}, we do not", self.name));
            fa.read_exact_at(&mut a, off).unwrap();
            fb.read_exact_at(&mut b, o2).unwrap();
            assert!(a == b, "{}: page {v:#x} differs from QEMU's", self.name);
            checked += 1;
        }
        assert!(
            checked > 1000,
            "{}: only {checked} kernel pages compared",
            self.name
        );
        checked
    }

    /// `mem` (read from `path`) holds exactly the guest's RAM ranges, no more (a VM save
    /// file carries QEMU's RAM blocks only: no ROM, no VGA window), and every byte of
    /// them equals the pmemsave image `ram.raw`.
    pub fn assert_ram_is_exactly_pmemsave(&self, path: &Path, mem: &dyn PhysicalMemory) {
        let got: Vec<(u64, u64)> = mem.ranges().iter().map(|r| (r.start, r.len())).collect();
        assert_eq!(got, self.ram_ranges(), "{}: RAM ranges", path.display());
        self.assert_ram_equals_pmemsave(path, mem);
    }

    /// Every RAM range of the guest is in `mem` (read from `path`) and every byte of it
    /// equals the pmemsave image `ram.raw`. Extra ranges in `mem` are allowed: QEMU's
    /// physical dumps of x86 also hold the BIOS ROM (0xfffc0000, 256 KiB), which a
    /// pmemsave of RAM does not.
    pub fn assert_ram_equals_pmemsave(&self, path: &Path, mem: &dyn PhysicalMemory) {
        let raw = File::open(self.file("ram.raw")).unwrap();
        let ranges = self.ram_ranges();
        assert!(
            !ranges.is_empty(),
            "{}: meta.json has no RAM ranges",
            self.name
        );
        for &(start, len) in &ranges {
            assert!(
                mem.is_ram(start, len),
                "{}: guest RAM {start:#x}+{len:#x} is missing (reader's RAM: {:x?})",
                path.display(),
                mem.ranges()
            );
        }
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        for &(start, len) in &ranges {
            let end = start + len;
            let mut at = start;
            while at < end {
                let n = ((end - at) as usize).min(a.len());
                mem.read_at(at, &mut a[..n])
                    .unwrap_or_else(|e| panic!("{}: read {at:#x}: {e}", path.display()));
                raw.read_exact_at(&mut b[..n], at).unwrap();
                if let Some(i) = a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y) {
                    panic!(
                        "{} ({}): physical {:#x} differs from pmemsave",
                        path.display(),
                        self.name,
                        at + i as u64
                    );
                }
                at += n as u64;
            }
        }
    }
    /// Address of a symbol in System.map (link-time, before any KASLR slide).
    pub fn symbol(&self, name: &str) -> Option<u64> {
        let map = std::fs::read_to_string(self.file("System.map")).ok()?;
        map.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            let addr = it.next()?;
            let _kind = it.next()?;
            (it.next()? == name).then(|| u64::from_str_radix(addr, 16).ok())?
        })
    }
    /// KASLR slide recorded by the harness (0 without KASLR).
    pub fn kernel_offset(&self) -> u64 {
        as_u64(&self.meta["kernel_offset"])
    }
    /// The VMCOREINFO note of QEMU's `phys.elf` as `KEY=value` pairs, in order.
    pub fn vmcoreinfo(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.file("vmcoreinfo.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    /// aarch64: kernel virtual memory QEMU's gdbstub read through the CPU's own MMU
    /// while the guest was stopped (`gdbstub-samples.txt`); empty for other guests.
    pub fn gdbstub_samples(&self) -> Vec<GdbSample> {
        std::fs::read_to_string(self.file("gdbstub-samples.txt"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(GdbSample::parse)
            .collect()
    }
}

/// One line of `gdbstub-samples.txt`: `<va> <hex bytes | -> <kind>:<what>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GdbSample {
    pub va: u64,
    /// `None`: gdb could not read the address (QEMU's MMU found no mapping).
    pub bytes: Option<Vec<u8>>,
    /// `kind:what`, kind one of named, text, rodata, data, bss, linear, vmemmap,
    /// vmalloc, module, unmapped (all read through CPU 0), user (`user:cpu=N:...`, read
    /// through CPU N's TTBR0_EL1).
    pub label: String,
}

impl GdbSample {
    fn parse(line: &str) -> Option<GdbSample> {
        let mut it = line.splitn(3, char::is_whitespace);
        let va = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
        let data = it.next()?;
        let label = it.next()?.trim().to_string();
        let bytes = if data == "-" {
            None
        } else {
            let b = data.as_bytes();
            if b.len() % 2 != 0 {
                return None;
            }
            let hex = |c: u8| (c as char).to_digit(16);
            let mut v = Vec::with_capacity(b.len() / 2);
            for p in b.chunks(2) {
                v.push((hex(p[0])? * 16 + hex(p[1])?) as u8);
            }
            Some(v)
        };
        Some(GdbSample { va, bytes, label })
    }
    pub fn kind(&self) -> &str {
        self.label.split(':').next().unwrap_or("")
    }
    /// The vCPU whose MMU translated the read (`cpu=N` in the label, else 0).
    pub fn cpu(&self) -> u32 {
        self.label
            .split(':')
            .find_map(|f| f.strip_prefix("cpu="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// A JSON number or a hex/decimal string.
pub fn as_u64(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).unwrap_or(0),
                None => s.parse().unwrap_or(0),
            }
        }
        _ => 0,
    }
}

/// The complete guests in the cache. Prints why a guest is missing; panics on a missing
/// guest when the cache is required.
pub fn guests() -> Vec<Guest> {
    ALL.iter().filter_map(|name| guest(name)).collect()
}

/// The complete aarch64 guests in the cache (see [`guests`] for a missing one).
pub fn arm64_guests() -> Vec<Guest> {
    ARM64.iter().filter_map(|name| guest(name)).collect()
}

/// One guest of the cache, if it is complete. Prints why it is missing; panics on a
/// missing guest when the cache is required.
pub fn guest(name: &str) -> Option<Guest> {
    let dir = cache_dir();
    let gdir = dir.join(name);
    let meta = std::fs::read(gdir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    match (gdir.join("complete").exists(), meta) {
        (true, Some(meta)) => Some(Guest {
            name: name.to_string(),
            dir: gdir,
            meta,
        }),
        _ => {
            let msg = format!(
                "real guest {name} is not in {} (run tests/real-guests/ensure-guests.sh)",
                dir.display()
            );
            assert!(!required(), "{msg}");
            eprintln!("SKIP: {msg}");
            None
        }
    }
}

/// `info registers -a` → per CPU, (register name as the readers name it, value).
pub fn info_registers(text: &str) -> Vec<Vec<(String, u64)>> {
    let mut cpus: Vec<Vec<(String, u64)>> = Vec::new();
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    for line in text.lines() {
        if line.starts_with("CPU#") {
            cpus.push(Vec::new());
            continue;
        }
        let Some(c) = cpus.last_mut() else { continue };
        // "RAX=... RBX=..." / "R8 =..." / "RIP=... RFL=..." / "CR0=... CR2=..." / "EFER=..."
        let l = line.replace(" =", "=");
        for tok in l.split_whitespace() {
            if let Some((k, v)) = tok.split_once('=') {
                let name = match k {
                    "PC" | "SP" | "PSTATE" => k.to_ascii_lowercase(),
                    k if k.starts_with('X') && k[1..].parse::<u32>().is_ok() => {
                        format!("x{}", k[1..].parse::<u32>().unwrap_or(0))
                    }
                    "RFL" => "rflags".to_string(),
                    "EFER" | "CR0" | "CR2" | "CR3" | "CR4" => k.to_ascii_lowercase(),
                    k if k.starts_with('R') && v.len() == 16 => k.to_ascii_lowercase(),
                    _ => continue,
                };
                if let Ok(x) = u64::from_str_radix(v, 16) {
                    c.push((name, x));
                }
            }
        }
        // "CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]"
        // "GDT=     fffffe0000001000 0000007f"
        let mut w = l.split_whitespace();
        if let Some(first) = w.next() {
            let Some((seg, rest)) = first.split_once('=') else {
                continue;
            };
            let seg = seg.to_ascii_lowercase();
            let fields: Vec<&str> = if rest.is_empty() {
                w.collect()
            } else {
                std::iter::once(rest).chain(w).collect()
            };
            match seg.as_str() {
                "es" | "cs" | "ss" | "ds" | "fs" | "gs" | "ldt" | "tr" if fields.len() >= 4 => {
                    c.push((format!("{seg}.selector"), hex(fields[0])));
                    c.push((format!("{seg}.base"), hex(fields[1])));
                    c.push((format!("{seg}.limit"), hex(fields[2])));
                    c.push((format!("{seg}.flags"), hex(fields[3])));
                }
                "gdt" | "idt" if fields.len() >= 2 => {
                    c.push((format!("{seg}.base"), hex(fields[0])));
                    c.push((format!("{seg}.limit"), hex(fields[1])));
                }
                _ => {}
            }
        }
    }
    cpus
}

/// Every register of QEMU's `info registers -a` (`text`) equals the one of the same CPU
/// in `cpus` (read from `what`), and the vCPU counts are equal.
pub fn assert_cpus_equal_info_registers(what: &str, cpus: &[dumpconv_core::CpuState], text: &str) {
    let want = info_registers(text);
    assert_eq!(cpus.len(), want.len(), "{what}: vCPU count");
    for (cpu, regs) in cpus.iter().zip(&want) {
        assert!(regs.len() > 30, "{what}: parsed {regs:?}");
        for (name, v) in regs {
            // `info registers` prints a segment's cached flags without their low
            // byte (base bits 23:16 of the descriptor: TR of CPU 1 has 0x03 there,
            // and QEMU's own CPU note keeps it, as we do)
            let got = if name.ends_with(".flags") {
                cpu.reg(name).map(|f| f & 0x00ff_ff00)
            } else {
                cpu.reg(name)
            };
            assert_eq!(
                got,
                Some(*v),
                "{what} cpu {}: {name} (info registers: {v:#x})",
                cpu.index
            );
        }
    }
}

/// Run a command, returning stdout; panics with stderr on failure.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The string gdb (`gdb`: "gdb" or "gdb-multiarch") prints at virtual address `vaddr` of
/// the ELF core `core`, read as architecture `arch` ("i386:x86-64", "i386", "aarch64").
pub fn gdb_string(gdb: &str, core: &Path, arch: &str, vaddr: u64) -> String {
    let out = run(std::process::Command::new(gdb)
        .arg("-batch")
        .arg("-nx")
        .arg("-ex")
        .arg(format!("set architecture {arch}"))
        .arg("-ex")
        .arg(format!("core-file {}", core.display()))
        .arg("-ex")
        .arg(format!("printf \"%s\", (char *){vaddr:#x}")));
    out.lines().last().unwrap_or("").trim_end().to_string()
}

/// Run crash (the host's) on `dump` with `vmlinux` and the commands `cmds`; returns its
/// output without the lines that name the dump file (so two dumps' sessions compare).
/// Panics when crash fails.
pub fn crash_session(vmlinux: &Path, dump: &Path, cmds: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("cmds");
    std::fs::write(&script, format!("{}\nquit\n", cmds.join("\n"))).unwrap();
    let out = std::process::Command::new("crash")
        .arg("-s")
        .arg("-i")
        .arg(&script)
        .arg(vmlinux)
        .arg(dump)
        .output()
        .expect("crash is installed (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "crash failed on {}: {}\n{text}",
        dump.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| !l.trim_start().starts_with("DUMPFILE:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Virtual page address -> file offset of every 4 KiB page an ELF's PT_LOADs hold.
pub fn load_pages(path: &Path) -> std::collections::HashMap<u64, u64> {
    let mut m = std::collections::HashMap::new();
    for h in dumpconv_formats::elf::read::read_load_headers(path).unwrap() {
        let mut off = 0;
        while off < h.filesz {
            m.insert(h.vaddr + off, h.offset + off);
            off += 4096;
        }
    }
    m
}

/// `v` is canonical for a `bits`-bit virtual address space (bits 63..bits-1 equal).
pub fn is_canonical(v: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64 == v
}
