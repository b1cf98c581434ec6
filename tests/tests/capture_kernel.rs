//! The seed's scenario for real (issue 11): the `x86_64-crashk` guest loaded Debian's
//! kdump capture kernel (`kexec -p`), crashed (`echo c > /proc/sysrq-trigger`) and was
//! dumped by QEMU while the capture kernel ran (tests/real-guests/README.md,
//! "x86_64-crashk"). Both kernels are the same Debian build at the same virtual
//! addresses (`nokaslr`) but in different physical memory (`phys_base`), so a walk
//! through the wrong page-table root reads plausible but wrong data.
//!
//! The reference is what each kernel printed about itself (`crashk-facts.json`: its
//! `/proc/cmdline`, every task's pid and `/proc/<pid>/comm`, where its VMCOREINFO note
//! is) and gdb with the guest's debug vmlinux reading our output through virtual
//! addresses (`linux_banner`, `saved_command_line`, the `init_task.tasks` list).
//!
//! Skips when the guest is not in the cache, unless `DUMPCONV_REQUIRE_GUESTS=1`.
//! The tests marked `needs --kernel (wip/roots)` use the kernel-choice surface of
//! issue 11 (`--kernel`, `--root`, `info`'s kernel list).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inputs_util;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use dumpconv_tests::guests::{as_u64, guest, run, Guest, CAPTURE_KERNEL};
use inputs_util::dumpconv_bin;
use serde_json::Value;

/// What one kernel printed about itself (`crashk-facts.json`, "crashed" / "capture").
#[derive(Debug)]
struct Kernel {
    role: &'static str,
    cmdline: String,
    phys_base: u64,
    vmcoreinfo_phys: u64,
    /// `(pid, /proc/<pid>/comm)` of every task (thread-group leaders, as /proc lists
    /// them), sorted by pid.
    tasks: Vec<(u64, String)>,
}

struct Crashk {
    g: Guest,
    crashed: Kernel,
    capture: Kernel,
}

