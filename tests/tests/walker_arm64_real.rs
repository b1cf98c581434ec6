//! The AArch64 walker on the real arm64 guest (Debian 12's arm64 kernel under
//! qemu-system-aarch64, KASLR on; `tests/real-guests`), against QEMU's own MMU: the
//! gdbstub samples stored with the guest were read through the stopped vCPUs (kernel
//! text, data, the linear map, vmemmap, vmalloc, modules, user pages through each CPU's
//! TTBR0_EL1, and addresses QEMU could not read). Every sample must read the same bytes
//! through our walk of the pmemsave image, and every unreadable one must be unmapped.
//!
//! The CPUs come from the guest's `cpu-state.json` (the registers QEMU's monitor showed,
//! since its arm64 dumps carry no system registers); the kernel root is also derived
//! from VMCOREINFO and must equal TTBR1_EL1's table address.
//!
//! Skips when the guest is not cached, unless DUMPCONV_REQUIRE_GUESTS=1.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use dumpconv_aarch64::Aarch64Walker;
use dumpconv_core::{
    build_view, Arch, ArchWalker, CpuState, MappingList, PhysRange, Segment, SegmentMemory,
    SegmentSource, ViewPolicy, VmcoreInfo, WalkOptions,
};

struct RealGuest {
    dir: PathBuf,
    cpus: Vec<CpuState>,
    /// (start, size) of the single RAM range and the pmemsave file of it.
    ram: (u64, u64, PathBuf),
}

fn guest() -> Option<RealGuest> {
    let g = dumpconv_tests::guests::guest("arm64-4k")?;
    let dir = g.file("");
    let cpus: Vec<CpuState> =
        serde_json::from_slice(&std::fs::read(dir.join("cpu-state.json")).expect("cpu-state.json"))
            .expect("parse cpu-state.json");
    let ranges = g.ram_ranges();
    assert_eq!(ranges.len(), 1, "one RAM range");
    let (start, size) = ranges[0];
    let raw = dir.join(format!("ram-{start:x}.raw"));
    assert!(raw.is_file(), "{} missing", raw.display());
    Some(RealGuest {
        dir,
        cpus,
        ram: (start, size, raw),
    })
}

impl RealGuest {
    fn memory(&self) -> SegmentMemory {
        let (start, size, path) = &self.ram;
        let f = File::open(path).expect("open pmemsave image");
        SegmentMemory::new(
            vec![(path.clone(), Arc::new(f))],
            vec![Segment {
                range: PhysRange::with_len(*start, *size),
                source: SegmentSource::File { file: 0, offset: 0 },
            }],
        )
        .expect("memory")
    }

    fn read_phys(&self, phys: u64, len: usize) -> Option<Vec<u8>> {
        let (start, size, path) = &self.ram;
        if phys < *start || phys + len as u64 > start + size {
            return None;
        }
        let mut buf = vec![0u8; len];
        File::open(path)
            .expect("open")
            .read_exact_at(&mut buf, phys - start)
            .expect("read");
        Some(buf)
    }
}

/// (virt, bytes or None, label) of each gdbstub sample.
fn samples(dir: &std::path::Path) -> Vec<(u64, Option<Vec<u8>>, String)> {
    let text = std::fs::read_to_string(dir.join("gdbstub-samples.txt")).expect("samples");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let va = f.next().expect("address");
            let va = u64::from_str_radix(va.trim_start_matches("0x"), 16).expect("hex address");
            let bytes = f.next().expect("bytes");
            let bytes = (bytes != "-").then(|| {
                (0..bytes.len() / 2)
                    .map(|i| u8::from_str_radix(&bytes[2 * i..2 * i + 2], 16).expect("hex byte"))
                    .collect()
            });
            (va, bytes, f.next().unwrap_or("").to_string())
        })
        .collect()
}

