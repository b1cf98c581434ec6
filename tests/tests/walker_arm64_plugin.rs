//! The AArch64 walker built as a run-time plugin (`plugins/aarch64/cdylib`,
//! `libdumpconv_aarch64_plugin.so`), loaded through the plugin ABI v2, must give what the
//! built-in gives: the same mappings and counters on synthetic guests of every granule
//! and VA size (with garbage and loops), the same mode, paging state, kernel start and
//! single-address translations, and the same mappings on the real arm64 guest when it
//! is cached.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use dumpconv_aarch64::Aarch64Walker;
use dumpconv_core::plugin::{loader, LoadedPlugin, PluginWalker};
use dumpconv_core::{Arch, ArchWalker, CpuState, MappingList, PhysicalMemory, WalkOptions};
use dumpconv_tests::synth_arm64::{Arm64Guest, Granule, AF, ATTR_NORMAL};

/// The cdylib built with the profile of this test, in this test's target directory
/// (`cargo build -p dumpconv-aarch64-plugin` first, a no-op when it is fresh).
fn plugin_path() -> PathBuf {
    built("dumpconv-aarch64-plugin", "libdumpconv_aarch64_plugin.so")
}

/// `file` of `package`, built with this test's profile into this test's target
/// directory (a no-op when fresh).
fn built(package: &str, file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // <target>/<profile>/deps/<test>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("cannot tell the profile from {}", exe.display()),
    };
    let target = profile_dir.parent().expect("target directory");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", package, "--profile", profile])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let out = profile_dir.join(file);
    assert!(out.is_file(), "{} was not built", out.display());
    out
}

fn load() -> Arc<PluginWalker> {
    match loader::load(&plugin_path()).expect("load the aarch64 plugin") {
        LoadedPlugin::Walker(w) => w,
        LoadedPlugin::Writer(_) => panic!("the aarch64 plugin is a writer"),
    }
}

/// Walk `cpu` with both walkers; mappings and counters must match (invalid-entry
/// counts do not cross the ABI).
fn same_walk(
    p: &PluginWalker,
    cpu: &CpuState,
    mem: &dyn PhysicalMemory,
    what: &str,
) -> MappingList {
    let opts = WalkOptions::default();
    let mut a = MappingList::new();
    let sa = Aarch64Walker
        .walk(cpu, mem, &opts, &mut a)
        .expect("built-in walk");
    let mut b = MappingList::new();
    let sb = p.walk(cpu, mem, &opts, &mut b).expect("plugin walk");
    assert_eq!(a, b, "{what}: mappings differ");
    assert_eq!(
        (
            sa.leaves,
            sa.leaves_outside_ram,
            sa.table_pages,
            sa.tables_outside_ram
        ),
        (
            sb.leaves,
            sb.leaves_outside_ram,
            sb.table_pages,
            sb.tables_outside_ram
        ),
        "{what}: counters differ"
    );
    assert_eq!(Aarch64Walker.mode_of(cpu), p.mode_of(cpu), "{what}: mode");
    assert_eq!(
        Aarch64Walker.paging_enabled(cpu),
        p.paging_enabled(cpu),
        "{what}: paging"
    );
    assert_eq!(
        Aarch64Walker.kernel_start(cpu),
        p.kernel_start(cpu),
        "{what}: kernel start"
    );
    a
}

#[test]
fn plugin_describes_itself() {
    let p = load();
    assert_eq!(p.name(), "aarch64");
    assert_eq!(p.arches(), &[Arch::AARCH64]);
    assert_eq!(p.modes(), Aarch64Walker.modes());
    assert_eq!(p.info().abi_major, 2);
}

