//! In-process round trips through the ABI: a walker or writer exported with
//! `plugin_entry!`, wrapped back by the host adapter, must behave like the original.

#![allow(unsafe_code)]
use std::ffi::c_char;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::abi;
use super::host::{wrap_descriptor, LoadedPlugin};
use crate::{
    Arch, ArchWalker, CpuState, DumpPlan, DumpWriter, Error, Mapping, MappingList, NoProgress,
    PhysRange, PhysicalMemory, Progress, Result, Segment, SegmentMemory, SegmentSource, Sink,
    StreamSink, WalkOptions, WalkStats,
};

/// 64 KiB of RAM at 0x10000 and 16 KiB at 0x40000, filled with a pattern.
fn memory() -> SegmentMemory {
    let data: Vec<u8> = (0..0x14000u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&data).unwrap();
    SegmentMemory::new(
        vec![(PathBuf::from("mem"), Arc::new(f))],
        vec![
            Segment {
                range: PhysRange::new(0x10000, 0x20000),
                source: SegmentSource::File { file: 0, offset: 0 },
            },
            Segment {
                range: PhysRange::new(0x40000, 0x44000),
                source: SegmentSource::File {
                    file: 0,
                    offset: 0x10000,
                },
            },
        ],
    )
    .unwrap()
}

/// A walker that maps every RAM page at virt = phys + 0xffff_8000_0000_0000, counts
/// the RAM ranges it was told about, reads one byte of each page, warns once, and
/// fails, panics or strays outside RAM on request (chosen by CR3).
struct ToyWalker;

const CR3_OK: u64 = 0x1000;
const CR3_PANIC: u64 = 0x2000;
const CR3_OUTSIDE: u64 = 0x3000;
const CR3_ERROR: u64 = 0x4000;
const CR3_BAD_READ: u64 = 0x5000;

impl ArchWalker for ToyWalker {
    fn name(&self) -> &str {
        "toywalk"
    }
    fn arches(&self) -> &[Arch] {
        &[Arch::X86_64, Arch::I386]
    }
    fn modes(&self) -> &[&str] {
        &["4level", "pae"]
    }
    fn walk(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        _opts: &WalkOptions,
        out: &mut MappingList,
    ) -> Result<WalkStats> {
        let mut stats = WalkStats::default();
        match cpu.reg("cr3") {
            Some(CR3_PANIC) => panic!("toy walker panics"),
            Some(CR3_ERROR) => {
                return Err(Error::Walk {
                    cpu: cpu.index,
                    msg: "bad root".into(),
                })
            }
            Some(CR3_OUTSIDE) => out.push(Mapping {
                virt: 0,
                phys: 0x30000,
                len: 0x1000,
            }),
            Some(CR3_BAD_READ) => {
                let mut b = [0u8; 1];
                // Ignore the failure: the host must fail the call anyway.
                let _ = mem.read_at(0x30000, &mut b);
            }
            _ => {}
        }
        for r in mem.ranges() {
            let mut p = r.start;
            while p < r.end {
                let mut b = [0u8; 1];
                mem.read_at(p, &mut b)?;
                stats.table_pages += 1;
                out.push(Mapping {
                    virt: p + 0xffff_8000_0000_0000,
                    phys: p,
                    len: 0x1000,
                });
                stats.leaves += 1;
                p += 0x1000;
            }
        }
        stats.tables_outside_ram = mem.ranges().len() as u64;
        stats
            .warnings
            .push(format!("walked {} ranges", mem.ranges().len()));
        Ok(stats)
    }
}

crate::plugin_entry!(fn toy_walker_entry, walker: ToyWalker, version: "0.1.0", description: "toy walker");
crate::plugin_entry!(fn toy_walker_v1_entry, walker_v1: ToyWalker, version: "0.1.0", description: "toy walker, ABI 1");

/// A walker described by data for the engine, on an architecture the host knows nothing
/// about (riscv64 here, with a made-up two-level MMU): its CPU state (register "root"),
/// walk, translation, mode and kernel half must cross ABI version 2 unchanged.
struct EngineToy;

static TOY_LEVELS: [crate::paging::Level; 2] = [
    crate::paging::Level::new("TOP", 9, 21).with_leaf(Some(crate::paging::BitTest::set(2))),
    crate::paging::Level::new("BOTTOM", 9, 12)
        .with_table(None)
        .with_leaf(Some(crate::paging::BitTest::ALWAYS)),
];

static TOY_MMU: crate::paging::MmuDesc = crate::paging::MmuDesc {
    name: "toy2",
    entry_bytes: 8,
    big_endian: false,
    levels: std::borrow::Cow::Borrowed(&TOY_LEVELS),
    valid: crate::paging::BitTest::set(1),
    root_mask: !0xFFF,
    table_mask: 0x0000_FFFF_FFFF_F000,
    leaf_mask: 0x0000_FFFF_FFFF_F000,
    va_form: crate::paging::VaForm::Ones,
};