fn setup() -> Option<Crashk> {
    let g = guest(CAPTURE_KERNEL)?;
    let facts: Value =
        serde_json::from_slice(&std::fs::read(g.file("crashk-facts.json")).unwrap()).unwrap();
    let kernel = |role: &'static str| {
        let k = &facts[role];
        let mut tasks: Vec<(u64, String)> = k["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (as_u64(&t[0]), t[1].as_str().unwrap().to_string()))
            .collect();
        tasks.sort();
        Kernel {
            role,
            cmdline: k["cmdline"].as_str().unwrap().to_string(),
            phys_base: as_u64(&k["phys_base"]),
            vmcoreinfo_phys: as_u64(&k["vmcoreinfo_phys"]),
            tasks,
        }
    };
    let c = Crashk {
        crashed: kernel("crashed"),
        capture: kernel("capture"),
        g,
    };
    // the facts tell the two kernels apart (else every test below proves nothing)
    assert!(
        c.crashed.cmdline.contains("crashkernel="),
        "{:?}",
        c.crashed
    );
    assert!(c.capture.cmdline.contains("elfcorehdr="), "{:?}", c.capture);
    assert_ne!(c.crashed.phys_base, c.capture.phys_base);
    assert_ne!(c.crashed.tasks, c.capture.tasks);
    Some(c)
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `dumpconv --paging INPUT -o OUT ARGS...`: the ELF it writes (stderr is printed).
fn paging_elf(input: &Path, out: &Path, args: &[&str]) -> PathBuf {
    let o = Command::new(dumpconv_bin())
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .arg("--paging")
        .args(args)
        .arg(input)
        .arg("-o")
        .arg(out)
        .arg("--force")
        .output()
        .unwrap();
    eprintln!(
        "dumpconv --paging {} {args:?}: {}",
        input.display(),
        String::from_utf8_lossy(&o.stderr).trim_end()
    );
    assert!(
        o.status.success(),
        "dumpconv --paging {} {args:?} failed ({})",
        input.display(),
        o.status
    );
    out.to_path_buf()
}

/// Whether this dumpconv knows a conversion option (`convert --help` names it).
fn has_option(name: &str) -> bool {
    let o = Command::new(dumpconv_bin())
        .args(["convert", "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains(name)
}

/// What gdb reads through virtual addresses of one core file, with the guest's vmlinux.
#[derive(Debug, Default)]
struct View {
    banner: String,
    cmdline: String,
    tasks: Vec<(u64, String)>,
}

/// gdb script: for each core file of `DUMPCONV_CORES` (one per line), `linux_banner`,
/// `saved_command_line` and the pid and comm of every task on `init_task.tasks`.
const GDB_SCRIPT: &str = r#"
import gdb, os
gdb.execute("set pagination off")
gdb.execute("set confirm off")
tt = gdb.lookup_type("struct task_struct")
for core in open(os.environ["DUMPCONV_CORES"]).read().split("\n"):
    if not core:
        continue
    print("=== core " + core)
    gdb.execute("core-file " + core, to_string=True)
    try:
        print("banner " + gdb.parse_and_eval("(char *)linux_banner").string().rstrip("\n"))
        print("cmdline " + gdb.parse_and_eval("saved_command_line").string())
        off = int(gdb.parse_and_eval("(unsigned long)&((struct task_struct *)0)->tasks"))
        head = gdb.parse_and_eval("&init_task.tasks")
        p = head["next"]
        n = 0
        while int(p) != int(head) and n < 100000:
            t = gdb.Value(int(p) - off).cast(tt.pointer())
            print("task %d %s" % (int(t["pid"]), t["comm"].string()))
            p = p["next"]
            n += 1
    except gdb.error as e:
        print("error " + str(e))
    print("=== end")
"#;

/// One gdb run (loading the 600 MB vmlinux takes most of its time) over several cores.
fn gdb_views(g: &Guest, cores: &[PathBuf]) -> Vec<View> {
    let tmp = scratch();
    let script = tmp.path().join("tasks.py");
    std::fs::write(&script, GDB_SCRIPT).unwrap();
    let list = tmp.path().join("cores");
    let names: Vec<String> = cores.iter().map(|c| c.display().to_string()).collect();
    std::fs::write(&list, names.join("\n")).unwrap();
    let out = run(Command::new("gdb")
        .env("DUMPCONV_CORES", &list)
        .args(["-batch", "-nx", "-iex", "set auto-load off"])
        .arg(g.file("vmlinux"))
        .arg("-x")
        .arg(&script));
    let mut views = Vec::new();
    let mut cur: Option<View> = None;
    for line in out.lines() {
        if line.starts_with("=== core ") {
            cur = Some(View::default());
        } else if line == "=== end" {
            views.push(cur.take().expect("=== core before === end"));
        } else if let Some(v) = cur.as_mut() {
            if let Some(s) = line.strip_prefix("banner ") {
                v.banner = s.trim_end().to_string();
            } else if let Some(s) = line.strip_prefix("cmdline ") {
                v.cmdline = s.to_string();
            } else if let Some(s) = line.strip_prefix("task ") {
                let (pid, comm) = s.split_once(' ').unwrap_or((s, ""));
                v.tasks.push((pid.parse().unwrap(), comm.to_string()));
            } else if let Some(s) = line.strip_prefix("error ") {
                panic!("gdb on {}: {s}\n{out}", names[views.len()]);
            }
        }
    }
    assert_eq!(views.len(), cores.len(), "gdb output:\n{out}");
    views
}

/// `task_struct.comm` (what gdb reads: at most 15 characters) against what
/// `/proc/<pid>/comm` printed: the same, or the kernel thread's full name that comm
/// holds the first 15 characters of, or a workqueue worker's name with its
/// `-<workqueue>` suffix (proc adds both; task_struct has neither).
fn comm_matches(task_comm: &str, proc_comm: &str) -> bool {
    task_comm == proc_comm
        || proc_comm.strip_prefix(task_comm).is_some_and(|rest| {
            task_comm.len() == 15 || (task_comm.starts_with("kworker/") && rest.starts_with('-'))
        })
}

/// gdb's view of `what` is kernel `k`: the banner the guest printed, `k`'s command line
/// and exactly `k`'s tasks.
fn assert_view_is(c: &Crashk, v: &View, k: &Kernel, what: &str) {
    assert_eq!(v.banner, c.g.banner(), "{what}: linux_banner");
    assert_eq!(
        v.cmdline, k.cmdline,
        "{what}: saved_command_line is not the {} kernel's",
        k.role
    );
    let mut got = v.tasks.clone();
    got.sort();
    let pids = |t: &[(u64, String)]| t.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(
        pids(&got),
        pids(&k.tasks),
        "{what}: the pids on init_task.tasks are not the {} kernel's\n got {got:?}\nwant {:?}",
        k.role,
        k.tasks
    );
    for ((pid, comm), (_, want)) in got.iter().zip(&k.tasks) {
        assert!(
            comm_matches(comm, want),
            "{what}: pid {pid} is {comm:?} in the dump, {want:?} in the {} kernel",
            k.role
        );
    }
}

/// QEMU's CPU 0 runs the capture kernel (CPU 1 stays stopped in the crashed kernel):
/// the walk through CPU 0's CR3 shows the capture kernel, not the one that crashed.
/// That walk is today's `--paging` (the first CPU with paging on); once the root is
/// chosen (issue 11) it is `--root cpu --kernel running`.
#[test]
fn cpu_state_walk_finds_the_capture_kernel() {
    let Some(c) = setup() else { return };
    let tmp = scratch();
    let args: &[&str] = if has_option("--kernel") {
        &["--root", "cpu", "--kernel", "running"]
    } else {
        &[]
    };
    let ours = paging_elf(&c.g.file("phys.elf"), &tmp.path().join("cpu.elf"), args);
    let views = gdb_views(&c.g, &[ours]);
    assert_view_is(&c, &views[0], &c.capture, "dumpconv --paging (CPU state)");
    assert!(views[0].cmdline.contains("elfcorehdr="));
}

/// `(p_vaddr, p_paddr, p_memsz)` of every PT_LOAD of a 64-bit little-endian ELF file,
/// read from the ELF specification's layout (PN_XNUM: the count in section 0's
/// sh_info).
fn elf64_loads(path: &Path) -> Vec<(u64, u64, u64)> {
    let f = File::open(path).unwrap();
    let mut h = [0u8; 64];
    f.read_exact_at(&mut h, 0).unwrap();
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&h[..5], b"\x7fELF\x02", "{}", path.display());
    let (phoff, shoff) = (u64_at(&h, 32), u64_at(&h, 40));
    let (phentsize, mut phnum) = (u16_at(&h, 54) as u64, u16_at(&h, 56) as u64);
    if phnum == 0xffff {
        let mut sh = [0u8; 64];
        f.read_exact_at(&mut sh, shoff).unwrap();
        phnum = u32_at(&sh, 44) as u64;
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    f.read_exact_at(&mut ph, phoff).unwrap();
    ph.chunks(phentsize as usize)
        .filter(|p| u32_at(p, 0) == 1)
        .map(|p| (u64_at(p, 16), u64_at(p, 24), u64_at(p, 40)))
        .collect()
}

/// QEMU's own paging dump is no reference for either kernel here: QEMU 7.2 walks every
/// CPU with paging on and keeps every mapping, so the kernel's virtual addresses are
/// mapped twice, by CPU 0 (the capture kernel, at its phys_base) and by CPU 1 (still
/// stopped in the crashed kernel, at the crashed kernel's phys_base).
#[test]
fn qemu_paging_dump_maps_both_kernels() {
    let Some(c) = setup() else { return };
    let banner = c.g.symbol("linux_banner").unwrap();
    let mut phys: Vec<u64> = elf64_loads(&c.g.file("paging.elf"))
        .iter()
        .filter(|(v, _, n)| *v <= banner && banner < v + n)
        .map(|(v, p, _)| p + (banner - v))
        .collect();
    phys.sort();
    let mut want: Vec<u64> = [&c.crashed, &c.capture]
        .iter()
        .map(|k| banner - 0xffff_ffff_8000_0000 + k.phys_base)
        .collect();
    want.sort();
    assert_eq!(
        phys, want,
        "physical addresses QEMU's paging.elf gives linux_banner, against the two kernels'"
    );
}

/// Every VMCOREINFO note in RAM (an ELF note header, name `VMCOREINFO`, the text):
/// `(physical address of the note, its text)`. Reads ram.raw in 16 MiB windows that
/// overlap by 64 KiB, so a note across a window edge is seen whole.
fn vmcoreinfo_notes_in_ram(ram: &Path) -> Vec<(u64, String)> {
    const NAME: &[u8] = b"VMCOREINFO\0";
    const STEP: u64 = 16 << 20;
    const OVERLAP: u64 = 64 << 10;
    let f = File::open(ram).unwrap();
    let size = f.metadata().unwrap().len();
    let mut found = Vec::new();
    let mut buf = Vec::new();
    let mut start = 0u64;
    while start < size {
        let len = (STEP + OVERLAP).min(size - start) as usize;
        buf.resize(len, 0);
        f.read_exact_at(&mut buf, start).unwrap();
        let word = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
        // note headers that start inside this window's own STEP bytes
        let own = (STEP as usize).min(len);
        for hdr in 0..own {
            let name = hdr + 12;
            if name + NAME.len() > len || buf[name] != b'V' || !buf[name..].starts_with(NAME) {
                continue;
            }
            let (namesz, descsz, ntype) = (word(hdr), word(hdr + 4), word(hdr + 8));
            let desc = name + 12; // the 11-byte name padded to 4
            if namesz != 11 || ntype != 0 || descsz == 0 || desc + descsz as usize > len {
                continue;
            }
            let text = String::from_utf8_lossy(&buf[desc..desc + descsz as usize]);
            found.push((start + hdr as u64, text.trim_end_matches('\0').to_string()));
        }
        start += STEP;
    }
    found
}

fn vmcoreinfo_map(text: &str) -> BTreeMap<&str, &str> {
    text.lines().filter_map(|l| l.split_once('=')).collect()
}

fn signed(v: &str) -> u64 {
    let (neg, v) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let n = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => v.parse().unwrap(),
    };
    if neg {
        n.wrapping_neg()
    } else {
        n
    }
}

/// Both kernels' VMCOREINFO notes are in RAM, where each kernel said its note was
/// (`/sys/kernel/vmcoreinfo`); only the crashed kernel's has CRASHTIME=; each note's
/// phys_base puts `linux_banner` where the banner really is. QEMU's note (and so
/// today's `dumpconv info`) is the crashed kernel's, while the CPU runs the other one.
#[test]
fn both_kernels_vmcoreinfo_notes_are_in_ram() {
    let Some(c) = setup() else { return };
    let release = c.g.meta["kernel_release"].as_str().unwrap();
    let notes = vmcoreinfo_notes_in_ram(&c.g.file("ram.raw"));
    let ours: Vec<_> = notes
        .iter()
        .filter(|(_, t)| vmcoreinfo_map(t).get("OSRELEASE") == Some(&release))
        .collect();
    assert!(
        ours.len() >= 2,
        "VMCOREINFO notes of {release} in ram.raw: {:x?}",
        ours.iter().map(|n| n.0).collect::<Vec<_>>()
    );
    let raw = File::open(c.g.file("ram.raw")).unwrap();
    let banner = c.g.banner();
    let banner_sym = c.g.symbol("linux_banner").unwrap();
    for k in [&c.crashed, &c.capture] {
        let (_, text) = ours
            .iter()
            .find(|(p, _)| *p == k.vmcoreinfo_phys)
            .unwrap_or_else(|| {
                panic!(
                    "no VMCOREINFO note at {:#x}, where the {} kernel said its note is",
                    k.vmcoreinfo_phys, k.role
                )
            });
        let v = vmcoreinfo_map(text);
        assert_eq!(
            v.contains_key("CRASHTIME"),
            k.role == "crashed",
            "{} kernel's VMCOREINFO: CRASHTIME",
            k.role
        );
        let phys_base = signed(v["NUMBER(phys_base)"]);
        assert_eq!(phys_base, k.phys_base, "{} kernel's phys_base", k.role);
        // __START_KERNEL_map = 0xffffffff80000000; nokaslr: no KERNELOFFSET slide
        let at = banner_sym - 0xffff_ffff_8000_0000 + phys_base;
        let mut got = vec![0u8; banner.len()];
        raw.read_exact_at(&mut got, at).unwrap();
        assert_eq!(
            got,
            banner.as_bytes(),
            "{} kernel: linux_banner at phys {at:#x}",
            k.role
        );
    }
    // the crashed kernel's note is also copied into the capture kernel's memory (its
    // /proc/vmcore notes), so it is in RAM at least twice
    let crashed_text = &ours
        .iter()
        .find(|n| n.0 == c.crashed.vmcoreinfo_phys)
        .unwrap()
        .1;
    let crashed_copies = notes.iter().filter(|n| &n.1 == crashed_text).count();
    assert!(
        crashed_copies >= 2,
        "the crashed kernel's note is in RAM {crashed_copies} times"
    );
    eprintln!(
        "VMCOREINFO notes of {release} in RAM: {:x?}; the crashed kernel's {crashed_copies} times",
        ours.iter().map(|n| n.0).collect::<Vec<_>>()
    );

    // QEMU's note is the crashed kernel's: `info` reports it as the file's VMCOREINFO
    let o = run(Command::new(dumpconv_bin())
        .args(["info", "--json"])
        .arg(c.g.file("phys.elf")));
    let info: Value = serde_json::from_str(&o).unwrap();
    let vmci = &info["vmcoreinfo"];
    assert_eq!(vmci["OSRELEASE"], release);
    assert!(vmci["CRASHTIME"].is_string(), "{vmci}");
    assert_eq!(
        signed(vmci["NUMBER(phys_base)"].as_str().unwrap()),
        c.crashed.phys_base
    );
}

/// The kernels `dumpconv info --json` lists: `(role, osrelease, phys_base)`.
fn info_kernels(input: &Path) -> (Vec<(String, String, u64)>, Value) {
    let o = run(Command::new(dumpconv_bin())
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .args(["info", "--json"])
        .arg(input));
    let v: Value = serde_json::from_str(&o).unwrap();
    let kernels = v["kernels"]
        .as_array()
        .unwrap_or_else(|| panic!("info --json {}: no \"kernels\": {v}", input.display()))
        .iter()
        .map(|k| {
            (
                k["role"].as_str().unwrap_or("").to_string(),
                k["osrelease"].as_str().unwrap_or("").to_string(),
                k["phys_base"].as_str().map_or(0, signed),
            )
        })
        .collect();
    (kernels, v)
}

/// `dumpconv info` lists both kernels: the crashed one (CRASHTIME) and the one CPU 0
/// runs, each with its OSRELEASE and phys_base; the root `--paging` takes is the crashed
/// kernel's. From ram.raw (no CPU state) both are found in RAM, the crashed one named.
#[test]
fn info_lists_both_kernels() {
    let Some(c) = setup() else { return };
    let release = c.g.meta["kernel_release"].as_str().unwrap().to_string();
    let (kernels, v) = info_kernels(&c.g.file("phys.elf"));
    let has = |role: &str, pb: u64| {
        kernels
            .iter()
            .any(|k| k.0 == role && k.1 == release && k.2 == pb)
    };
    assert!(
        has("crashed", c.crashed.phys_base),
        "phys.elf: {kernels:x?}"
    );
    assert!(
        has("running", c.capture.phys_base),
        "phys.elf: {kernels:x?}"
    );
    let crashed_index = v["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "crashed")
        .map(|k| k["index"].clone())
        .unwrap();
    assert_eq!(v["root"]["kernel"], crashed_index, "root: {}", v["root"]);
    // the root is the crashed kernel's: its init_top_pgt (from its VMCOREINFO) or the
    // CR3 of a CPU still stopped in it (CPU 1), never the capture kernel's CPU 0
    let init_top_pgt = c.g.symbol("init_top_pgt").unwrap() - 0xffff_ffff_8000_0000;
    let facts: Value =
        serde_json::from_slice(&std::fs::read(c.g.file("crashk-facts.json")).unwrap()).unwrap();
    let mut crashed_roots = vec![init_top_pgt + c.crashed.phys_base];
    for cpu in facts["cpus"].as_array().unwrap() {
        if cpu["kernel"] == "crashed" {
            crashed_roots.push(as_u64(&cpu["cr3"]));
        }
    }
    let root = v["root"]["root"].as_str().map_or(0, signed);
    assert!(
        crashed_roots.contains(&root),
        "root {root:#x} is none of the crashed kernel's {crashed_roots:x?}: {}",
        v["root"]
    );
    // one kernel is one entry, however many copies of its VMCOREINFO the dump holds
    let mut seen = std::collections::BTreeSet::new();
    for k in v["kernels"].as_array().unwrap() {
        let id = (
            k["osrelease"].to_string(),
            k["phys_base"].to_string(),
            k["kernel_offset"].to_string(),
        );
        assert!(
            seen.insert(id),
            "phys.elf: the same kernel is listed twice: {}",
            v["kernels"]
        );
    }
    assert_eq!(kernels.len(), 2, "phys.elf: {kernels:x?}");

    let (kernels, _) = info_kernels(&c.g.file("ram.raw"));
    assert!(kernels.len() >= 2, "ram.raw: {kernels:x?}");
    assert!(
        kernels
            .iter()
            .any(|k| k.0 == "crashed" && k.2 == c.crashed.phys_base),
        "ram.raw: {kernels:x?}"
    );
    assert!(
        kernels.iter().any(|k| k.2 == c.capture.phys_base),
        "ram.raw: {kernels:x?}"
    );

    // the text form: a "Kernels:" section with one line per kernel
    let text = run(Command::new(dumpconv_bin())
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .arg("info")
        .arg(c.g.file("phys.elf")));
    let section: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Kernels:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .collect();
    for role in ["crashed", "running"] {
        assert!(
            section
                .iter()
                .any(|l| l.contains(role) && l.contains(&release)),
            "no {role} {release} line under Kernels:\n{text}"
        );
    }
}

/// The new default: with no flags, `--paging` walks the crashed kernel, whatever the
/// input (QEMU's ELF whose CPU 0 runs the capture kernel, the raw image with no CPU
/// state, QEMU's kdump): gdb reads the crashed kernel's command line and exactly its
/// task list. `--kernel crashed` says the same explicitly.
#[test]
fn default_paging_finds_the_crashed_kernel() {
    let Some(c) = setup() else { return };
    let tmp = scratch();
    let outs = vec![
        paging_elf(&c.g.file("phys.elf"), &tmp.path().join("elf.elf"), &[]),
        paging_elf(&c.g.file("ram.raw"), &tmp.path().join("raw.elf"), &[]),
        paging_elf(
            &c.g.file("kdump-zlib.rearranged.kdump"),
            &tmp.path().join("kdump.elf"),
            &[],
        ),
        paging_elf(
            &c.g.file("phys.elf"),
            &tmp.path().join("crashed.elf"),
            &["--kernel", "crashed"],
        ),
    ];
    let views = gdb_views(&c.g, &outs);
    for (v, out) in views.iter().zip(&outs) {
        assert_view_is(&c, v, &c.crashed, &out.display().to_string());
        assert!(v.cmdline.contains("crashkernel="));
    }
}

/// `--kernel running` gives the capture kernel's view: the one CPU 0 runs (CPU 1 is
/// stopped in the crashed kernel, which is the crashed one, not a running one).
#[test]
fn kernel_running_gives_the_capture_kernel() {
    let Some(c) = setup() else { return };
    let tmp = scratch();
    let outs = vec![paging_elf(
        &c.g.file("phys.elf"),
        &tmp.path().join("running.elf"),
        &["--kernel", "running"],
    )];
    let views = gdb_views(&c.g, &outs);
    assert_view_is(&c, &views[0], &c.capture, "--kernel running");
}
