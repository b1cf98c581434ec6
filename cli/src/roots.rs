//! Where `--paging` gets its page-table root, and which kernel it belongs to
//! (docs/roots.md).
//!
//! Every distinct VMCOREINFO found is a kernel: the input's note, `--vmcoreinfo FILE`,
//! and the copies found in RAM ([`dumpconv_core::ramscan`]). For each, the walkers say
//! its architecture (when the input does not) and its root; the root is checked: it
//! must map `SYMBOL(_stext)` where the kernel-image rules put it, and the kernel's
//! utsname must read "Linux" and its OSRELEASE. A kernel whose VMCOREINFO has
//! `CRASHTIME=` is the crashed one; one whose `_stext` a CPU's tables map where that
//! kernel's rules put it runs on that CPU. [`choose_root`] then picks the root in the
//! documented order. Nothing here names an architecture: the walkers do.

use std::time::{Duration, Instant};

use dumpconv_core::ramscan::{scan_ram, ScanLimits};
use dumpconv_core::{Arch, ArchWalker, CpuState, Dump, Error, Regime, Result, VmcoreInfo};

use crate::pipeline::{effective_arch, walk_options, ConvertOptions};
use crate::registry::Registry;

/// `--kernel crashed|running|N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPick {
    Crashed,
    Running,
    Index(usize),
}

impl KernelPick {
    pub fn parse(s: &str) -> Option<KernelPick> {
        match s.trim() {
            "crashed" => Some(KernelPick::Crashed),
            "running" => Some(KernelPick::Running),
            n => n.parse().ok().map(KernelPick::Index),
        }
    }
}

/// `--root cpu|vmcoreinfo|scan` (an address is a [`crate::pipeline::RootRequest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    Cpu,
    Vmcoreinfo,
    Scan,
}

/// Where a kernel's VMCOREINFO came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmciOrigin {
    /// The input's VMCOREINFO note.
    Note,
    /// `--vmcoreinfo FILE`.
    File,
    /// Found in RAM at this physical address (its ELF note's, else its text's).
    Ram { phys: u64, copies: usize },
}

impl VmciOrigin {
    pub fn describe(&self) -> String {
        match self {
            VmciOrigin::Note => "note".into(),
            VmciOrigin::File => "file".into(),
            VmciOrigin::Ram { phys, .. } => format!("ram@{phys:#x}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            VmciOrigin::Note => "note",
            VmciOrigin::File => "file",
            VmciOrigin::Ram { .. } => "ram",
        }
    }

    pub fn phys(&self) -> Option<u64> {
        match self {
            VmciOrigin::Ram { phys, .. } => Some(*phys),
            _ => None,
        }
    }
}

/// One kernel found in the dump.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub index: usize,
    pub info: VmcoreInfo,
    pub origin: VmciOrigin,
    pub arch: Option<Arch>,
    /// `CRASHTIME=` is in its VMCOREINFO.
    pub crashed: bool,
    /// CPUs (indexes) whose tables map this kernel's `_stext` where its rules put it.
    pub running_cpus: Vec<u32>,
    /// The root from VMCOREINFO: the CPU state, its mode and root address.
    pub root: Option<(CpuState, String, u64)>,
    /// The candidate checks of that root (and the utsname): Ok, or why not.
    pub check: std::result::Result<(), String>,
}

impl Kernel {
    pub fn role(&self) -> &'static str {
        if self.crashed {
            "crashed"
        } else if !self.running_cpus.is_empty() {
            "running"
        } else {
            "-"
        }
    }

    pub fn osrelease(&self) -> &str {
        self.info.osrelease().unwrap_or("?")
    }

    /// One line for `info` and messages.
    pub fn describe(&self) -> String {
        let root = match &self.root {
            Some((_, mode, r)) => format!("{mode} {r:#x}"),
            None => "none".into(),
        };
        let mut s = format!(
            "kernel {} [{}] {} phys_base {} KERNELOFFSET {} root {} from {}",
            self.index,
            self.role(),
            self.osrelease(),
            self.info.number("phys_base").map_or("-".into(), signed_hex),
            self.info
                .kernel_offset()
                .map_or("-".into(), |v| format!("{v:#x}")),
            root,
            self.origin.describe(),
        );
        if let Err(why) = &self.check {
            s.push_str(&format!(" (root rejected: {why})"));
        }
        s
    }
}