impl ArchWalker for EngineToy {
    fn name(&self) -> &str {
        "enginetoy"
    }
    fn arches(&self) -> &[Arch] {
        &[Arch::RISCV64]
    }
    fn modes(&self) -> &[&str] {
        &["bare", "toy2"]
    }
    fn regime(&self, cpu: &CpuState, _opts: &WalkOptions) -> Result<crate::Regime> {
        let root = cpu.reg("root").ok_or_else(|| Error::Walk {
            cpu: cpu.index,
            msg: "no root".into(),
        })?;
        if root == 0 {
            return Ok(crate::Regime::Off);
        }
        Ok(crate::Regime::Paging {
            mode: "toy2".into(),
            spaces: vec![crate::AddressSpace {
                range: crate::VirtRange::from(0xFFFF_FFC0_0000_0000),
                root,
                root_name: "ROOT",
                table_mask: u64::MAX,
                desc: std::borrow::Cow::Borrowed(&TOY_MMU),
            }],
        })
    }
    fn kernel_start(&self, _cpu: &CpuState) -> u64 {
        0xFFFF_FFE0_0000_0000
    }
    fn cpu_from_root(&self, arch: Arch, mode: &str, root: u64) -> Result<CpuState> {
        match mode {
            "toy2" => Ok(CpuState::new(0, Some(arch))
                .with_reg("root", root)
                .with_reg("cs.selector", 0x10)),
            "bare" => Ok(CpuState::new(0, Some(arch)).with_reg("root", 0)),
            _ => Err(Error::Unsupported(format!("no mode {mode}"))),
        }
    }
    fn roots_from_vmcoreinfo(
        &self,
        arch: Arch,
        v: &crate::vmcoreinfo::VmcoreInfo,
    ) -> Option<CpuState> {
        let root = v.symbol("toy_root")?;
        Some(CpuState::new(0, Some(arch)).with_reg("root", root))
    }
}

crate::plugin_entry!(fn engine_toy_entry, walker: EngineToy, version: "1", description: "engine toy");

/// A writer that writes a header, the notes, every range's bytes, a hole, then patches
/// the header with write_at.
struct ToyWriter;