/// The CPU a sample was read through: "user:cpu=N:..." names it, the rest used CPU 0.
fn sample_cpu(label: &str) -> usize {
    label
        .strip_prefix("user:cpu=")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn gdbstub_samples_read_the_same_through_our_walk() {
    let Some(g) = guest() else { return };
    let mem = g.memory();
    let opts = WalkOptions::default();
    let walks: Vec<MappingList> = g
        .cpus
        .iter()
        .map(|c| {
            assert_eq!(Aarch64Walker.mode_of(c).as_deref(), Some("4k-48"));
            let mut out = MappingList::new();
            let stats = Aarch64Walker.walk(c, &mem, &opts, &mut out).expect("walk");
            assert!(stats.leaves > 10_000, "cpu {}: {stats:?}", c.index);
            out
        })
        .collect();
    let samples = samples(&g.dir);
    assert!(samples.len() > 300, "{} samples", samples.len());
    let (mut mapped, mut unmapped) = (0, 0);
    for (va, bytes, label) in &samples {
        let cpu = sample_cpu(label);
        let phys = walks[cpu].translate(*va);
        match bytes {
            Some(b) => {
                let p = phys.unwrap_or_else(|| {
                    panic!("{va:#x} ({label}): QEMU reads it, we do not map it")
                });
                let ours = g.read_phys(p, b.len());
                assert_eq!(ours.as_ref(), Some(b), "{va:#x} ({label}) -> {p:#x}");
                // translate() through the walker gives the same address.
                let t = Aarch64Walker
                    .translate(&g.cpus[cpu], &mem, &opts, *va)
                    .expect("translate");
                assert_eq!(t.phys, Some(p), "{va:#x}");
                // L0..L3 for a page, one level less per block size (2 MiB, 1 GiB).
                let levels = match t.page_size {
                    Some(0x1000) => 4,
                    Some(0x20_0000) => 3,
                    Some(0x4000_0000) => 2,
                    other => panic!("{va:#x}: page size {other:?}"),
                };
                assert_eq!(t.steps.len(), levels, "{va:#x}: {t:?}");
                assert_eq!(t.steps[0].level, "L0");
                mapped += 1;
            }
            None => {
                assert_eq!(
                    phys, None,
                    "{va:#x} ({label}): QEMU cannot read it, we map it"
                );
                unmapped += 1;
            }
        }
    }
    eprintln!("{mapped} mapped and {unmapped} unmapped gdbstub samples agree");
    assert!(mapped > 300 && unmapped > 0);
}

#[test]
fn vmcoreinfo_gives_the_kernel_root() {
    let Some(g) = guest() else { return };
    let vi = VmcoreInfo::parse(&std::fs::read(g.dir.join("vmcoreinfo.txt")).expect("vmcoreinfo"));
    let c = Aarch64Walker
        .roots_from_vmcoreinfo(Arch::AARCH64, &vi)
        .expect("root from VMCOREINFO");
    let ttbr1 = g.cpus[0].reg("ttbr1_el1").expect("ttbr1_el1");
    // Same table (the CPU's TTBR1 also holds an ASID).
    assert_eq!(c.reg("ttbr1_el1"), Some(ttbr1 & 0xFFFF_FFFF_FFFE));
    assert_eq!(Aarch64Walker.mode_of(&c).as_deref(), Some("4k-48"));
    // Its walk is the kernel half of CPU 0's.
    let mem = g.memory();
    let opts = WalkOptions::default();
    let mut kernel = MappingList::new();
    Aarch64Walker
        .walk(&c, &mem, &opts, &mut kernel)
        .expect("walk");
    let mut cpu0 = MappingList::new();
    Aarch64Walker
        .walk(&g.cpus[0], &mem, &opts, &mut cpu0)
        .expect("walk");
    let high: MappingList = cpu0
        .runs()
        .iter()
        .filter(|m| m.virt >> 63 == 1)
        .copied()
        .collect();
    assert_eq!(kernel, high);
    // The multi-CPU view keeps CPU 0's user half and the shared kernel half.
    let (view, _) =
        build_view(&Aarch64Walker, &g.cpus, &mem, &opts, ViewPolicy::default()).expect("view");
    assert_eq!(view, cpu0);
}

/// `dumpconv --paging` on QEMU's arm64 ELF (no system registers: the root comes from
/// VMCOREINFO) writes an ELF in which gdb-multiarch reads `linux_banner` at its
/// System.map address plus the KASLR offset, and the banner is the guest's.
#[test]
fn gdb_multiarch_reads_linux_banner_from_our_paging_elf() {
    let Some(g) = dumpconv_tests::guests::guest("arm64-4k") else {
        return;
    };
    if Command::new("gdb-multiarch")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("DUMPCONV_REQUIRE_GUESTS").as_deref() != Ok("1"),
            "gdb-multiarch missing"
        );
        eprintln!("SKIP: gdb-multiarch not installed");
        return;
    }
    let bin = dumpconv_bin();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("paging.elf");
    let o = Command::new(&bin)
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .args(["--paging", "-q"])
        .arg(g.file("phys.elf"))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run dumpconv");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vi = VmcoreInfo::parse(&std::fs::read(g.file("vmcoreinfo.txt")).expect("vmcoreinfo"));
    let addr = g
        .symbol("linux_banner")
        .expect("linux_banner in System.map")
        + vi.kernel_offset().expect("KERNELOFFSET");
    let r = Command::new("gdb-multiarch")
        .args(["-batch", "-nx", "-ex", "set architecture aarch64", "-ex"])
        .arg(format!("core-file {}", out.display()))
        .arg("-ex")
        .arg(format!("x/s {addr:#x}"))
        .output()
        .expect("run gdb-multiarch");
    let text = String::from_utf8_lossy(&r.stdout);
    let banner = g.banner();
    assert!(
        text.contains(banner.trim_end()),
        "gdb-multiarch did not read the banner at {addr:#x}:\n{text}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// The dumpconv binary of this test's profile (built first; a no-op when fresh).
fn dumpconv_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("profile directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("cannot tell the profile from {}", exe.display()),
    };
    let target = profile_dir.parent().expect("target directory");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "dumpconv", "--profile", profile])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p dumpconv failed");
    profile_dir.join("dumpconv")
}