/// A signed number in hex ("-0x20e00000"): phys_base is negative when the kernel runs
/// below where it was linked.
pub fn signed_hex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

/// Every kernel found, and what was rejected on the way.
#[derive(Debug, Clone, Default)]
pub struct Kernels {
    pub list: Vec<Kernel>,
    /// VMCOREINFO copies in RAM that were not taken, with the reason.
    pub rejected: Vec<String>,
    /// Whether RAM was scanned, and how long it took.
    pub scanned: bool,
    pub scan_time: Duration,
    pub scan_bytes: u64,
    /// "Linux version " positions from the RAM scan (for the last-resort root scan).
    pub banners: Vec<u64>,
    /// Whether the RAM scan looked for banners (it does not when a kernel is known).
    pub banners_scanned: bool,
    /// CPUs with paging whose walker cannot translate one address (a plugin that only
    /// walks whole): which kernel they run is unknown, so they are not set aside.
    pub untestable_cpus: Vec<u32>,
}

/// Whether [`find_kernels`] should look through RAM for a `--paging` conversion with
/// these options: not when the root is given (`--cr3`, `--root ADDR`, `--root cpu`
/// without `--kernel`), nor when the input's own VMCOREINFO already is the crashed kernel's
/// and no other kernel is asked for.
pub fn wants_ram_scan(dump: &Dump, opts: &ConvertOptions) -> bool {
    if opts.root.is_some() || (opts.root_source == Some(RootSource::Cpu) && opts.kernel.is_none()) {
        return false;
    }
    let has_crashed = dump
        .vmcoreinfo
        .as_ref()
        .is_some_and(|v| v.get("CRASHTIME").is_some());
    !(has_crashed && matches!(opts.kernel, None | Some(KernelPick::Crashed)))
}