impl DumpWriter for ToyWriter {
    fn name(&self) -> &str {
        "toyout"
    }
    fn description(&self) -> &str {
        "toy output"
    }
    fn extensions(&self) -> &[&str] {
        &["toy", "ty"]
    }
    fn write(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<()> {
        if plan.option("fail") == Some("panic") {
            panic!("toy writer panics");
        }
        progress.start("writing", plan.total_bytes());
        sink.write_all(b"TOY0")?;
        sink.write_all(&plan.page_size.to_le_bytes())?;
        sink.write_all(&[plan.arch.elf_machine() as u8, sink.is_seekable() as u8])?;
        for (k, v) in &plan.options {
            sink.write_all(format!("{k}={v};").as_bytes())?;
        }
        for n in &plan.notes {
            sink.write_all(&n.name)?;
            sink.write_all(&n.n_type.to_le_bytes())?;
            sink.write_all(&n.desc)?;
        }
        for c in &plan.cpus {
            sink.write_all(&c.reg("cr3").unwrap_or(7).to_le_bytes())?;
            sink.write_all(&c.reg("a20_mask").unwrap_or(9).to_le_bytes())?;
        }
        if let Some(v) = &plan.vmcoreinfo {
            sink.write_all(v.raw())?;
        }
        if let Some(m) = &plan.mappings {
            for r in m.runs() {
                sink.write_all(&r.virt.to_le_bytes())?;
            }
        }
        for r in &plan.ranges {
            let mut buf = vec![0u8; r.len() as usize];
            mem.read_at(r.start, &mut buf)?;
            sink.write_all(&buf)?;
            progress.advance(r.len());
        }
        sink.skip(100)?;
        let end = sink.position();
        if sink.is_seekable() {
            sink.write_at(0, b"TOY1")?;
        }
        sink.write_all(&end.to_le_bytes())?;
        progress.warn("toy warning");
        progress.finish();
        sink.finish()
    }
}

crate::plugin_entry!(fn toy_writer_entry, writer: ToyWriter, version: "2.0", description: "toy writer");

fn load(entry: extern "C" fn() -> *const abi::Plugin) -> LoadedPlugin {
    // SAFETY: an entry generated by plugin_entry! in this test binary.
    unsafe { wrap_descriptor(Path::new("in-process"), entry()) }.unwrap()
}

/// An x86 CPU in 4-level paging (CR0.PG|PE, CR4.PSE|PAE, EFER.LME|LMA) with root `cr3`.
fn cpu(cr3: u64) -> CpuState {
    CpuState::new(0, None)
        .with_reg("cr0", 0x8000_0001)
        .with_reg("cr3", cr3)
        .with_reg("cr4", 0x30)
        .with_reg("efer", 0x500)
}

#[test]
fn walker_round_trip_is_identical() {
    let LoadedPlugin::Walker(w) = load(toy_walker_entry) else {
        panic!("not a walker")
    };
    assert_eq!(w.info().name, "toywalk");
    assert_eq!(w.info().version, "0.1.0");
    assert_eq!(w.modes(), ToyWalker.modes());
    let mem = memory();
    let opts = WalkOptions::default();
    let (mut a, mut b) = (MappingList::new(), MappingList::new());
    let sa = ToyWalker.walk(&cpu(CR3_OK), &mem, &opts, &mut a).unwrap();
    let sb = w.walk(&cpu(CR3_OK), &mem, &opts, &mut b).unwrap();
    assert_eq!(a.runs(), b.runs());
    assert_eq!(sa, sb, "stats and warnings cross the ABI unchanged");
    assert_eq!(
        sb.tables_outside_ram, 2,
        "the RAM ranges reached the plugin"
    );
}

#[test]
fn v1_walker_round_trip_is_identical() {
    let LoadedPlugin::Walker(w) = load(toy_walker_v1_entry) else {
        panic!("not a walker")
    };
    assert_eq!(w.info().abi_major, 1);
    assert_eq!(w.modes(), ToyWalker.modes());
    assert_eq!(w.arches(), [Arch::X86_64, Arch::I386]);
    assert_eq!(w.listed_modes(), ["4level", "pae"]);
    let mem = memory();
    let opts = WalkOptions::default();
    let (mut a, mut b) = (MappingList::new(), MappingList::new());
    let sa = ToyWalker.walk(&cpu(CR3_OK), &mem, &opts, &mut a).unwrap();
    let sb = w.walk(&cpu(CR3_OK), &mem, &opts, &mut b).unwrap();
    assert_eq!(a.runs(), b.runs());
    assert_eq!(sa, sb);
    // The x86 registers crossed as v1's CR3 (the toy panics on this one).
    let e = w
        .walk(&cpu(CR3_PANIC), &mem, &opts, &mut MappingList::new())
        .unwrap_err();
    assert!(e.to_string().contains("toy walker panics"), "{e}");
    // v1 CPUs: the host derives the mode from CR0/CR4/EFER.
    assert_eq!(w.mode_of(&cpu(CR3_OK)).as_deref(), Some("4level"));
    assert!(w.paging_enabled(&cpu(CR3_OK)));
    assert!(!w.paging_enabled(&CpuState::new(0, None).with_reg("cr0", 1)));
}

#[test]
fn v2_engine_walker_crosses_the_abi_unchanged() {
    let LoadedPlugin::Walker(w) = load(engine_toy_entry) else {
        panic!("not a walker")
    };
    assert_eq!(w.info().abi_major, 2);
    assert_eq!(w.arches(), [Arch::RISCV64]);
    assert_eq!(w.modes(), ["bare", "toy2"]);
    let mem = memory();
    let opts = WalkOptions::default();
    // The RAM pattern is the page tables: garbage, but the same garbage both ways.
    for root in [0x10000u64, 0x11000, 0x40000, 0x43000] {
        let c = CpuState::new(3, Some(Arch::RISCV64)).with_reg("root", root);
        let (mut a, mut b) = (MappingList::new(), MappingList::new());
        let sa = EngineToy.walk(&c, &mem, &opts, &mut a).unwrap();
        let sb = w.walk(&c, &mem, &opts, &mut b).unwrap();
        assert_eq!(a.runs(), b.runs(), "root {root:#x}");
        assert_eq!(
            (sa.leaves, sa.table_pages, sa.leaves_outside_ram),
            (sb.leaves, sb.table_pages, sb.leaves_outside_ram)
        );
        assert_eq!(w.mode_of(&c).as_deref(), Some("toy2"));
        assert!(w.paging_enabled(&c));
        assert_eq!(w.kernel_start(&c), 0xFFFF_FFE0_0000_0000);
        for v in [
            0xFFFF_FFC0_0000_0000u64,
            0xFFFF_FFC0_0020_1000,
            0xFFFF_FFFF_FFE0_0123,
            0x1000,
        ] {
            let ta = EngineToy.translate(&c, &mem, &opts, v).unwrap();
            let tb = w.translate(&c, &mem, &opts, v).unwrap();
            assert_eq!(ta, tb, "root {root:#x} virt {v:#x}");
        }
        if !a.is_empty() {
            // A run that came out: translate agrees with it.
            let m = a.runs()[0];
            let t = w.translate(&c, &mem, &opts, m.virt).unwrap();
            assert_eq!(t.phys, Some(m.phys));
            assert!(t
                .steps
                .iter()
                .all(|s| s.level == "TOP" || s.level == "BOTTOM"));
        }
    }
    // Paging off, and registers that do not say: off / unknown.
    let off = CpuState::new(0, Some(Arch::RISCV64)).with_reg("root", 0);
    assert!(!w.paging_enabled(&off));
    assert_eq!(w.mode_of(&off).as_deref(), Some("off"));
    let none = CpuState::new(0, Some(Arch::RISCV64));
    assert!(!w.paging_enabled(&none));
    assert_eq!(w.mode_of(&none), None);
}

#[test]
fn walker_errors_panics_and_strays_are_plugin_errors() {
    let LoadedPlugin::Walker(w) = load(toy_walker_entry) else {
        panic!("not a walker")
    };
    let mem = memory();
    let opts = WalkOptions::default();
    let run = |cr3| {
        w.walk(&cpu(cr3), &mem, &opts, &mut MappingList::new())
            .unwrap_err()
    };
    for (cr3, wants) in [
        (CR3_PANIC, &["DUMPCONV_ERR_PANIC", "toy walker panics"][..]),
        (CR3_ERROR, &["DUMPCONV_ERR_INVALID", "bad root"][..]),
        (CR3_OUTSIDE, &["emit_mapping", "not RAM"][..]),
        (
            CR3_BAD_READ,
            &["read_phys", "0x30000", "DUMPCONV_ERR_IO", "unreadable"][..],
        ),
    ] {
        let e = run(cr3);
        let text = e.to_string();
        assert!(matches!(e, Error::Plugin { .. }), "{text}");
        assert!(
            text.contains("in-process") && text.contains("toywalk"),
            "{text}"
        );
        for want in wants {
            assert!(text.contains(want), "{cr3:#x}: {text:?} lacks {want:?}");
        }
    }
}

fn plan(mappings: bool) -> DumpPlan {
    let mut cpu1 = cpu(0x1234);
    cpu1.set_reg("a20_mask", !(1 << 20));
    DumpPlan {
        filter: None,
        arch: Arch::X86_64,
        page_size: 4096,
        ranges: vec![
            PhysRange::new(0x10000, 0x12000),
            PhysRange::new(0x40000, 0x44000),
        ],
        mappings: mappings.then(|| {
            [Mapping {
                virt: 0xffff_0000,
                phys: 0x10000,
                len: 0x2000,
            }]
            .into_iter()
            .collect()
        }),
        notes: vec![crate::Note::new("CORE", 1, vec![1, 2, 3])],
        cpus: vec![cpu(0x5000), cpu1],
        vmcoreinfo: Some(crate::VmcoreInfo::parse(b"OSRELEASE=6.1\nPAGESIZE=4096\n")),
        options: [("compress".to_string(), "zstd".to_string())]
            .into_iter()
            .collect(),
    }
}

fn write_file(w: &dyn DumpWriter, plan: &DumpPlan, mem: &dyn PhysicalMemory) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out");
    let mut s = crate::FileSink::new(std::fs::File::create(&p).unwrap(), &p);
    w.write(plan, mem, &mut s, &NoProgress).unwrap();
    std::fs::read(&p).unwrap()
}