#[test]
fn plugin_walks_like_the_builtin_on_synthetic_guests() {
    let p = load();
    for g in Granule::ALL {
        for &va in g.va_sizes() {
            let mut guest = Arm64Guest::simple(g, va);
            for half in 0..2 {
                for (i, (_, len)) in guest.leaf_sizes(half).into_iter().enumerate() {
                    let v = (i as u64 + 1) << (va - 3);
                    let phys = if len > 0x200_0000 { 0 } else { 0x200_0000 };
                    guest.map(half, v, phys, len, ATTR_NORMAL).expect("map");
                }
                // Garbage and a loop.
                let mid = 1u64 << (va - 1);
                guest
                    .raw_at(half, mid, 3, 0x80_0000 | 0b01 | AF)
                    .expect("raw");
                guest
                    .make_loop(half, mid + (1 << (va - 4)), 2, 0)
                    .expect("loop");
                guest
                    .table_at(half, mid + (1 << (va - 3)), 2, 0x10_0000_0000)
                    .expect("table outside RAM");
            }
            let cpu = guest.cpu(0);
            let mem = guest.memory();
            let what = format!("{g:?}/{va}");
            let list = same_walk(&p, &cpu, &mem, &what);
            assert!(!list.is_empty(), "{what}");
            // Single addresses: the plugin's translate, step by step.
            let opts = WalkOptions::default();
            for m in list.runs().iter().step_by(3).take(20) {
                let a = Aarch64Walker
                    .translate(&cpu, &mem, &opts, m.virt)
                    .expect("translate");
                let b = p
                    .translate(&cpu, &mem, &opts, m.virt)
                    .expect("plugin translate");
                assert_eq!(a.phys, b.phys, "{what} {:#x}", m.virt);
                assert_eq!(a.page_size, b.page_size, "{what} {:#x}", m.virt);
                assert_eq!(a.steps, b.steps, "{what} {:#x}", m.virt);
            }
            // The MMU off, and a CPU state without system registers.
            guest.mmu_on = false;
            same_walk(&p, &guest.cpu(0), &mem, &format!("{what} MMU off"));
            let bare = CpuState::new(0, Some(Arch::AARCH64)).with_reg("pc", 0x1000);
            assert!(!p.paging_enabled(&bare));
            assert!(!Aarch64Walker.paging_enabled(&bare));
        }
    }
}

#[test]
fn plugin_walks_like_the_builtin_on_the_real_guest() {
    let Some(g) = dumpconv_tests::guests::guest("arm64-4k") else {
        return;
    };
    let p = load();
    let cpus: Vec<CpuState> =
        serde_json::from_slice(&std::fs::read(g.file("cpu-state.json")).expect("cpu state"))
            .expect("parse cpu state");
    let (start, size) = g.ram_ranges()[0];
    let path = g.file(&format!("ram-{start:x}.raw"));
    let f = std::fs::File::open(&path).expect("open");
    let mem = dumpconv_core::SegmentMemory::new(
        vec![(path.clone(), Arc::new(f))],
        vec![dumpconv_core::Segment {
            range: dumpconv_core::PhysRange::with_len(start, size),
            source: dumpconv_core::SegmentSource::File { file: 0, offset: 0 },
        }],
    )
    .expect("memory");
    for c in &cpus {
        let list = same_walk(&p, c, &mem, &format!("arm64-4k cpu {}", c.index));
        assert!(list.mapped_bytes() > 100 << 20);
    }
}