/// Find every kernel: the input's VMCOREINFO note, `--vmcoreinfo`, and (with
/// `scan`) the copies in RAM.
pub fn find_kernels(
    dump: &Dump,
    opts: &ConvertOptions,
    registry: &Registry,
    cpus: &[CpuState],
    scan: bool,
) -> Result<Kernels> {
    let mut out = Kernels::default();
    let mut infos: Vec<(VmcoreInfo, VmciOrigin)> = Vec::new();
    if let Some(v) = &dump.vmcoreinfo {
        infos.push((v.clone(), VmciOrigin::Note));
    } else if let Some(f) = &opts.vmcoreinfo {
        infos.push((
            f.resolve(dump.memory.as_ref(), &dump.path)?,
            VmciOrigin::File,
        ));
    }
    let given = infos.len();
    // Raw texts of given VMCOREINFO whose copy in RAM has CRASHTIME (the given one not).
    let mut crashed_by_copy: Vec<Vec<u8>> = Vec::new();
    if scan {
        let t = Instant::now();
        // The banners serve only the last-resort root scan, which runs when no kernel is
        // known without RAM (no VMCOREINFO note or file) or when asked for: otherwise
        // only page starts are looked at.
        let banners = infos.is_empty() || opts.root_source == Some(RootSource::Scan);
        let limits = ScanLimits {
            max_banners: if banners {
                ScanLimits::default().max_banners
            } else {
                0
            },
            ..ScanLimits::default()
        };
        let s = scan_ram(dump.memory.as_ref(), &limits)?;
        out.scanned = true;
        out.banners_scanned = banners;
        out.scan_time = t.elapsed();
        out.scan_bytes = s.bytes;
        out.banners = s.banners;
        for (at, why) in &s.rejected {
            out.rejected.push(format!(
                "{}: VMCOREINFO candidate at physical {at:#x}: {why}",
                dump.path.display()
            ));
        }
        if s.rejected_count > s.rejected.len() as u64 {
            out.rejected.push(format!(
                "{}: {} more VMCOREINFO candidates rejected",
                dump.path.display(),
                s.rejected_count - s.rejected.len() as u64
            ));
        }
        if s.skipped > 0 {
            out.rejected.push(format!(
                "{}: {} VMCOREINFO candidates in RAM not examined (more than {} candidates \
                 or {} distinct texts)",
                dump.path.display(),
                s.skipped,
                ScanLimits::default().max_candidates,
                ScanLimits::default().max_found
            ));
        }
        for f in s.found {
            if let Some((known, origin)) = infos.iter_mut().find(|(v, _)| same_kernel(v, &f.info)) {
                // The copy that has CRASHTIME tells the role; a note or --vmcoreinfo
                // keeps its own text (carried as it is).
                if known.get("CRASHTIME").is_none() && f.info.get("CRASHTIME").is_some() {
                    if let VmciOrigin::Ram { .. } = origin {
                        *known = f.info;
                        *origin = VmciOrigin::Ram {
                            phys: f.phys,
                            copies: f.copies.len(),
                        };
                    } else {
                        crashed_by_copy.push(known.raw().to_vec());
                    }
                }
                continue;
            }
            infos.push((
                f.info,
                VmciOrigin::Ram {
                    phys: f.phys,
                    copies: f.copies.len(),
                },
            ));
        }
    }
    let mem = dump.memory.as_ref();
    for (n, (info, origin)) in infos.into_iter().enumerate() {
        // The input's or --arch's architecture, else the one a walker recognises in
        // the text, else the default raw images always had.
        let arch = opts
            .arch
            .or(dump.arch)
            .or_else(|| registry.arch_from_vmcoreinfo(&info))
            .unwrap_or_else(|| effective_arch(dump, opts));
        let from_ram = n >= given;
        // A copy in RAM counts only if it is a kernel's: its utsname is where it says.
        if from_ram {
            if let Err(why) = info.read_kernel_utsname(arch.elf_machine(), mem) {
                out.rejected.push(format!(
                    "{}: VMCOREINFO at {} (OSRELEASE {}): {why}",
                    dump.path.display(),
                    origin.describe(),
                    info.osrelease().unwrap_or("?")
                ));
                continue;
            }
        }
        let wopts = walk_options(Some(&info), 52);
        let root = registry.roots_from_vmcoreinfo(arch, &info)?;
        let (root, check) = match root {
            None => (
                None,
                Err("VMCOREINFO lacks what the walker needs for the root".to_string()),
            ),
            Some((cpu, _)) => {
                let (w, _) = registry.walker_for_cpus(std::slice::from_ref(&cpu), None, arch)?;
                let (mode, addr) = mode_and_root(w.as_ref(), &cpu);
                let check = check_root(w.as_ref(), &cpu, &info, arch, dump);
                (Some((cpu, mode, addr)), check)
            }
        };
        let mut running_cpus = Vec::new();
        for c in cpus {
            let Ok((w, _)) = registry.walker_for_cpus(std::slice::from_ref(c), None, arch) else {
                continue;
            };
            if !w.paging_enabled(c) {
                continue;
            }
            match maps_stext(w.as_ref(), c, &info, arch, dump, &wopts) {
                Ok(_) => running_cpus.push(c.index),
                Err(Untestable) => {
                    if !out.untestable_cpus.contains(&c.index) {
                        out.untestable_cpus.push(c.index);
                    }
                }
                Err(_) => {}
            }
        }
        out.list.push(Kernel {
            index: out.list.len(),
            crashed: info.get("CRASHTIME").is_some()
                || crashed_by_copy.iter().any(|r| r.as_slice() == info.raw()),
            info,
            origin,
            arch: Some(arch),
            running_cpus,
            root,
            check,
        });
    }
    Ok(out)
}