/// QEMU's arm64 ELF and kdump read the same as pmemsave; our kdump of the arm64 guest
/// has an "aarch64" utsname machine (QEMU writes "Unknown") and 4 KiB blocks, is read
/// back as aarch64 with both CPUs' registers, and holds the same RAM.
#[test]
fn arm64_dumps_in_and_out() {
    let Some(g) = guest() else { return };
    let bin = dumpconv_bin();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (start, size, raw) = &g.ram;
    let want = std::fs::read(raw).expect("pmemsave image");
    let run = |args: &[&std::ffi::OsStr]| {
        let o = Command::new(&bin)
            .env_remove("DUMPCONV_PLUGIN_PATH")
            .args(args)
            .output()
            .expect("run dumpconv");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    let ours = tmp.path().join("ours.kdump");
    run(&[
        "-q".as_ref(),
        g.dir.join("phys.elf").as_os_str(),
        "-o".as_ref(),
        ours.as_os_str(),
    ]);
    let info: serde_json::Value = serde_json::from_slice(&run(&[
        "info".as_ref(),
        "--json".as_ref(),
        ours.as_os_str(),
    ]))
    .expect("info json");
    assert_eq!(info["arch"], "aarch64", "{info}");
    assert_eq!(info["details"]["machine"], "aarch64", "{info}");
    assert_eq!(info["details"]["block size"], "4096", "{info}");
    assert_eq!(info["cpus"].as_array().map(Vec::len), Some(2), "{info}");
    assert_eq!(
        info["cpus"][1]["regs"]["pc"],
        g.cpus[1]
            .reg("pc")
            .map(|v| format!("{v:#x}"))
            .unwrap_or_default()
    );
    for input in [
        g.dir.join("phys.elf"),
        g.dir.join("kdump-zlib.rearranged.kdump"),
        ours.clone(),
    ] {
        let out = tmp.path().join("back.raw");
        run(&[
            "-q".as_ref(),
            input.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        let f = File::open(&out).expect("raw output");
        let mut got = vec![0u8; *size as usize];
        f.read_exact_at(&mut got, *start).expect("read raw output");
        assert!(
            got == want,
            "{}: RAM differs from pmemsave",
            input.display()
        );
        std::fs::remove_file(&out).expect("remove raw output");
        let info: serde_json::Value = serde_json::from_slice(&run(&[
            "info".as_ref(),
            "--json".as_ref(),
            input.as_os_str(),
        ]))
        .expect("info json");
        assert_eq!(info["arch"], "aarch64", "{}", input.display());
    }
}

/// drgn (when installed) opens our arm64 paging ELF with the guest's debug vmlinux:
/// `init_uts_ns` gives the release and the task list starts with init.
#[test]
fn drgn_reads_our_arm64_paging_elf() {
    let Some(g) = guest() else { return };
    let vmlinux = g.dir.join("vmlinux");
    if Command::new("drgn").arg("--version").output().is_err() || !vmlinux.is_file() {
        eprintln!("SKIP: drgn or the guest's vmlinux missing");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("paging.elf");
    let o = Command::new(dumpconv_bin())
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .args(["--paging", "-q"])
        .arg(g.dir.join("phys.elf"))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run dumpconv");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = "from drgn.helpers.linux.pid import for_each_task\n\
                  print(prog['init_uts_ns'].name.release.string_().decode())\n\
                  print(' '.join(t.comm.string_().decode() for t in for_each_task(prog)))\n";
    let r = Command::new("drgn")
        .arg("-q")
        .arg("-c")
        .arg(&out)
        .arg("-s")
        .arg(&vmlinux)
        .arg("-e")
        .arg(script)
        .output()
        .expect("run drgn");
    let text = String::from_utf8_lossy(&r.stdout);
    let release = std::fs::read_to_string(g.dir.join("meta.json"))
        .ok()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|m| m["kernel_release"].as_str().map(str::to_string))
        .expect("kernel_release in meta.json");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(release.as_str()),
        "drgn: {text}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let tasks = lines.next().unwrap_or("");
    assert!(tasks.starts_with("init kthreadd"), "drgn tasks: {tasks}");
}