#[test]
fn writer_round_trip_is_identical() {
    let LoadedPlugin::Writer(w) = load(toy_writer_entry) else {
        panic!("not a writer")
    };
    assert_eq!(w.extensions(), &["toy", "ty"]);
    assert_eq!(w.description(), "toy writer");
    let mem = memory();
    for mappings in [false, true] {
        let p = plan(mappings);
        let a = write_file(&ToyWriter, &p, &mem);
        let b = write_file(w.as_ref(), &p, &mem);
        assert_eq!(a, b, "file output, mappings={mappings}");
        assert_eq!(&a[..4], b"TOY1");
        // And on a stream.
        let mut sa = StreamSink::new(Vec::new(), "a");
        let mut sb = StreamSink::new(Vec::new(), "b");
        ToyWriter.write(&p, &mem, &mut sa, &NoProgress).unwrap();
        w.write(&p, &mem, &mut sb, &NoProgress).unwrap();
        assert_eq!(sa.into_inner(), sb.into_inner());
    }
}

#[test]
fn writer_panic_is_reported() {
    let LoadedPlugin::Writer(w) = load(toy_writer_entry) else {
        panic!("not a writer")
    };
    let mut p = plan(false);
    p.options.insert("fail".into(), "panic".into());
    let mut s = StreamSink::new(Vec::new(), "o");
    let e = w
        .write(&p, &memory(), &mut s, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DUMPCONV_ERR_PANIC") && e.contains("toy writer panics"),
        "{e}"
    );
}