/// Two VMCOREINFO texts are the same kernel's when their lines are equal, `CRASHTIME=`
/// aside (the kernel appends it at panic to one copy: a copy made before, such as the
/// text page, lacks it) and trailing NULs and whitespace aside.
fn same_kernel(a: &VmcoreInfo, b: &VmcoreInfo) -> bool {
    let t = |v: &VmcoreInfo| {
        let r = v.raw();
        let end = r.iter().position(|&c| c == 0).unwrap_or(r.len());
        String::from_utf8_lossy(&r[..end])
            .lines()
            .filter(|l| !l.starts_with("CRASHTIME="))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    t(a) == t(b)
}

/// A CPU's mode and (first) root, as its walker describes them.
pub fn mode_and_root(w: &dyn ArchWalker, cpu: &CpuState) -> (String, u64) {
    match w.regime(cpu, &dumpconv_core::WalkOptions::default()) {
        Ok(Regime::Paging { mode, spaces }) => (
            mode.into_owned(),
            spaces.iter().map(|s| s.root).next_back().unwrap_or(0),
        ),
        _ => (
            w.mode_of(cpu)
                .map_or_else(|| "unknown".into(), |m| m.into_owned()),
            0,
        ),
    }
}

/// Why a table does not map `_stext` where the kernel is.
#[derive(Debug)]
enum StextError {
    /// The walker cannot translate single addresses.
    Untestable,
    Wrong(String),
}
use StextError::Untestable;

impl std::fmt::Display for StextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StextError::Untestable => f.write_str("the walker cannot translate one address"),
            StextError::Wrong(s) => f.write_str(s),
        }
    }
}

/// Does `cpu`'s table map `SYMBOL(_stext)` where the kernel-image rules of `info` put
/// it? Err says what it does instead.
fn maps_stext(
    w: &dyn ArchWalker,
    cpu: &CpuState,
    info: &VmcoreInfo,
    arch: Arch,
    dump: &Dump,
    wopts: &dumpconv_core::WalkOptions,
) -> std::result::Result<u64, StextError> {
    let stext = info
        .symbol("_stext")
        .ok_or(StextError::Wrong("VMCOREINFO has no SYMBOL(_stext)".into()))?;
    let expect = info.kernel_image_phys(arch.elf_machine(), stext);
    if expect.is_empty() {
        return Err(StextError::Wrong(format!(
            "no kernel-image rule places _stext {stext:#x} for {arch}"
        )));
    }
    let t = match w.translate(cpu, dump.memory.as_ref(), wopts, stext) {
        Ok(t) => t,
        Err(Error::Unsupported(_)) => return Err(Untestable),
        Err(e) => return Err(StextError::Wrong(e.to_string())),
    };
    match t.phys {
        Some(p) if expect.contains(&p) => Ok(p),
        Some(p) => Err(StextError::Wrong(format!(
            "it maps _stext {stext:#x} to physical {p:#x}, not {:#x} where the kernel image is",
            expect[0]
        ))),
        None => Err(StextError::Wrong(format!(
            "it does not map _stext {stext:#x}{}",
            t.fault.map(|f| format!(" ({f})")).unwrap_or_default()
        ))),
    }
}

/// The candidate checks of a root from VMCOREINFO: inside RAM, maps `_stext` to the
/// kernel image, and the kernel's utsname reads "Linux" and OSRELEASE.
fn check_root(
    w: &dyn ArchWalker,
    cpu: &CpuState,
    info: &VmcoreInfo,
    arch: Arch,
    dump: &Dump,
) -> std::result::Result<(), String> {
    // A walker that walks by itself (a plugin) does not describe its roots: its
    // answer is checked by translation and utsname only.
    if let Ok(Regime::Paging { spaces, .. }) = w.regime(cpu, &walk_options(Some(info), 52)) {
        for sp in &spaces {
            if !dump.memory.is_ram(sp.root, 1) {
                return Err(format!("root {:#x} is outside RAM", sp.root));
            }
        }
    }
    let wopts = walk_options(Some(info), 52);
    match maps_stext(w, cpu, info, arch, dump, &wopts) {
        Ok(_) | Err(Untestable) => {}
        Err(e) => return Err(e.to_string()),
    }
    info.read_kernel_utsname(arch.elf_machine(), dump.memory.as_ref())?;
    Ok(())
}