/// Through the real binary, on the real guest: `--paging` on QEMU's arm64 ELF with the
/// CPUs' registers from `--cpu-state`, and on the pmemsave image with `--arch aarch64
/// --cr3 <swapper_pg_dir> --paging-mode 4k-48`, gives the same bytes with the plugin
/// (`--plugin ... --plugin-override`) as with the built-in, and says which walked.
///
/// The same on QEMU's ELF with no CPU state (QEMU's arm64 dumps have no system
/// registers): the kernel's root comes from VMCOREINFO, through the plugin's
/// `roots_from_vmcoreinfo` when it overrides the built-in. With the root given by hand,
/// the plugin's `cpu_from_root` builds the CPU.
#[test]
fn cli_plugin_gives_the_builtin_bytes_on_the_real_guest() {
    let Some(g) = dumpconv_tests::guests::guest("arm64-4k") else {
        return;
    };
    let lib = plugin_path();
    let bin = built("dumpconv", "dumpconv");
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = g.file("phys.elf");
    let state = g.file("cpu-state.json");
    let raw = g.file("ram.raw");
    // TTBR1_EL1's table address (swapper_pg_dir), without the ASID.
    let cpus: Vec<CpuState> =
        serde_json::from_slice(&std::fs::read(&state).expect("cpu state")).expect("cpu state");
    let root = format!(
        "{:#x}",
        cpus[0].reg("ttbr1_el1").expect("ttbr1_el1") & 0xFFFF_FFFF_F000
    );
    let cases: [(&str, Vec<&std::ffi::OsStr>); 3] = [
        (
            "cpu-state",
            vec!["--cpu-state".as_ref(), state.as_os_str(), input.as_os_str()],
        ),
        ("vmcoreinfo", vec![input.as_os_str()]),
        (
            "raw-root",
            vec![
                "--arch".as_ref(),
                "aarch64".as_ref(),
                "--cr3".as_ref(),
                root.as_ref(),
                "--paging-mode".as_ref(),
                "4k-48".as_ref(),
                raw.as_os_str(),
            ],
        ),
    ];
    for (name, extra) in cases {
        let mut outs = Vec::new();
        for plugin in [false, true] {
            let out = tmp.path().join(format!("{name}-{plugin}.elf"));
            let mut cmd = Command::new(&bin);
            cmd.env_remove("DUMPCONV_PLUGIN_PATH")
                .env("XDG_DATA_HOME", "/nonexistent");
            if plugin {
                cmd.arg("--plugin").arg(&lib).arg("--plugin-override");
            }
            let o = cmd
                .args(["--paging", "-q", "-v"])
                .args(&extra)
                .arg("-o")
                .arg(&out)
                .output()
                .expect("run dumpconv");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{name} plugin={plugin}: {err}");
            let origin = if plugin {
                lib.display().to_string()
            } else {
                "built-in".to_string()
            };
            assert!(
                err.contains(&format!("walker aarch64 ({origin})")),
                "{name} plugin={plugin}: {err}"
            );
            if name == "vmcoreinfo" {
                assert!(
                    err.contains("using the kernel's page-table root from VMCOREINFO"),
                    "{name} plugin={plugin}: {err}"
                );
            }
            outs.push(std::fs::read(&out).expect("read output"));
        }
        assert!(outs[0].len() > 512 << 20, "{name}: output too small");
        assert!(
            outs[0] == outs[1],
            "{name}: the plugin's output differs from the built-in's"
        );
    }
}

/// `cpu_from_root` and `roots_from_vmcoreinfo` cross the ABI: the plugin builds the
/// built-in's CPU for every mode, refuses what the built-in refuses, and finds the
/// built-in's root in VMCOREINFO (or none where it finds none).
#[test]
fn plugin_builds_cpus_like_the_builtin() {
    let p = load();
    for mode in Aarch64Walker.modes() {
        for root in [0u64, 0x4123_4000, 0x8_0000_1000] {
            let b = Aarch64Walker.cpu_from_root(Arch::AARCH64, mode, root);
            let q = p.cpu_from_root(Arch::AARCH64, mode, root);
            match (b, q) {
                (Ok(b), Ok(q)) => assert_eq!(b.regs, q.regs, "{mode} {root:#x}"),
                (Err(_), Err(e)) => assert!(e.to_string().contains("aarch64"), "{e}"),
                (b, q) => panic!("{mode} {root:#x}: built-in {b:?}, plugin {q:?}"),
            }
        }
    }
    assert!(p.cpu_from_root(Arch::AARCH64, "8k-48", 0).is_err());
    let vi = |s: &str| dumpconv_core::VmcoreInfo::parse(s.as_bytes());
    for text in [
        "OSRELEASE=6.1.0-28-arm64\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffa3c1a2f4b000\n\
         NUMBER(kimage_voffset)=0xffffa3c0e1e00000\nNUMBER(VA_BITS)=48\n\
         NUMBER(TCR_EL1_T1SZ)=16\n",
        "PAGESIZE=65536\nSYMBOL(swapper_pg_dir)=ffff800011230000\n\
         NUMBER(kimage_voffset)=0xffff7fffd0000000\nNUMBER(VA_BITS)=52\nNUMBER(TCR_EL1_T1SZ)=16\n",
        "PAGESIZE=4096\n",
    ] {
        let v = vi(text);
        let b = Aarch64Walker.roots_from_vmcoreinfo(Arch::AARCH64, &v);
        let q = p
            .try_roots_from_vmcoreinfo(Arch::AARCH64, &v)
            .expect("no plugin error");
        assert_eq!(b.map(|c| c.regs), q.map(|c| c.regs), "{text}");
    }
}