/// A raw C-ABI writer that overwrites past the end (refused), ignores the failure,
/// keeps writing and returns OK.
unsafe extern "C" fn stubborn_write(host: *const abi::Host, _plan: *const abi::Plan) -> i32 {
    // SAFETY: the host passes a valid table; callbacks are called with its ctx.
    unsafe {
        let h = &*host;
        let w = h.sink_write.unwrap();
        assert_eq!(w(h.ctx, b"ab".as_ptr(), 2), abi::DUMPCONV_OK);
        let r = (h.sink_write_at.unwrap())(h.ctx, 1, b"xyz".as_ptr(), 3);
        assert_ne!(r, abi::DUMPCONV_OK);
        // Every later callback fails too.
        assert_ne!(w(h.ctx, b"c".as_ptr(), 1), abi::DUMPCONV_OK);
        let msg = "ignored";
        (h.set_error.unwrap())(h.ctx, msg.as_ptr().cast::<c_char>(), msg.len());
    }
    abi::DUMPCONV_OK
}

static STUBBORN_WRITER: abi::Writer = abi::Writer {
    struct_size: std::mem::size_of::<abi::Writer>() as u32,
    flags: 0,
    extensions: c"".as_ptr(),
    write: Some(stubborn_write),
};

fn descriptor(walker: *const abi::Walker, writer: *const abi::Writer, kind: u32) -> abi::Plugin {
    abi::Plugin {
        abi_major: abi::DUMPCONV_ABI_MAJOR,
        struct_size: std::mem::size_of::<abi::Plugin>() as u32,
        kind,
        reserved: 0,
        name: c"stubborn".as_ptr(),
        version: c"1".as_ptr(),
        description: c"d".as_ptr(),
        walker,
        writer,
    }
}

#[test]
fn a_failed_callback_fails_the_call_whatever_the_plugin_returns() {
    let d = Box::leak(Box::new(descriptor(
        std::ptr::null(),
        &STUBBORN_WRITER,
        abi::DUMPCONV_KIND_WRITER,
    )));
    // SAFETY: a leaked descriptor pointing at statics.
    let LoadedPlugin::Writer(w) = (unsafe { wrap_descriptor(Path::new("stub.so"), d) }).unwrap()
    else {
        panic!("not a writer")
    };
    let mut s = StreamSink::new(Vec::new(), "o");
    let e = w
        .write(&plan(false), &memory(), &mut s, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("stub.so") && e.contains("sink_write_at"), "{e}");
    assert!(e.contains("returned OK anyway"), "{e}");
    assert_eq!(s.into_inner(), b"ab", "nothing written after the failure");
}

#[test]
fn descriptors_are_checked_before_use() {
    let check = |d: abi::Plugin| {
        let d = Box::leak(Box::new(d));
        // SAFETY: a leaked descriptor pointing at statics.
        unsafe { wrap_descriptor(Path::new("bad.so"), d) }
            .unwrap_err()
            .to_string()
    };
    let w = &STUBBORN_WRITER as *const abi::Writer;
    let ok = descriptor(std::ptr::null(), w, abi::DUMPCONV_KIND_WRITER);
    let e = check(abi::Plugin { abi_major: 3, ..ok });
    assert!(
        e.contains("bad.so") && e.contains("ABI major version 3"),
        "{e}"
    );
    let e = check(abi::Plugin {
        struct_size: 8,
        ..ok
    });
    assert!(e.contains("struct_size 8"), "{e}");
    let e = check(abi::Plugin { kind: 9, ..ok });
    assert!(e.contains("unknown kind 9"), "{e}");
    let e = check(abi::Plugin {
        kind: abi::DUMPCONV_KIND_WALKER,
        ..ok
    });
    assert!(e.contains("a walker must set walker"), "{e}");
    let e = check(abi::Plugin {
        name: c"has space".as_ptr(),
        ..ok
    });
    assert!(e.contains("name \"has space\""), "{e}");
    let e = check(abi::Plugin {
        version: std::ptr::null(),
        ..ok
    });
    assert!(e.contains("version is NULL"), "{e}");
    let small = Box::leak(Box::new(abi::Writer {
        struct_size: 4,
        ..STUBBORN_WRITER
    }));
    let e = check(descriptor(
        std::ptr::null(),
        small,
        abi::DUMPCONV_KIND_WRITER,
    ));
    assert!(e.contains("writer table struct_size 4"), "{e}");
    let nofn = Box::leak(Box::new(abi::Writer {
        write: None,
        ..STUBBORN_WRITER
    }));
    let e = check(descriptor(
        std::ptr::null(),
        nofn,
        abi::DUMPCONV_KIND_WRITER,
    ));
    assert!(e.contains("write is NULL"), "{e}");
    // SAFETY: NULL is refused before anything is read.
    let e = unsafe { wrap_descriptor(Path::new("bad.so"), std::ptr::null()) }.unwrap_err();
    assert!(e.to_string().contains("returned NULL"), "{e}");
}

// ---- Hostile plugins ----