/// The root `--paging` walks.
#[derive(Debug, Clone)]
pub struct RootChoice {
    /// "cpu", "vmcoreinfo", "scan" or "user".
    pub source: &'static str,
    /// The kernel (index in [`Kernels::list`]) it belongs to, when known.
    pub kernel: Option<usize>,
    pub mode: String,
    pub root: u64,
    /// The CPU states walked.
    pub cpus: Vec<CpuState>,
}

impl RootChoice {
    pub fn describe(&self) -> String {
        format!(
            "root {} {:#x} from {}{}",
            self.mode,
            self.root,
            self.source,
            self.kernel
                .map(|k| format!(" (kernel {k})"))
                .unwrap_or_default()
        )
    }
}

fn root_error(dump: &Dump, msg: String) -> Error {
    Error::format(
        dump.path.clone(),
        None,
        "page-table root",
        format!(
            "{msg} (give --root ADDR --paging-mode MODE or --cr3, or --paging-fallback to \
             write the physical view)"
        ),
    )
}

/// The kernel `--kernel` (or the default) means, with a warning when the choice is not
/// obvious. None when there is no kernel.
pub fn pick_kernel<'a>(
    dump: &Dump,
    kernels: &'a Kernels,
    pick: Option<KernelPick>,
    warnings: &mut Vec<String>,
) -> Result<Option<&'a Kernel>> {
    let list = &kernels.list;
    let names = || {
        if list.is_empty() {
            return "none".to_string();
        }
        list.iter()
            .map(Kernel::describe)
            .collect::<Vec<_>>()
            .join("; ")
    };
    match pick {
        Some(KernelPick::Index(n)) => list.get(n).map(Some).ok_or_else(|| {
            Error::invalid(format!(
                "--kernel {n}: {} has {} kernel(s) ({})",
                dump.path.display(),
                list.len(),
                names()
            ))
        }),
        Some(KernelPick::Crashed) => list.iter().find(|k| k.crashed).map(Some).ok_or_else(|| {
            root_error(
                dump,
                format!(
                    "--kernel crashed: no kernel's VMCOREINFO has CRASHTIME= (kernels: {})",
                    names()
                ),
            )
        }),
        // A CPU stopped in the crashed kernel runs it too; the running kernel is the
        // other one when there is one.
        Some(KernelPick::Running) => list
            .iter()
            .find(|k| !k.crashed && !k.running_cpus.is_empty())
            .or_else(|| list.iter().find(|k| !k.running_cpus.is_empty()))
            .map(Some)
            .ok_or_else(|| {
                root_error(
                    dump,
                    format!(
                        "--kernel running: no CPU's tables map a known kernel (kernels: {})",
                        names()
                    ),
                )
            }),
        None => {
            let usable = |k: &&Kernel| k.check.is_ok() || !k.running_cpus.is_empty();
            let crashed = list.iter().filter(usable).find(|k| k.crashed);
            let running = list
                .iter()
                .find(|k| !k.crashed && !k.running_cpus.is_empty())
                .or_else(|| list.iter().find(|k| !k.running_cpus.is_empty()));
            let chosen = match (crashed, running) {
                (Some(c), Some(r)) if c.index != r.index => {
                    warnings.push(format!(
                        "--paging: the CPUs run kernel {} ({}, a capture kernel?) but kernel {} \
                         ({}) crashed: using the crashed kernel (--kernel running for the other)",
                        r.index,
                        r.osrelease(),
                        c.index,
                        c.osrelease()
                    ));
                    Some(c)
                }
                (Some(c), _) => Some(c),
                (None, Some(r)) => Some(r),
                (None, None) => list.iter().find(usable).or(list.first()),
            };
            if let Some(k) = chosen {
                for other in list.iter().filter(|o| o.index != k.index) {
                    if let Err(why) = &other.check {
                        warnings.push(format!(
                            "kernel {} ({}, VMCOREINFO from {}): root rejected: {why}",
                            other.index,
                            other.osrelease(),
                            other.origin.describe()
                        ));
                    }
                }
                if list.len() > 1 && crashed.is_none() && running.is_none() {
                    warnings.push(format!(
                        "--paging: {} kernels found, none crashed or running on a CPU; using \
                         kernel {} ({}); --kernel N picks another",
                        list.len(),
                        k.index,
                        k.osrelease()
                    ));
                }
            }
            Ok(chosen)
        }
    }
}

/// Choose the root `--paging` walks (docs/roots.md): `--cr3`/`--root ADDR` and
/// `--cpu-state` first, then `--root cpu|vmcoreinfo|scan`, else the chosen kernel's
/// CPUs, else its VMCOREINFO root, else (no VMCOREINFO at all) CPUs with paging, else
/// the last-resort scan. Ok(None): nothing usable and `--paging-fallback` given (a
/// warning says so). Warnings are pushed to `warnings`.
pub fn choose_root(
    dump: &Dump,
    opts: &ConvertOptions,
    registry: &Registry,
    kernels: &Kernels,
    cpus: &[CpuState],
    warnings: &mut Vec<String>,
) -> Result<Option<RootChoice>> {
    let arch = effective_arch(dump, opts);
    let walker_of = |c: &CpuState| {
        registry
            .walker_for_cpus(std::slice::from_ref(c), None, arch)
            .ok()
            .map(|(w, _)| w)
    };
    let choice = |cpus: Vec<CpuState>, source: &'static str, kernel: Option<usize>| {
        let first = cpus
            .iter()
            .find(|c| walker_of(c).is_some_and(|w| w.paging_enabled(c)))
            .or(cpus.first());
        let (mode, root) = first
            .and_then(|c| walker_of(c).map(|w| mode_and_root(w.as_ref(), c)))
            .unwrap_or_else(|| ("none".into(), 0));
        Some(RootChoice {
            source,
            kernel,
            mode,
            root,
            cpus,
        })
    };
    let paging_cpus = |only: Option<&Kernel>| -> Vec<CpuState> {
        cpus.iter()
            .filter(|c| walker_of(c).is_some_and(|w| w.paging_enabled(c)))
            .filter(|c| only.is_none_or(|k| k.running_cpus.contains(&c.index)))
            .cloned()
            .collect()
    };
    let fallback = opts.paging.as_ref().is_some_and(|p| p.fallback);
    let fail = |msg: String, warnings: &mut Vec<String>| -> Result<Option<RootChoice>> {
        if fallback {
            warnings.push(format!(
                "--paging: {msg}; --paging-fallback: writing the physical view"
            ));
            Ok(None)
        } else {
            Err(root_error(dump, msg))
        }
    };
    let vmci_root = |k: &Kernel, warnings: &mut Vec<String>| -> Result<Option<RootChoice>> {
        match (&k.root, &k.check) {
            (Some((cpu, mode, root)), Ok(())) => Ok(Some(RootChoice {
                source: "vmcoreinfo",
                kernel: Some(k.index),
                mode: mode.clone(),
                root: *root,
                cpus: vec![cpu.clone()],
            })),
            (_, Err(why)) => fail(
                format!(
                    "kernel {} ({}, VMCOREINFO from {}): no CPU runs it and its root is \
                     rejected: {why}",
                    k.index,
                    k.osrelease(),
                    k.origin.describe()
                ),
                warnings,
            ),
            (None, Ok(())) => fail(format!("kernel {}: no root", k.index), warnings),
        }
    };

    // Roots the user gave win over everything.
    if opts.root.is_some() {
        return Ok(choice(cpus.to_vec(), "user", None));
    }
    if opts.cpus.is_some() && !paging_cpus(None).is_empty() {
        return Ok(choice(cpus.to_vec(), "cpu", None));
    }
    match opts.root_source {
        Some(RootSource::Cpu) => {
            let k = match opts.kernel {
                Some(_) => pick_kernel(dump, kernels, opts.kernel, warnings)?,
                None => None,
            };
            let c = paging_cpus(k);
            // `--kernel running` found only the crashed kernel on a CPU: CPUs that run
            // no known kernel run the other one.
            if opts.kernel == Some(KernelPick::Running) && k.is_some_and(|k| k.crashed) {
                let unknown: Vec<CpuState> = paging_cpus(None)
                    .into_iter()
                    .filter(|c| {
                        !kernels
                            .list
                            .iter()
                            .any(|k| k.running_cpus.contains(&c.index))
                    })
                    .collect();
                if !unknown.is_empty() {
                    return Ok(choice(unknown, "cpu", None));
                }
            }
            if c.is_empty() {
                let msg = format!(
                    "--root cpu: no CPU has paging enabled{}",
                    k.map(|k| format!(" and runs kernel {}", k.index))
                        .unwrap_or_default()
                );
                return fail(msg, warnings);
            }
            let kernel = k.map(|k| k.index).or_else(|| {
                kernels
                    .list
                    .iter()
                    .find(|k| k.running_cpus.contains(&c[0].index))
                    .map(|k| k.index)
            });
            return Ok(choice(c, "cpu", kernel));
        }
        Some(RootSource::Vmcoreinfo) => {
            return match pick_kernel(dump, kernels, opts.kernel, warnings)? {
                Some(k) => vmci_root(k, warnings),
                None => fail("--root vmcoreinfo: no VMCOREINFO found".into(), warnings),
            };
        }
        Some(RootSource::Scan) => return scan_choice(dump, registry, kernels, opts, warnings),
        None => {}
    }

    match pick_kernel(dump, kernels, opts.kernel, warnings)? {
        Some(k) => {
            let c = paging_cpus(Some(k));
            if !c.is_empty() {
                return Ok(choice(c, "cpu", Some(k.index)));
            }
            // CPUs whose walker cannot say which kernel they run: taken as before
            // kernels were told apart, unless a kernel was asked for.
            let unknown: Vec<CpuState> = paging_cpus(None)
                .into_iter()
                .filter(|c| kernels.untestable_cpus.contains(&c.index))
                .collect();
            if !unknown.is_empty() && opts.kernel.is_none() {
                return Ok(choice(unknown, "cpu", None));
            }
            vmci_root(k, warnings)
        }
        None => {
            let c = paging_cpus(None);
            if !c.is_empty() {
                return Ok(choice(c, "cpu", None));
            }
            scan_choice(dump, registry, kernels, opts, warnings)
        }
    }
}