fn check_descriptor(d: abi::Plugin) -> Result<LoadedPlugin> {
    let d = Box::leak(Box::new(d));
    // SAFETY: a leaked descriptor pointing at statics or leaked buffers.
    unsafe { wrap_descriptor(Path::new("bad.so"), d) }
}

/// A leaked C string of `len` 'a's (NUL-terminated right after them).
fn long_cstr(len: usize) -> *const c_char {
    let mut v = vec![b'a'; len];
    v.push(0);
    v.leak().as_ptr().cast()
}

#[test]
fn descriptor_strings_must_end_within_a_sane_length() {
    let w = &STUBBORN_WRITER as *const abi::Writer;
    let ok = descriptor(std::ptr::null(), w, abi::DUMPCONV_KIND_WRITER);
    // A description of 4 KiB is fine; one whose NUL is 64 KiB away is not (a string
    // that is not terminated at all reads until some zero byte, if it does not fault).
    assert!(check_descriptor(abi::Plugin {
        description: long_cstr(4000),
        ..ok
    })
    .is_ok());
    let e = check_descriptor(abi::Plugin {
        description: long_cstr(64 << 10),
        ..ok
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bad.so") && e.contains("description") && e.contains("NUL"),
        "{e}"
    );
    let e = check_descriptor(abi::Plugin {
        name: long_cstr(100_000),
        ..ok
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("name") && e.contains("NUL"), "{e}");
}

#[test]
fn extensions_must_be_usable_file_name_extensions() {
    let with_ext = |ext: *const c_char| {
        let t = Box::leak(Box::new(abi::Writer {
            extensions: ext,
            ..STUBBORN_WRITER
        }));
        check_descriptor(descriptor(std::ptr::null(), t, abi::DUMPCONV_KIND_WRITER))
    };
    let LoadedPlugin::Writer(w) = with_ext(c" img, .bin ,,".as_ptr()).unwrap() else {
        panic!("not a writer")
    };
    assert_eq!(w.extensions(), &["img", "bin"]);
    for bad in [
        c"img,../x",
        c"a b",
        c"tar.gz",
        c"x/y",
        c"caf\xc3\xa9",
        c"a\tb",
    ] {
        let e = with_ext(bad.as_ptr()).unwrap_err().to_string();
        assert!(e.contains("extension"), "{bad:?}: {e}");
    }
    let e = with_ext(long_cstr(100)).unwrap_err().to_string();
    assert!(e.contains("extension"), "{e}");
}

/// The host of the last `keeper_write` call, kept (wrongly) past its return.
static KEPT_HOST: std::sync::Mutex<Option<KeptHost>> = std::sync::Mutex::new(None);

struct KeptHost(abi::Host);
// SAFETY: the host's callbacks are thread-safe by the ABI; the pointers are only
// passed back to them.
unsafe impl Send for KeptHost {}

impl KeptHost {
    fn host(self) -> abi::Host {
        self.0
    }
}

unsafe extern "C" fn keeper_write(host: *const abi::Host, _plan: *const abi::Plan) -> i32 {
    // SAFETY: the host passes a valid Host for the call.
    let h = unsafe { *host };
    // SAFETY: a host callback with its own ctx and a one-byte buffer.
    let r = unsafe { (h.sink_write.unwrap())(h.ctx, b"k".as_ptr(), 1) };
    assert_eq!(r, abi::DUMPCONV_OK);
    *KEPT_HOST.lock().unwrap() = Some(KeptHost(h));
    abi::DUMPCONV_OK
}

static KEEPER_WRITER: abi::Writer = abi::Writer {
    struct_size: std::mem::size_of::<abi::Writer>() as u32,
    flags: 0,
    extensions: c"".as_ptr(),
    write: Some(keeper_write),
};

/// A plugin's bug: using the host's callbacks after its function returned (from a
/// thread it left running, say). The host must refuse them, not touch the memory of
/// the finished call.
#[test]
fn callbacks_after_the_call_returned_are_refused() {
    let LoadedPlugin::Writer(w) = check_descriptor(descriptor(
        std::ptr::null(),
        &KEEPER_WRITER,
        abi::DUMPCONV_KIND_WRITER,
    ))
    .unwrap() else {
        panic!("not a writer")
    };
    let mut s = StreamSink::new(Vec::new(), "o");
    {
        let mem = memory();
        w.write(&plan(false), &mem, &mut s, &NoProgress).unwrap();
    }
    // Overwrite the stack where the call's context lived.
    std::hint::black_box([0xAAu8; 16 << 10]);
    let kept = KEPT_HOST.lock().unwrap().take().unwrap();
    let from_thread = std::thread::spawn(move || {
        let h = kept.host();
        let mut b = [0u8; 16];
        // SAFETY: the host's callbacks with the (stale) ctx it gave and valid buffers:
        // exactly what a buggy plugin does.
        unsafe {
            let codes = [
                (h.read_phys.unwrap())(h.ctx, 0x10000, b.as_mut_ptr(), b.len()),
                (h.sink_write.unwrap())(h.ctx, b"late".as_ptr(), 4),
                (h.sink_skip.unwrap())(h.ctx, 4096),
                (h.sink_write_at.unwrap())(h.ctx, 0, b"x".as_ptr(), 1),
            ];
            (h.set_error.unwrap())(h.ctx, c"late".as_ptr(), 4);
            (h.log.unwrap())(h.ctx, abi::DUMPCONV_LOG_WARN, c"late".as_ptr(), 4);
            (h.progress.unwrap())(h.ctx, 1, 2);
            let pos = (h.sink_position.unwrap())(h.ctx);
            (codes, pos, b)
        }
    });
    let (codes, pos, b) = from_thread.join().unwrap();
    assert!(
        codes.iter().all(|&c| c == abi::DUMPCONV_ERR_INVALID),
        "{codes:?}"
    );
    assert_eq!(pos, 0);
    assert_eq!(b, [0u8; 16], "nothing read for a stale call");
    assert_eq!(s.into_inner(), b"k", "nothing written after the call");
}

/// A walker that emits every byte of the first RAM range as its own 1-byte mapping.
unsafe extern "C" fn confetti_walk(
    host: *const abi::Host,
    _cpu: *const abi::Cpu,
    opts: *const abi::WalkOptions,
    _stats: *mut abi::WalkStats,
) -> i32 {
    // SAFETY: valid for the call.
    let (h, o) = unsafe { (*host, *opts) };
    // SAFETY: ram_count ranges at ram, valid for the call.
    let first = unsafe { *o.ram };
    let emit = h.emit_mapping.unwrap();
    for p in first.start..first.end {
        // SAFETY: a host callback with its own ctx.
        let r = unsafe { emit(h.ctx, 0xffff_8000_0000_0000 + p, p, 1) };
        if r != abi::DUMPCONV_OK {
            return r;
        }
    }
    abi::DUMPCONV_OK
}

#[test]
fn many_tiny_contiguous_mappings_are_merged_as_they_come() {
    static ARCHES: [abi::Arch; 1] = [abi::Arch {
        machine: 62,
        word_size: 8,
        reserved: 0,
    }];
    static CONFETTI: abi::Walker = abi::Walker {
        struct_size: std::mem::size_of::<abi::Walker>() as u32,
        arch_count: 1,
        arches: ARCHES.as_ptr(),
        modes: c"4level".as_ptr(),
        walk: Some(confetti_walk),
        cpu_info: None,
        translate: None,
        cpu_from_root: None,
        roots_from_vmcoreinfo: None,
    };
    let LoadedPlugin::Walker(w) = check_descriptor(descriptor(
        &CONFETTI,
        std::ptr::null(),
        abi::DUMPCONV_KIND_WALKER,
    ))
    .unwrap() else {
        panic!("not a walker")
    };
    // One table page: at most 1024 mappings kept. 65536 one-byte mappings that
    // continue each other are one run, and must not count (or cost memory) as 65536.
    let opts = WalkOptions {
        max_table_pages: 1,
        ..WalkOptions::default()
    };
    let mut out = MappingList::new();
    w.walk(&cpu(CR3_OK), &memory(), &opts, &mut out).unwrap();
    assert_eq!(
        out.runs(),
        &[Mapping {
            virt: 0xffff_8000_0001_0000,
            phys: 0x10000,
            len: 0x10000
        }]
    );
}

#[test]
fn cpu_from_root_and_roots_from_vmcoreinfo_cross_the_abi() {
    let LoadedPlugin::Walker(w) = load(engine_toy_entry) else {
        panic!("not a walker")
    };
    let a = Arch::RISCV64;
    for (mode, root) in [("toy2", 0x4000_1000u64), ("bare", 0)] {
        assert_eq!(
            w.cpu_from_root(a, mode, root).unwrap(),
            EngineToy.cpu_from_root(a, mode, root).unwrap(),
            "{mode}"
        );
    }
    let e = w.cpu_from_root(a, "sv99", 0).unwrap_err().to_string();
    assert!(e.contains("enginetoy") && e.contains("no mode sv99"), "{e}");
    let v = crate::vmcoreinfo::VmcoreInfo::parse(b"OSRELEASE=6.1\nSYMBOL(toy_root)=2345000\n");
    let c = w.try_roots_from_vmcoreinfo(a, &v).unwrap().unwrap();
    assert_eq!(c, EngineToy.roots_from_vmcoreinfo(a, &v).unwrap());
    assert_eq!(c.reg("root"), Some(0x2345000));
    assert_eq!(c.arch, Some(a));
    // VMCOREINFO that does not say: none, not an error.
    let v = crate::vmcoreinfo::VmcoreInfo::parse(b"OSRELEASE=6.1\n");
    assert_eq!(w.try_roots_from_vmcoreinfo(a, &v).unwrap(), None);
    assert_eq!(w.roots_from_vmcoreinfo(a, &v), None);
}

/// What the hand-written walker below emits from cpu_from_root (by mode name).
unsafe extern "C" fn emitting_cpu_from_root(
    host: *const abi::Host,
    _arch: abi::Arch,
    mode: *const c_char,
    mode_len: usize,
    _root: u64,
) -> i32 {
    // SAFETY: valid for the call.
    let (h, mode) = unsafe {
        (
            *host,
            std::slice::from_raw_parts(mode.cast::<u8>(), mode_len),
        )
    };
    let emit = h.emit_reg.unwrap();
    let names: Vec<Vec<u8>> = match mode {
        b"upper" => vec![b"CR3".to_vec()],
        b"space" => vec![b"c r3".to_vec()],
        b"empty" => vec![Vec::new()],
        b"long" => vec![vec![b'a'; 65]],
        b"twice" => vec![b"cr3".to_vec(), b"cr3".to_vec()],
        b"many" => (0..300).map(|i| format!("r{i}").into_bytes()).collect(),
        _ => vec![b"cr3".to_vec(), b"cs.selector".to_vec()],
    };
    for n in names {
        // SAFETY: a host callback with its own ctx and a valid name.
        let r = unsafe { emit(h.ctx, n.as_ptr().cast(), n.len(), 7) };
        if r != abi::DUMPCONV_OK {
            return r;
        }
    }
    abi::DUMPCONV_OK
}

unsafe extern "C" fn emitting_roots(
    host: *const abi::Host,
    arch: abi::Arch,
    _v: *const u8,
    _len: usize,
) -> i32 {
    // SAFETY: the same call shape.
    unsafe { emitting_cpu_from_root(host, arch, c"many".as_ptr(), 4, 0) }
}

#[test]
fn malformed_cpus_from_a_plugin_are_plugin_errors() {
    static ARCHES: [abi::Arch; 1] = [abi::Arch {
        machine: 62,
        word_size: 8,
        reserved: 0,
    }];
    static EMITTER: abi::Walker = abi::Walker {
        struct_size: std::mem::size_of::<abi::Walker>() as u32,
        arch_count: 1,
        arches: ARCHES.as_ptr(),
        modes: c"ok,upper,space,empty,long,twice,many".as_ptr(),
        walk: Some(confetti_walk),
        cpu_info: None,
        translate: None,
        cpu_from_root: Some(emitting_cpu_from_root),
        roots_from_vmcoreinfo: Some(emitting_roots),
    };
    let LoadedPlugin::Walker(w) = check_descriptor(descriptor(
        &EMITTER,
        std::ptr::null(),
        abi::DUMPCONV_KIND_WALKER,
    ))
    .unwrap() else {
        panic!("not a walker")
    };
    let c = w.cpu_from_root(Arch::X86_64, "ok", 0).unwrap();
    assert_eq!(c.reg("cr3"), Some(7));
    assert_eq!(c.reg("cs.selector"), Some(7));
    for (mode, want) in [
        ("upper", "\"CR3\" is not lowercase"),
        ("space", "is not lowercase"),
        ("empty", "register name of 0 bytes"),
        ("long", "register name of 65 bytes"),
        ("twice", "register cr3 emitted twice"),
        ("many", "more than 256 registers"),
    ] {
        let e = w.cpu_from_root(Arch::X86_64, mode, 0).unwrap_err();
        assert!(matches!(e, Error::Plugin { .. }), "{mode}: {e:?}");
        let e = e.to_string();
        assert!(e.contains("emit_reg") && e.contains(want), "{mode}: {e}");
    }
    let v = crate::vmcoreinfo::VmcoreInfo::parse(b"X=1\n");
    let e = w.try_roots_from_vmcoreinfo(Arch::X86_64, &v).unwrap_err();
    assert!(matches!(e, Error::Plugin { .. }), "{e:?}");
    assert_eq!(w.roots_from_vmcoreinfo(Arch::X86_64, &v), None);

    // A table as first published (no cpu_from_root/roots_from_vmcoreinfo) still loads:
    // the fields past its struct_size are not read.
    static OLD: abi::Walker = abi::Walker {
        struct_size: abi::WALKER_V2_SIZE as u32,
        ..EMITTER
    };
    let LoadedPlugin::Walker(w) = check_descriptor(descriptor(
        &OLD,
        std::ptr::null(),
        abi::DUMPCONV_KIND_WALKER,
    ))
    .unwrap() else {
        panic!("not a walker")
    };
    let e = w
        .cpu_from_root(Arch::X86_64, "ok", 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no cpu_from_root"), "{e}");
    assert_eq!(w.try_roots_from_vmcoreinfo(Arch::X86_64, &v).unwrap(), None);
}