/// The last-resort scan, for when there is no VMCOREINFO at all.
fn scan_choice(
    dump: &Dump,
    registry: &Registry,
    kernels: &Kernels,
    opts: &ConvertOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<RootChoice>> {
    let arch = opts.arch.or(dump.arch);
    let banners = if kernels.scanned && kernels.banners_scanned {
        kernels.banners.clone()
    } else {
        scan_ram(
            dump.memory.as_ref(),
            &ScanLimits {
                max_candidates: 0,
                ..ScanLimits::default()
            },
        )?
        .banners
    };
    let found = registry.scan_roots(arch, dump.memory.as_ref(), &banners, 256)?;
    match found {
        Some((cpu, why)) => {
            let a = cpu.arch.unwrap_or(Arch::DEFAULT);
            let (w, _) = registry.walker_for_cpus(std::slice::from_ref(&cpu), None, a)?;
            let (mode, root) = mode_and_root(w.as_ref(), &cpu);
            warnings.push(format!(
                "--paging: no VMCOREINFO and no CPU with paging: the root is a GUESS from \
                 scanning RAM ({why}); give --vmcoreinfo, or --root ADDR --paging-mode MODE, \
                 to be sure"
            ));
            Ok(Some(RootChoice {
                source: "scan",
                kernel: None,
                mode,
                root,
                cpus: vec![cpu],
            }))
        }
        None => {
            let msg = format!(
                "no page-table root: no CPU with paging enabled, no VMCOREINFO{}, and no table \
                 in RAM maps a Linux banner at a kernel address ({} banner(s) in RAM)",
                if kernels.scanned {
                    " (none in RAM either)"
                } else {
                    ""
                },
                banners.len()
            );
            if opts.paging.as_ref().is_some_and(|p| p.fallback) {
                warnings.push(format!(
                    "--paging: {msg}; --paging-fallback: writing the physical view"
                ));
                Ok(None)
            } else {
                Err(root_error(dump, msg))
            }
        }
    }
}
