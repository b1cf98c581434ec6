//! The host side of the plugin ABI: a validated plugin descriptor wrapped as an
//! [`ArchWalker`] or a [`DumpWriter`], so that the rest of dumpconv cannot tell a loaded
//! plugin from a built-in one.
//!
//! For each call the adapter builds a [`abi::Host`] whose `ctx` points at a [`CallCtx`]
//! living on the adapter's stack, and whose callbacks are `extern "C"` trampolines over
//! `&dyn PhysicalMemory`, `&mut dyn Sink`, `&dyn Progress` and a mapping collector. The
//! plan's data is laid out in host-owned `Vec`s borrowed for the call.
//!
//! Rules enforced here (see the header):
//! - every trampoline catches panics; a panic or an error in a callback is recorded, every
//!   later callback fails, and the call fails whatever the plugin returns;
//! - a plugin's error code becomes [`Error::Plugin`] naming the file, the plugin, the
//!   code and the plugin's message (a failed output write stays [`Error::Output`], so the
//!   user sees the real cause and exit code);
//! - a mapping whose physical range is not RAM of the dump fails the walk;
//! - all callbacks are thread-safe (a writer may read memory from several threads).

#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use std::borrow::Cow;

use crate::arch::Arch;
use crate::cpu::CpuState;
use crate::error::{Error, Result};
use crate::mapping::{Mapping, MappingList};
use crate::memory::PhysicalMemory;
use crate::progress::Progress;
use crate::sink::Sink;
use crate::vmcoreinfo::VmcoreInfo;
use crate::walker::{ArchWalker, Translation, WalkOptions, WalkStats};
use crate::writer::{DumpPlan, DumpWriter};

use super::abi;

/// Longest message kept from `set_error` or `log`.
const MAX_MESSAGE: usize = 4096;
/// Most warnings kept from one walk (as `WalkStats::warnings` keeps).
const MAX_WARNINGS: usize = 32;

/// What kind of plugin a descriptor describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Walker,
    Writer,
}

impl PluginKind {
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Walker => "walker",
            PluginKind::Writer => "writer",
        }
    }
}

/// The identity of a loaded plugin, from its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The shared library it came from (or a label for in-process plugins).
    pub path: PathBuf,
    pub kind: PluginKind,
    pub name: String,
    pub version: String,
    pub description: String,
    /// `abi_major` of the descriptor.
    pub abi_major: u32,
}

impl PluginInfo {
    fn error(&self, msg: impl std::fmt::Display) -> Error {
        Error::Plugin {
            path: self.path.clone(),
            msg: format!("{} {:?}: {msg}", self.kind.name(), self.name),
        }
    }
}

/// A plugin wrapped as the trait its kind implements.
#[derive(Clone)]
pub enum LoadedPlugin {
    Walker(Arc<PluginWalker>),
    Writer(Arc<PluginWriter>),
}

impl LoadedPlugin {
    pub fn info(&self) -> &PluginInfo {
        match self {
            LoadedPlugin::Walker(w) => &w.info,
            LoadedPlugin::Writer(w) => &w.info,
        }
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LoadedPlugin").field(self.info()).finish()
    }
}

type WalkFn = unsafe extern "C" fn(
    *const abi::Host,
    *const abi::Cpu,
    *const abi::WalkOptions,
    *mut abi::WalkStats,
) -> i32;
type WalkFnV1 = unsafe extern "C" fn(
    *const abi::Host,
    *const abi::v1::Cpu,
    *const abi::WalkOptions,
    *mut abi::WalkStats,
) -> i32;
type CpuFromRootFn =
    unsafe extern "C" fn(*const abi::Host, abi::Arch, *const c_char, usize, u64) -> i32;
type RootsFromVmcoreinfoFn =
    unsafe extern "C" fn(*const abi::Host, abi::Arch, *const u8, usize) -> i32;
type CpuInfoFn = unsafe extern "C" fn(*const abi::Host, *const abi::Cpu, *mut abi::CpuInfo) -> i32;
type TranslateFn = unsafe extern "C" fn(
    *const abi::Host,
    *const abi::Cpu,
    *const abi::WalkOptions,
    u64,
    *mut abi::Translation,
) -> i32;
/// A writer's `write`: its plan argument is an `abi::Plan` (v2) or an `abi::v1::Plan`
/// (v1), by the plugin's ABI version.
type WriteFn = unsafe extern "C" fn(*const abi::Host, *const abi::Plan) -> i32;

/// The functions of a walker plugin, by ABI version.
enum WalkerFns {
    /// Version 1: x86 only; the host derives the mode from CR0/CR4/EFER.
    V1 { walk: WalkFnV1, raw_modes: Vec<u32> },
    /// Version 2: any architecture; the plugin says what a CPU's registers mean.
    V2 {
        walk: WalkFn,
        cpu_info: Option<CpuInfoFn>,
        translate: Option<TranslateFn>,
        cpu_from_root: Option<CpuFromRootFn>,
        roots_from_vmcoreinfo: Option<RootsFromVmcoreinfoFn>,
    },
}

/// A walker plugin as an [`ArchWalker`].
pub struct PluginWalker {
    info: PluginInfo,
    /// The architectures handled (v1: x86_64 and i386).
    arches: Vec<Arch>,
    /// Mode names (v1: the x86 names of the values dumpconv knows).
    modes: Vec<&'static str>,
    fns: WalkerFns,
}

/// A writer plugin as a [`DumpWriter`].
pub struct PluginWriter {
    info: PluginInfo,
    /// The ABI version of its plan.
    abi_major: u32,
    /// Borrowed from the plugin's static string: the library is never unloaded.
    extensions: Vec<&'static str>,
    /// `DUMPCONV_WRITER_SELF_COMPRESSING`: see [`DumpWriter::compresses_itself`].
    self_compressing: bool,
    write: WriteFn,
}

/// Longest descriptor string (name, version, description, extensions) accepted,
/// without its NUL. A string that is not terminated within this is a broken
/// descriptor, and looking further would read on through the library's memory.
const MAX_DESCRIPTOR_STRING: usize = 4096;

/// Read a NUL-terminated UTF-8 string of the descriptor, looking for the NUL no further
/// than [`MAX_DESCRIPTOR_STRING`] bytes.
///
/// # Safety
/// `p` is NULL or points at a string that lives as long as the library (which is never
/// unloaded) and is readable up to its NUL or [`MAX_DESCRIPTOR_STRING`] + 1 bytes,
/// whichever comes first.
unsafe fn static_str(p: *const c_char, what: &str, path: &Path) -> Result<&'static str> {
    if p.is_null() {
        return Err(Error::Plugin {
            path: path.to_path_buf(),
            msg: format!("descriptor: {what} is NULL"),
        });
    }
    let p = p.cast::<u8>();
    let mut len = 0;
    loop {
        // SAFETY: readable up to the NUL or the limit by the caller's contract; we stop
        // at whichever comes first.
        if unsafe { p.add(len).read() } == 0 {
            break;
        }
        if len == MAX_DESCRIPTOR_STRING {
            return Err(Error::Plugin {
                path: path.to_path_buf(),
                msg: format!(
                    "descriptor: {what} is not NUL-terminated within \
                     {MAX_DESCRIPTOR_STRING} bytes"
                ),
            });
        }
        len += 1;
    }
    // SAFETY: the `len` bytes before the NUL were just read; static by contract.
    let b: &'static [u8] = unsafe { std::slice::from_raw_parts(p, len) };
    std::str::from_utf8(b).map_err(|e| Error::Plugin {
        path: path.to_path_buf(),
        msg: format!("descriptor: {what} is not valid UTF-8 ({e})"),
    })
}

/// An output name extension a writer may claim: what `Path::extension` can give (no
/// dot), short, and plain enough to type.
fn valid_extension(ext: &str) -> bool {
    (1..=16).contains(&ext.len())
        && ext
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_+".contains(&b))
}

/// A plugin name must be usable on the command line (`--format NAME`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// ABI version 1 is x86's: its CPU is CR0/CR3/CR4/EFER/A20 plus an x86 paging-mode
/// number, its modes and architectures are x86's. These are the v1 tables.
pub mod v1 {
    use super::abi::v1 as abi;
    use crate::arch::Arch;
    use crate::cpu::CpuState;

    /// v1 paging-mode numbers and their names.
    pub const MODES: [(u32, &str); 5] = [
        (abi::DUMPCONV_PAGING_OFF, "off"),
        (abi::DUMPCONV_PAGING_32BIT, "32bit"),
        (abi::DUMPCONV_PAGING_PAE, "pae"),
        (abi::DUMPCONV_PAGING_4LEVEL, "4level"),
        (abi::DUMPCONV_PAGING_5LEVEL, "5level"),
    ];

    /// The architectures a v1 walker handles.
    pub static ARCHES: [Arch; 2] = [Arch::X86_64, Arch::I386];

    pub fn mode_name(m: u32) -> Option<&'static str> {
        MODES.iter().find(|(v, _)| *v == m).map(|(_, n)| *n)
    }

    pub fn mode_value(name: &str) -> Option<u32> {
        MODES.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }

    const CR0_PG: u64 = 1 << 31;
    const CR4_PAE: u64 = 1 << 5;
    const CR4_LA57: u64 = 1 << 12;
    const EFER_LMA: u64 = 1 << 10;

    /// The v1 paging mode of an x86 CPU from its control registers (None: CR0, or CR4
    /// with paging on, not recorded).
    pub fn x86_mode(cpu: &CpuState) -> Option<u32> {
        let cr0 = cpu.reg("cr0")?;
        if cr0 & CR0_PG == 0 {
            return Some(abi::DUMPCONV_PAGING_OFF);
        }
        let cr4 = cpu.reg("cr4")?;
        if cr4 & CR4_PAE == 0 {
            return Some(abi::DUMPCONV_PAGING_32BIT);
        }
        let efer = cpu.reg("efer").unwrap_or(0);
        Some(if efer & EFER_LMA == 0 {
            abi::DUMPCONV_PAGING_PAE
        } else if cr4 & CR4_LA57 != 0 {
            abi::DUMPCONV_PAGING_5LEVEL
        } else {
            abi::DUMPCONV_PAGING_4LEVEL
        })
    }

    /// Start of the kernel half in a v1 mode: bit 31 in 32-bit and PAE paging, bit 63
    /// (after sign extension) in IA-32e paging.
    pub fn kernel_start(mode: Option<u32>) -> u64 {
        match mode {
            Some(abi::DUMPCONV_PAGING_32BIT | abi::DUMPCONV_PAGING_PAE) => 1 << 31,
            _ => 1 << 63,
        }
    }

    /// The v1 architecture number (0 when v1 has none for it).
    pub fn arch_value(a: Arch) -> u32 {
        if a == Arch::X86_64 {
            abi::DUMPCONV_ARCH_X86_64
        } else if a == Arch::I386 {
            abi::DUMPCONV_ARCH_X86
        } else {
            0
        }
    }

    pub fn arch_from_value(v: u32) -> Option<Arch> {
        match v {
            abi::DUMPCONV_ARCH_X86_64 => Some(Arch::X86_64),
            abi::DUMPCONV_ARCH_X86 => Some(Arch::I386),
            _ => None,
        }
    }
}

/// The name of a paging-mode value, for `dumpconv plugins` (values v1 does not define
/// are shown as numbers).
pub fn mode_name(m: u32) -> String {
    v1::mode_name(m).map_or_else(|| format!("{m:#x}"), str::to_string)
}

/// The plugin ABI major versions this host loads.
pub const SUPPORTED_ABI: [u32; 2] = [abi::v1::DUMPCONV_ABI_MAJOR, abi::DUMPCONV_ABI_MAJOR];

/// Validate a descriptor and wrap it. The loader calls this after dlopen; tests call it
/// with a descriptor from an in-process entry function.
///
/// Checks, in this order, before anything else of the plugin is read or called:
/// `abi_major`, `struct_size`, kind, the matching table (non-NULL, the other one NULL, its
/// own `struct_size`, its function non-NULL), then the strings (UTF-8, a usable name).
///
/// # Safety
/// `desc` is NULL or points at a descriptor, and everything it points to, that stays
/// valid and unchanged as long as the process runs (the library is never unloaded).
/// The function pointers must follow the ABI.
pub unsafe fn wrap_descriptor(path: &Path, desc: *const abi::Plugin) -> Result<LoadedPlugin> {
    let err = |msg: String| Error::Plugin {
        path: path.to_path_buf(),
        msg,
    };
    if desc.is_null() {
        return Err(err(format!("{} returned NULL", abi::DUMPCONV_ENTRY_SYMBOL)));
    }
    // Read the two leading u32s first: a descriptor from another ABI may be shorter than
    // ours.
    // SAFETY: every ABI version starts with abi_major and struct_size.
    let (abi_major, struct_size) = unsafe {
        let p = desc.cast::<u32>();
        (p.read_unaligned(), p.add(1).read_unaligned())
    };
    if !SUPPORTED_ABI.contains(&abi_major) {
        return Err(err(format!(
            "plugin ABI major version {abi_major}, this dumpconv speaks {} and {} (rebuild \
             the plugin against this dumpconv's dumpconv_plugin.h or SDK)",
            abi::v1::DUMPCONV_ABI_MAJOR,
            abi::DUMPCONV_ABI_MAJOR
        )));
    }
    if (struct_size as usize) < abi::PLUGIN_V1_SIZE {
        return Err(err(format!(
            "descriptor struct_size {struct_size} is smaller than the {} bytes of ABI \
             {abi_major}",
            abi::PLUGIN_V1_SIZE,
        )));
    }
    // SAFETY: the descriptor is at least as large as our struct (checked just above) and
    // static by the caller's contract.
    let d: &'static abi::Plugin = unsafe { &*desc };
    let kind = match d.kind {
        abi::DUMPCONV_KIND_WALKER => PluginKind::Walker,
        abi::DUMPCONV_KIND_WRITER => PluginKind::Writer,
        k => return Err(err(format!("descriptor: unknown kind {k}"))),
    };
    match kind {
        PluginKind::Walker if d.walker.is_null() || !d.writer.is_null() => {
            return Err(err(
                "descriptor: a walker must set walker and leave writer NULL".into(),
            ))
        }
        PluginKind::Writer if d.writer.is_null() || !d.walker.is_null() => {
            return Err(err(
                "descriptor: a writer must set writer and leave walker NULL".into(),
            ))
        }
        _ => {}
    }
    // SAFETY: static strings by the caller's contract; NULL is refused.
    let (name, version, description) = unsafe {
        (
            static_str(d.name, "name", path)?,
            static_str(d.version, "version", path)?,
            static_str(d.description, "description", path)?,
        )
    };
    if !valid_name(name) {
        return Err(err(format!(
            "descriptor: name {name:?} is not 1 to 64 ASCII letters, digits, '-', '_' or '.'"
        )));
    }
    let info = PluginInfo {
        path: path.to_path_buf(),
        kind,
        name: name.to_string(),
        version: version.to_string(),
        description: description.to_string(),
        abi_major,
    };
    match kind {
        PluginKind::Walker if abi_major == abi::v1::DUMPCONV_ABI_MAJOR => {
            // SAFETY: non-NULL (checked), static by contract. Read its struct_size first.
            let size = unsafe { d.walker.cast::<u32>().read_unaligned() } as usize;
            if size < abi::v1::WALKER_V1_SIZE {
                return Err(info.error(format!(
                    "walker table struct_size {size} is smaller than {}",
                    abi::v1::WALKER_V1_SIZE
                )));
            }
            // SAFETY: a version-1 descriptor's walker table is a v1 table, large enough
            // (checked), static by contract.
            let t: &'static abi::v1::Walker = unsafe { &*d.walker.cast::<abi::v1::Walker>() };
            let walk = t
                .walk
                .ok_or_else(|| info.error("walker table: walk is NULL"))?;
            if t.mode_count > 0 && t.modes.is_null() {
                return Err(info.error("walker table: modes is NULL"));
            }
            if t.mode_count > 4096 {
                return Err(info.error(format!(
                    "walker table: {} modes is not plausible",
                    t.mode_count
                )));
            }
            let raw_modes = if t.mode_count == 0 {
                Vec::new()
            } else {
                // SAFETY: non-NULL, mode_count entries, static by contract.
                unsafe { std::slice::from_raw_parts(t.modes, t.mode_count as usize) }.to_vec()
            };
            let modes = raw_modes
                .iter()
                .filter_map(|&m| v1::mode_name(m))
                .filter(|&n| n != "off")
                .collect();
            Ok(LoadedPlugin::Walker(Arc::new(PluginWalker {
                info,
                arches: v1::ARCHES.to_vec(),
                modes,
                fns: WalkerFns::V1 { walk, raw_modes },
            })))
        }
        PluginKind::Walker => {
            // SAFETY: non-NULL (checked), static by contract. Read its struct_size first.
            let size = unsafe { d.walker.cast::<u32>().read_unaligned() } as usize;
            if size < abi::WALKER_V2_SIZE {
                return Err(info.error(format!(
                    "walker table struct_size {size} is smaller than {}",
                    abi::WALKER_V2_SIZE
                )));
            }
            // Copy the table: a plugin built before `cpu_from_root` and
            // `roots_from_vmcoreinfo` were appended has a shorter one, whose missing
            // fields read as NULL.
            let mut full = std::mem::MaybeUninit::<abi::Walker>::zeroed();
            // SAFETY: the table is readable for `size` bytes (its struct_size, at least
            // the first published size: checked) and static by contract; we copy no more
            // than our struct holds. All-zero bytes are a valid `abi::Walker` (NULL
            // pointers, None functions), so the fields not covered stay valid.
            let t: abi::Walker = unsafe {
                std::ptr::copy_nonoverlapping(
                    d.walker.cast::<u8>(),
                    full.as_mut_ptr().cast::<u8>(),
                    size.min(std::mem::size_of::<abi::Walker>()),
                );
                full.assume_init()
            };
            let walk = t
                .walk
                .ok_or_else(|| info.error("walker table: walk is NULL"))?;
            if t.arch_count == 0 || t.arches.is_null() {
                return Err(info.error("walker table: no architectures (arches)"));
            }
            if t.arch_count > 4096 {
                return Err(info.error(format!(
                    "walker table: {} architectures is not plausible",
                    t.arch_count
                )));
            }
            // SAFETY: non-NULL, arch_count entries, static by contract.
            let arches = unsafe { std::slice::from_raw_parts(t.arches, t.arch_count as usize) }
                .iter()
                .map(|a| Arch::new(a.machine, a.word_size))
                .collect::<Vec<_>>();
            if let Some(a) = arches
                .iter()
                .find(|a| a.elf_machine() == 0 || ![4, 8].contains(&a.word_size()))
            {
                return Err(info.error(format!(
                    "walker table: architecture {a} is not an ELF machine with 4- or 8-byte \
                     words"
                )));
            }
            let modes: Vec<&'static str> = if t.modes.is_null() {
                Vec::new()
            } else {
                // SAFETY: non-NULL, static by contract.
                unsafe { static_str(t.modes, "modes", path)? }
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            };
            if let Some(bad) = modes.iter().find(|m| !valid_name(m)) {
                return Err(info.error(format!(
                    "walker table: mode {bad:?} is not 1 to 64 ASCII letters, digits, '-', \
                     '_' or '.'"
                )));
            }
            Ok(LoadedPlugin::Walker(Arc::new(PluginWalker {
                info,
                arches,
                modes,
                fns: WalkerFns::V2 {
                    walk,
                    cpu_info: t.cpu_info,
                    translate: t.translate,
                    cpu_from_root: t.cpu_from_root,
                    roots_from_vmcoreinfo: t.roots_from_vmcoreinfo,
                },
            })))
        }
        PluginKind::Writer => {
            // SAFETY: non-NULL (checked), static by contract. Read its struct_size first.
            let size = unsafe { d.writer.cast::<u32>().read_unaligned() } as usize;
            if size < abi::WRITER_V1_SIZE {
                return Err(info.error(format!(
                    "writer table struct_size {size} is smaller than {}",
                    abi::WRITER_V1_SIZE
                )));
            }
            // SAFETY: large enough (checked), static by contract.
            let t: &'static abi::Writer = unsafe { &*d.writer };
            let write = t
                .write
                .ok_or_else(|| info.error("writer table: write is NULL"))?;
            let extensions: Vec<&'static str> = if t.extensions.is_null() {
                Vec::new()
            } else {
                // SAFETY: non-NULL, static by contract.
                unsafe { static_str(t.extensions, "extensions", path)? }
                    .split(',')
                    .map(|e| e.trim().strip_prefix('.').unwrap_or(e.trim()))
                    .filter(|e| !e.is_empty())
                    .collect()
            };
            if let Some(bad) = extensions.iter().find(|e| !valid_extension(e)) {
                return Err(info.error(format!(
                    "writer table: extension {bad:?} is not 1 to 16 ASCII letters, digits, \
                     '-', '_' or '+' (an output name's last extension, without its dot)"
                )));
            }
            Ok(LoadedPlugin::Writer(Arc::new(PluginWriter {
                info,
                abi_major,
                extensions,
                self_compressing: t.flags & abi::DUMPCONV_WRITER_SELF_COMPRESSING != 0,
                write,
            })))
        }
    }
}

impl PluginWalker {
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The plugin's modes as listed: v2 names; v1 values by their x86 names, values
    /// version 1 does not define as numbers.
    pub fn listed_modes(&self) -> Vec<String> {
        match &self.fns {
            WalkerFns::V1 { raw_modes, .. } => raw_modes.iter().map(|&m| mode_name(m)).collect(),
            WalkerFns::V2 { .. } => self.modes.iter().map(|m| m.to_string()).collect(),
        }
    }
}

impl PluginWriter {
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }
}

/// A CPU state in the version-1 form. `arch` is the dump's architecture when known, else
/// derived from the paging mode (4- or 5-level: x86-64).
pub fn cpu_to_abi_v1(cpu: &CpuState, arch: Option<Arch>) -> abi::v1::Cpu {
    let mut valid = 0;
    let mut reg = |name: &str, bit: u32| match cpu.reg(name) {
        Some(v) => {
            valid |= bit;
            v
        }
        None => 0,
    };
    let cr0 = reg("cr0", abi::v1::DUMPCONV_CPU_CR0);
    let cr3 = reg("cr3", abi::v1::DUMPCONV_CPU_CR3);
    let cr4 = reg("cr4", abi::v1::DUMPCONV_CPU_CR4);
    let efer = reg("efer", abi::v1::DUMPCONV_CPU_EFER);
    let a20_mask = match cpu.reg("a20_mask") {
        Some(m) => {
            valid |= abi::v1::DUMPCONV_CPU_A20;
            m
        }
        None => u64::MAX,
    };
    let mode = v1::x86_mode(cpu).unwrap_or(abi::v1::DUMPCONV_PAGING_OFF);
    let arch = arch.or(cpu.arch).unwrap_or(
        if matches!(
            mode,
            abi::v1::DUMPCONV_PAGING_4LEVEL | abi::v1::DUMPCONV_PAGING_5LEVEL
        ) {
            Arch::X86_64
        } else {
            Arch::I386
        },
    );
    abi::v1::Cpu {
        struct_size: std::mem::size_of::<abi::v1::Cpu>() as u32,
        index: cpu.index,
        arch: v1::arch_value(arch),
        paging_mode: mode,
        valid,
        reserved: 0,
        cr0,
        cr3,
        cr4,
        efer,
        a20_mask,
    }
}

/// The architecture in the ABI's form (machine 0: unknown).
pub fn arch_to_abi(a: Option<Arch>) -> abi::Arch {
    a.map_or(abi::Arch::default(), |a| abi::Arch {
        machine: a.elf_machine(),
        word_size: u8::try_from(a.word_size()).unwrap_or(0),
        reserved: 0,
    })
}

/// A CPU state in the version-2 form: its register list, borrowed from `cpu`, and the
/// `abi::Cpu` pointing at it (rebuild it with [`CpuAbi::cpu`] after a move).
pub struct CpuAbi<'c> {
    regs: Vec<abi::Reg>,
    index: u32,
    arch: abi::Arch,
    _names: std::marker::PhantomData<&'c CpuState>,
}

impl<'c> CpuAbi<'c> {
    /// `arch` is used when the CPU does not say its own.
    pub fn new(cpu: &'c CpuState, arch: Option<Arch>) -> CpuAbi<'c> {
        CpuAbi {
            _names: std::marker::PhantomData,
            regs: cpu
                .regs
                .iter()
                .map(|(n, v)| abi::Reg {
                    name: bytes(n.as_bytes()),
                    value: v,
                })
                .collect(),
            index: cpu.index,
            arch: arch_to_abi(cpu.arch.or(arch)),
        }
    }

    /// The ABI struct; valid while `self` and the `CpuState` it was built from live.
    pub fn cpu(&self) -> abi::Cpu {
        abi::Cpu {
            struct_size: std::mem::size_of::<abi::Cpu>() as u32,
            index: self.index,
            arch: self.arch,
            reserved: 0,
            regs: self.regs.as_ptr(),
            reg_count: self.regs.len(),
        }
    }
}

/// The state one call shares with its callbacks. `Host::ctx` points here.
struct CallCtx<'a> {
    mem: &'a dyn PhysicalMemory,
    /// Set by the first failing callback: every later callback fails.
    failed: AtomicBool,
    state: Mutex<CallState<'a>>,
    progress: Option<&'a dyn Progress>,
    progress_done: AtomicU64,
    /// Upper bound on mappings a walk may emit (bounds memory on a hostile plugin).
    max_mappings: usize,
}

#[derive(Default)]
struct CallState<'a> {
    /// The first callback failure: which callback, and the error.
    failure: Option<(&'static str, Error)>,
    /// The last message given with set_error.
    message: Option<String>,
    warnings: Vec<String>,
    mappings: Vec<Mapping>,
    /// Registers emitted by cpu_from_root / roots_from_vmcoreinfo, in order.
    regs: Vec<(String, u64)>,
    sink: Option<&'a mut dyn Sink>,
}

/// Calls in progress: the `ctx` a [`abi::Host`] carries is a call id, looked up here,
/// never a pointer the plugin could keep. A callback made after its call returned (a
/// plugin's bug: a thread it left running, a host it stored) finds no entry and fails
/// with `DUMPCONV_ERR_INVALID` instead of touching the finished call's memory.
///
/// Callbacks hold the read lock while they run; ending a call takes the write lock, so
/// it waits for callbacks in flight before the context goes away.
static LIVE_CALLS: RwLock<Vec<(usize, usize)>> = RwLock::new(Vec::new());
/// Call ids are never reused (a usize of ids does not run out).
static NEXT_CALL: AtomicUsize = AtomicUsize::new(1);

/// A call's entry in [`LIVE_CALLS`], removed on drop. It borrows the context, so the
/// context cannot move or be dropped while the plugin can reach it.
struct LiveCall<'c> {
    id: usize,
    _ctx: std::marker::PhantomData<&'c ()>,
}

impl<'c> LiveCall<'c> {
    fn register<'a>(ctx: &'c CallCtx<'a>) -> Self {
        let id = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        let addr = (ctx as *const CallCtx<'a>) as usize;
        LIVE_CALLS
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, addr));
        LiveCall {
            id,
            _ctx: std::marker::PhantomData,
        }
    }

    /// The `ctx` value of the call's host.
    fn ctx(&self) -> *mut c_void {
        // An integer in a pointer's clothes: the plugin only passes it back.
        self.id as *mut c_void
    }
}

impl Drop for LiveCall<'_> {
    fn drop(&mut self) {
        let mut live = LIVE_CALLS.write().unwrap_or_else(|p| p.into_inner());
        live.retain(|&(id, _)| id != self.id);
    }
}

/// Run `f` on the context of the live call `ctx` names; `None` if there is none (NULL,
/// a finished call, garbage).
fn with_live_call<R>(ctx: *mut c_void, f: impl FnOnce(&CallCtx<'_>) -> R) -> Option<R> {
    let id = ctx as usize;
    // A panic elsewhere while holding the lock cannot leave the list inconsistent (one
    // push or one retain).
    let live = LIVE_CALLS.read().unwrap_or_else(|p| p.into_inner());
    let &(_, addr) = live.iter().find(|&&(i, _)| i == id)?;
    // SAFETY: `addr` was registered by `LiveCall::register` from a `&CallCtx` that the
    // `LiveCall` borrows; the entry is removed (under the write lock, which waits for
    // this read guard) before that borrow ends. So the context is alive and unmoved for
    // as long as `live` is held, which covers `f`.
    let c = unsafe { &*(addr as *const CallCtx<'_>) };
    Some(f(c))
}

impl<'a> CallCtx<'a> {
    fn new(mem: &'a dyn PhysicalMemory) -> Self {
        CallCtx {
            mem,
            failed: AtomicBool::new(false),
            state: Mutex::new(CallState::default()),
            progress: None,
            progress_done: AtomicU64::new(0),
            max_mappings: usize::MAX,
        }
    }

    fn state(&self) -> MutexGuard<'_, CallState<'a>> {
        // A panic while the lock was held was caught and recorded; the data is still
        // consistent (every update is a single push or assignment).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, callback: &'static str, e: Error) {
        self.failed.store(true, Ordering::SeqCst);
        let mut st = self.state();
        if st.failure.is_none() {
            st.failure = Some((callback, e));
        }
    }

    fn host(call: &LiveCall<'_>, walk: bool, write: bool) -> abi::Host {
        abi::Host {
            struct_size: std::mem::size_of::<abi::Host>() as u32,
            reserved: 0,
            ctx: call.ctx(),
            read_phys: Some(cb_read_phys),
            set_error: Some(cb_set_error),
            log: Some(cb_log),
            emit_mapping: if walk { Some(cb_emit_mapping) } else { None },
            sink_write: if write { Some(cb_sink_write) } else { None },
            sink_skip: if write { Some(cb_sink_skip) } else { None },
            sink_write_at: if write { Some(cb_sink_write_at) } else { None },
            sink_position: if write { Some(cb_sink_position) } else { None },
            sink_seekable: if write { Some(cb_sink_seekable) } else { None },
            progress: if write { Some(cb_progress) } else { None },
            emit_reg: None,
        }
    }

    /// Turn the plugin's return code and what the callbacks recorded into the result of
    /// the call.
    fn finish(self, info: &PluginInfo, op: &str, code: i32) -> Result<CallState<'a>> {
        let mut st = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        let message = st.message.take();
        let said = message
            .clone()
            .unwrap_or_else(|| "no message given".to_string());
        if let Some((callback, e)) = st.failure.take() {
            if matches!(e, Error::Output { .. }) {
                // The output could not be written: that is the cause, not the plugin.
                return Err(e);
            }
            let after = if code == abi::DUMPCONV_OK {
                "the plugin returned OK anyway".to_string()
            } else {
                format!("the plugin returned {}: {said}", code_name(code))
            };
            return Err(info.error(format!(
                "{op}: host callback {callback} failed: {e} ({after})"
            )));
        }
        if code != abi::DUMPCONV_OK {
            return Err(info.error(format!("{op} failed with {}: {said}", code_name(code))));
        }
        // set_error announces an error: a plugin that reports one and then returns OK
        // contradicts itself, and what it wrote cannot be trusted.
        if let Some(m) = message {
            return Err(info.error(format!(
                "{op} returned DUMPCONV_OK after reporting an error: {m}"
            )));
        }
        Ok(st)
    }
}

/// `DUMPCONV_ERR_IO (4)` and so on, for messages.
pub fn code_name(code: i32) -> String {
    let name = match code {
        abi::DUMPCONV_OK => "DUMPCONV_OK",
        abi::DUMPCONV_ERR_FAILED => "DUMPCONV_ERR_FAILED",
        abi::DUMPCONV_ERR_INVALID => "DUMPCONV_ERR_INVALID",
        abi::DUMPCONV_ERR_UNSUPPORTED => "DUMPCONV_ERR_UNSUPPORTED",
        abi::DUMPCONV_ERR_IO => "DUMPCONV_ERR_IO",
        abi::DUMPCONV_ERR_PANIC => "DUMPCONV_ERR_PANIC",
        _ => return format!("unknown error code {code}"),
    };
    format!("{name} ({code})")
}

/// A panic payload as text.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Text from a (pointer, length) pair the plugin passed, capped and made valid UTF-8.
///
/// # Safety
/// `msg` is NULL or valid for `len` bytes.
unsafe fn message(msg: *const c_char, len: usize) -> String {
    if msg.is_null() || len == 0 {
        return String::new();
    }
    // SAFETY: valid for len bytes by the caller's contract; we read at most len.
    let b = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len.min(MAX_MESSAGE)) };
    String::from_utf8_lossy(b).into_owned()
}

/// Run a callback body on the call's context: refuse after a failure, catch panics,
/// record errors.
fn callback(
    ctx: *mut c_void,
    name: &'static str,
    body: impl FnOnce(&CallCtx<'_>) -> Result<()>,
) -> i32 {
    with_live_call(ctx, |c| {
        if c.failed.load(Ordering::SeqCst) {
            return abi::DUMPCONV_ERR_IO;
        }
        match catch_unwind(AssertUnwindSafe(|| body(c))) {
            Ok(Ok(())) => abi::DUMPCONV_OK,
            Ok(Err(e)) => {
                c.fail(name, e);
                abi::DUMPCONV_ERR_IO
            }
            Err(p) => {
                c.fail(
                    name,
                    Error::invalid(format!(
                        "panicked in dumpconv: {}",
                        panic_message(p.as_ref())
                    )),
                );
                abi::DUMPCONV_ERR_IO
            }
        }
    })
    // No such call: NULL, or a call that has returned (the plugin's bug).
    .unwrap_or(abi::DUMPCONV_ERR_INVALID)
}

/// Callbacks without a status (set_error, log, progress): catch panics, record them.
fn void_callback(ctx: *mut c_void, name: &'static str, body: impl FnOnce(&CallCtx<'_>)) {
    let _ = callback(ctx, name, |c| {
        body(c);
        Ok(())
    });
}

unsafe extern "C" fn cb_read_phys(ctx: *mut c_void, addr: u64, buf: *mut u8, len: usize) -> i32 {
    callback(ctx, "read_phys", |c| {
        if len == 0 {
            return Ok(());
        }
        if buf.is_null() {
            return Err(Error::invalid("buffer is NULL"));
        }
        // SAFETY: the plugin passes a buffer valid for len bytes that nothing else
        // touches during the call (the ABI's contract).
        let out = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        c.mem.read_at(addr, out)
    })
}

unsafe extern "C" fn cb_set_error(ctx: *mut c_void, msg: *const c_char, len: usize) {
    // SAFETY: the plugin passes a message valid for len bytes.
    let text = unsafe { message(msg, len) };
    // set_error must work after a failure too (that is when it is needed), so it does
    // not go through `callback`.
    with_live_call(ctx, |c| {
        let _ = catch_unwind(AssertUnwindSafe(|| c.state().message = Some(text)));
    });
}

unsafe extern "C" fn cb_log(ctx: *mut c_void, level: u32, msg: *const c_char, len: usize) {
    if level > abi::DUMPCONV_LOG_WARN {
        // Info and debug messages are not shown (dumpconv has no log level switch yet).
        return;
    }
    // SAFETY: the plugin passes a message valid for len bytes.
    let text = unsafe { message(msg, len) };
    void_callback(ctx, "log", |c| match c.progress {
        Some(p) => p.warn(&text),
        None => {
            let mut st = c.state();
            if st.warnings.len() < MAX_WARNINGS {
                st.warnings.push(text);
            }
        }
    });
}

unsafe extern "C" fn cb_emit_mapping(ctx: *mut c_void, virt: u64, phys: u64, len: u64) -> i32 {
    callback(ctx, "emit_mapping", |c| {
        let m = Mapping { virt, phys, len };
        if len == 0 || u128::from(virt) + u128::from(len) > 1u128 << 64 {
            return Err(Error::invalid(format!(
                "mapping virt {virt:#x} len {len:#x} is empty or runs past the end of the \
                 address space"
            )));
        }
        if !c.mem.is_ram(phys, len) {
            return Err(Error::invalid(format!(
                "mapping virt {virt:#x} -> phys {phys:#x} len {len:#x}: the physical range \
                 is not RAM of the dump (walkers must skip what is outside RAM)"
            )));
        }
        let mut st = c.state();
        // Walkers emit leaf after leaf: merging a mapping that continues the last one
        // keeps a walk of many small pages (or a plugin emitting bytes) at the size of
        // its runs, which is what `max_mappings` bounds.
        if let Some(last) = st.mappings.last_mut() {
            if last.continues_with(&m) {
                if let Some(len) = last.len.checked_add(len) {
                    last.len = len;
                    return Ok(());
                }
            }
        }
        if st.mappings.len() >= c.max_mappings {
            return Err(Error::invalid(format!(
                "more than {} mappings emitted",
                c.max_mappings
            )));
        }
        st.mappings.push(m);
        Ok(())
    })
}

/// A register name a plugin may emit: 1 to [`abi::MAX_REG_NAME`] lowercase ASCII
/// letters, digits, `_` or `.` (`x0`, `ttbr1_el1`, `cs.selector`).
fn valid_reg_name(name: &str) -> bool {
    (1..=abi::MAX_REG_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

unsafe extern "C" fn cb_emit_reg(
    ctx: *mut c_void,
    name: *const c_char,
    len: usize,
    value: u64,
) -> i32 {
    callback(ctx, "emit_reg", |c| {
        if name.is_null() || len == 0 || len > abi::MAX_REG_NAME {
            return Err(Error::invalid(format!(
                "register name of {len} bytes (1 to {} expected)",
                abi::MAX_REG_NAME
            )));
        }
        // SAFETY: the plugin passes a name valid for len bytes (len bounded above).
        let b = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), len) };
        let n = std::str::from_utf8(b)
            .ok()
            .filter(|n| valid_reg_name(n))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "register name {:?} is not lowercase ASCII letters, digits, '_' or '.'",
                    String::from_utf8_lossy(b)
                ))
            })?;
        let mut st = c.state();
        if st.regs.iter().any(|(r, _)| r == n) {
            return Err(Error::invalid(format!("register {n} emitted twice")));
        }
        if st.regs.len() >= abi::MAX_EMITTED_REGS {
            return Err(Error::invalid(format!(
                "more than {} registers emitted",
                abi::MAX_EMITTED_REGS
            )));
        }
        st.regs.push((n.to_string(), value));
        Ok(())
    })
}

/// Run `f` on the call's sink.
fn with_sink(c: &CallCtx<'_>, f: impl FnOnce(&mut dyn Sink) -> Result<()>) -> Result<()> {
    let mut st = c.state();
    match st.sink.as_deref_mut() {
        Some(s) => f(s),
        None => Err(Error::invalid("no output in this call")),
    }
}

/// The plugin's buffer as a slice.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes.
unsafe fn in_buf<'b>(buf: *const u8, len: usize) -> Result<&'b [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(Error::invalid("buffer is NULL"));
    }
    // SAFETY: valid for len bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(buf, len) })
}

unsafe extern "C" fn cb_sink_write(ctx: *mut c_void, buf: *const u8, len: usize) -> i32 {
    callback(ctx, "sink_write", |c| {
        // SAFETY: the plugin passes a buffer valid for len bytes.
        let b = unsafe { in_buf(buf, len) }?;
        with_sink(c, |s| s.write_all(b))
    })
}

unsafe extern "C" fn cb_sink_skip(ctx: *mut c_void, len: u64) -> i32 {
    callback(ctx, "sink_skip", |c| with_sink(c, |s| s.skip(len)))
}

unsafe extern "C" fn cb_sink_write_at(
    ctx: *mut c_void,
    offset: u64,
    buf: *const u8,
    len: usize,
) -> i32 {
    callback(ctx, "sink_write_at", |c| {
        // SAFETY: the plugin passes a buffer valid for len bytes.
        let b = unsafe { in_buf(buf, len) }?;
        with_sink(c, |s| {
            if offset
                .checked_add(len as u64)
                .is_none_or(|e| e > s.position())
            {
                return Err(Error::invalid(format!(
                    "write_at {offset:#x}+{len:#x} goes past the end of the output ({:#x}); \
                     only bytes already written may be overwritten",
                    s.position()
                )));
            }
            s.write_at(offset, b)
        })
    })
}

unsafe extern "C" fn cb_sink_position(ctx: *mut c_void) -> u64 {
    let mut pos = 0;
    let _ = callback(ctx, "sink_position", |c| {
        with_sink(c, |s| {
            pos = s.position();
            Ok(())
        })
    });
    pos
}

unsafe extern "C" fn cb_sink_seekable(ctx: *mut c_void) -> i32 {
    let mut seekable = false;
    let _ = callback(ctx, "sink_seekable", |c| {
        with_sink(c, |s| {
            seekable = s.is_seekable();
            Ok(())
        })
    });
    i32::from(seekable)
}

unsafe extern "C" fn cb_progress(ctx: *mut c_void, done: u64, _total: u64) {
    void_callback(ctx, "progress", |c| {
        let before = c.progress_done.fetch_max(done, Ordering::SeqCst);
        if let (Some(p), true) = (c.progress, done > before) {
            p.advance(done - before);
        }
    });
}

/// The options of a walk in the ABI's form, pointing at `ram`.
fn walk_options_abi(opts: &WalkOptions, ram: &[abi::Range]) -> abi::WalkOptions {
    abi::WalkOptions {
        struct_size: std::mem::size_of::<abi::WalkOptions>() as u32,
        max_phys_bits: u32::from(opts.max_phys_bits),
        clear_mask: opts.clear_mask,
        max_table_pages: opts.max_table_pages,
        ram: ram.as_ptr(),
        ram_count: ram.len(),
    }
}

fn ram_abi(mem: &dyn PhysicalMemory) -> Vec<abi::Range> {
    mem.ranges()
        .iter()
        .map(|r| abi::Range {
            start: r.start,
            end: r.end,
        })
        .collect()
}

/// Memory with no RAM, for calls that must not read any (cpu_info).
struct NoMemory;

impl PhysicalMemory for NoMemory {
    fn ranges(&self) -> &[crate::memory::PhysRange] {
        &[]
    }

    fn read_at(&self, paddr: u64, _buf: &mut [u8]) -> Result<()> {
        Err(Error::PageUnavailable {
            paddr,
            why: "cpu_info may not read memory",
        })
    }
}

/// Names of translation levels given by plugins, kept for the life of the process
/// ([`TranslationStep::level`] is `&'static str`); bounded, since a plugin has few.
static LEVEL_NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

fn intern_level(name: &str) -> &'static str {
    let mut names = LEVEL_NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    if names.len() >= 256 || name.len() > 64 {
        return "?";
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

impl PluginWalker {
    /// Ask a v2 plugin about `cpu`; None when it has no `cpu_info`, or the call failed.
    fn cpu_info(&self, cpu: &CpuState) -> Option<abi::CpuInfo> {
        let WalkerFns::V2 {
            cpu_info: Some(f), ..
        } = &self.fns
        else {
            return None;
        };
        let acpu = CpuAbi::new(cpu, None);
        let c = acpu.cpu();
        let mut info = abi::CpuInfo {
            struct_size: std::mem::size_of::<abi::CpuInfo>() as u32,
            mode: abi::DUMPCONV_MODE_UNKNOWN,
            ..abi::CpuInfo::default()
        };
        // No memory is needed to read registers; reads fail.
        let ctx = CallCtx::new(&NoMemory);
        let call = LiveCall::register(&ctx);
        let host = CallCtx::host(&call, false, false);
        // SAFETY: host, CPU (and the registers it points at) and info are valid for the
        // call; the function pointer was validated at load.
        let code = unsafe { f(&host, &c, &mut info) };
        drop(call);
        ctx.finish(&self.info, "cpu_info", code).ok().map(|_| info)
    }

    /// Run a call that builds a CPU through `emit_reg` (cpu_from_root,
    /// roots_from_vmcoreinfo): the registers emitted, in order. The call may not read
    /// memory (a CPU comes from its arguments).
    fn build_cpu(&self, op: &str, f: impl FnOnce(&abi::Host) -> i32) -> Result<Vec<(String, u64)>> {
        let ctx = CallCtx::new(&NoMemory);
        let call = LiveCall::register(&ctx);
        let mut host = CallCtx::host(&call, false, false);
        host.emit_reg = Some(cb_emit_reg);
        let code = f(&host);
        drop(call);
        Ok(ctx.finish(&self.info, op, code)?.regs)
    }

    /// The CPU a plugin built, for `arch`.
    fn cpu_of(arch: Arch, regs: Vec<(String, u64)>) -> CpuState {
        let mut c = CpuState::new(0, Some(arch));
        for (n, v) in regs {
            c.set_reg(&n, v);
        }
        c
    }

    /// The word size of `cpu`'s architecture (its own, else the walker's first).
    fn word_bits(&self, cpu: &CpuState) -> u32 {
        let w = cpu
            .arch
            .or(self.arches.first().copied())
            .map_or(8, |a| a.word_size());
        (w.clamp(1, 8) * 8) as u32
    }
}

impl ArchWalker for PluginWalker {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn arches(&self) -> &[Arch] {
        &self.arches
    }

    fn modes(&self) -> &[&str] {
        &self.modes
    }

    fn mode_of(&self, cpu: &CpuState) -> Option<Cow<'static, str>> {
        match &self.fns {
            WalkerFns::V1 { .. } => v1::x86_mode(cpu).and_then(v1::mode_name).map(Cow::Borrowed),
            WalkerFns::V2 { .. } => {
                let info = self.cpu_info(cpu)?;
                if info.paging == 0 {
                    return Some(Cow::Borrowed("off"));
                }
                let i = usize::try_from(info.mode).ok()?;
                self.modes.get(i).map(|m| Cow::Borrowed(*m))
            }
        }
    }

    fn paging_enabled(&self, cpu: &CpuState) -> bool {
        match &self.fns {
            WalkerFns::V1 { .. } => {
                !matches!(v1::x86_mode(cpu), None | Some(abi::v1::DUMPCONV_PAGING_OFF))
            }
            WalkerFns::V2 { cpu_info: None, .. } => !cpu.regs.is_empty(),
            WalkerFns::V2 { .. } => self.cpu_info(cpu).is_some_and(|i| i.paging != 0),
        }
    }

    fn kernel_start(&self, cpu: &CpuState) -> u64 {
        match &self.fns {
            WalkerFns::V1 { .. } => v1::kernel_start(v1::x86_mode(cpu)),
            WalkerFns::V2 { .. } => self
                .cpu_info(cpu)
                .map_or(1 << (self.word_bits(cpu) - 1), |i| i.kernel_start),
        }
    }

    fn cpu_from_root(&self, arch: Arch, mode: &str, root: u64) -> Result<CpuState> {
        let WalkerFns::V2 {
            cpu_from_root: Some(f),
            ..
        } = &self.fns
        else {
            return Err(Error::Unsupported(format!(
                "walker plugin {} cannot build a CPU state for mode {mode:?} from a root \
                 address (its walker table has no cpu_from_root)",
                self.name()
            )));
        };
        let regs = self.build_cpu(&format!("cpu_from_root({mode}, {root:#x})"), |host| {
            // SAFETY: host and the mode bytes are valid for the call; the function
            // pointer was read from the plugin's static table at load.
            unsafe {
                f(
                    host,
                    arch_to_abi(Some(arch)),
                    mode.as_ptr().cast::<c_char>(),
                    mode.len(),
                    root,
                )
            }
        })?;
        Ok(Self::cpu_of(arch, regs))
    }

    fn roots_from_vmcoreinfo(&self, arch: Arch, v: &VmcoreInfo) -> Option<CpuState> {
        self.try_roots_from_vmcoreinfo(arch, v).ok().flatten()
    }

    fn try_roots_from_vmcoreinfo(&self, arch: Arch, v: &VmcoreInfo) -> Result<Option<CpuState>> {
        let WalkerFns::V2 {
            roots_from_vmcoreinfo: Some(f),
            ..
        } = &self.fns
        else {
            return Ok(None);
        };
        let raw = v.raw();
        let regs = self.build_cpu("roots_from_vmcoreinfo", |host| {
            // SAFETY: host and the VMCOREINFO bytes are valid for the call; the function
            // pointer was read from the plugin's static table at load.
            unsafe { f(host, arch_to_abi(Some(arch)), raw.as_ptr(), raw.len()) }
        })?;
        Ok((!regs.is_empty()).then(|| Self::cpu_of(arch, regs)))
    }

    /// Call the plugin's walk; the runs it emits are sorted and merged, then pushed into
    /// `out` in ascending virtual order. Warnings it logs become `WalkStats::warnings`.
    fn walk(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        out: &mut MappingList,
    ) -> Result<WalkStats> {
        let ram = ram_abi(mem);
        let aopts = walk_options_abi(opts, &ram);
        let mut astats = abi::WalkStats {
            struct_size: std::mem::size_of::<abi::WalkStats>() as u32,
            ..abi::WalkStats::default()
        };
        let mut ctx = CallCtx::new(mem);
        // Each table page holds at most 1024 leaves.
        ctx.max_mappings =
            usize::try_from(opts.max_table_pages.saturating_mul(1024)).unwrap_or(usize::MAX);
        let call = LiveCall::register(&ctx);
        let host = CallCtx::host(&call, true, false);
        let code = match &self.fns {
            WalkerFns::V1 { walk, .. } => {
                let acpu = cpu_to_abi_v1(cpu, None);
                // SAFETY: every pointer is valid for the call: host, the CPU, the options
                // and the RAM list they point at, and the stats; the host's ctx names
                // `ctx` until `call` is dropped below. The function pointer was validated
                // when the plugin was loaded.
                unsafe { walk(&host, &acpu, &aopts, &mut astats) }
            }
            WalkerFns::V2 { walk, .. } => {
                let acpu = CpuAbi::new(cpu, None);
                let c = acpu.cpu();
                // SAFETY: as above; the CPU's register list lives in `acpu`, its names
                // in `cpu`.
                unsafe { walk(&host, &c, &aopts, &mut astats) }
            }
        };
        drop(call);
        let st = ctx.finish(&self.info, &format!("walk of cpu {}", cpu.index), code)?;
        let mut list: MappingList = st.mappings.into_iter().collect();
        list.normalize();
        for m in list.runs() {
            out.push(*m);
        }
        Ok(WalkStats {
            leaves: astats.leaves,
            leaves_outside_ram: astats.leaves_outside_ram,
            table_pages: astats.table_pages,
            tables_outside_ram: astats.tables_outside_ram,
            invalid_entries: 0,
            warnings: st.warnings,
        })
    }

    /// A v2 plugin's translate, when it has one.
    fn translate(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        virt: u64,
    ) -> Result<Translation> {
        let WalkerFns::V2 {
            translate: Some(f), ..
        } = &self.fns
        else {
            return Err(Error::Unsupported(format!(
                "walker {} cannot translate single addresses",
                self.info.name
            )));
        };
        const STEPS: usize = 16;
        const FAULT: usize = 1024;
        let ram = ram_abi(mem);
        let aopts = walk_options_abi(opts, &ram);
        let acpu = CpuAbi::new(cpu, None);
        let c = acpu.cpu();
        let mut steps = [abi::TranslationStep {
            level: std::ptr::null(),
            entry_addr: 0,
            entry: 0,
        }; STEPS];
        let mut fault = [0u8; FAULT];
        let mut t = abi::Translation {
            struct_size: std::mem::size_of::<abi::Translation>() as u32,
            step_count: 0,
            steps: steps.as_mut_ptr(),
            step_capacity: STEPS as u32,
            mapped: 0,
            phys: 0,
            page_size: 0,
            fault: fault.as_mut_ptr().cast::<c_char>(),
            fault_capacity: FAULT,
            fault_len: 0,
        };
        let ctx = CallCtx::new(mem);
        let call = LiveCall::register(&ctx);
        let host = CallCtx::host(&call, false, false);
        // SAFETY: host, CPU, options (and the RAM list), the result and its step and
        // fault buffers are valid for the call; the function pointer was validated at
        // load.
        let code = unsafe { f(&host, &c, &aopts, virt, &mut t) };
        drop(call);
        ctx.finish(&self.info, &format!("translate of {virt:#x}"), code)?;
        let mut out = Translation {
            virt,
            steps: Vec::new(),
            phys: None,
            page_size: None,
            fault: None,
        };
        for st in steps.iter().take((t.step_count as usize).min(STEPS)) {
            let level = if st.level.is_null() {
                "?"
            } else {
                // SAFETY: level names are static strings of the plugin (the library is
                // never unloaded), bounded by static_str.
                intern_level(unsafe { static_str(st.level, "translation level", &self.info.path)? })
            };
            out.steps.push(crate::walker::TranslationStep {
                level,
                entry_addr: st.entry_addr,
                entry: st.entry,
            });
        }
        if t.mapped != 0 {
            out.phys = Some(t.phys);
            out.page_size = (t.page_size != 0).then_some(t.page_size);
        }
        let flen = t.fault_len.min(FAULT);
        if flen > 0 {
            out.fault = Some(String::from_utf8_lossy(&fault[..flen]).into_owned());
        }
        Ok(out)
    }
}

/// The plan in the ABI's form: host-owned arrays the `abi::Plan` points into.
struct PlanArrays<'p> {
    ranges: Vec<abi::Range>,
    mappings: Option<Vec<abi::Mapping>>,
    notes: Vec<abi::Note>,
    /// Version 2: each CPU's register list, and the CPUs pointing at them.
    cpu_regs: Vec<CpuAbi<'p>>,
    cpus: Vec<abi::Cpu>,
    /// Version 1: x86 CPUs.
    cpus_v1: Vec<abi::v1::Cpu>,
    options: Vec<abi::PluginOption>,
    vmcoreinfo: Option<&'p [u8]>,
}

fn bytes(b: &[u8]) -> abi::Bytes {
    abi::Bytes {
        ptr: b.as_ptr(),
        len: b.len(),
    }
}

impl<'p> PlanArrays<'p> {
    fn new(plan: &'p DumpPlan, abi_major: u32) -> Self {
        let v1 = abi_major == abi::v1::DUMPCONV_ABI_MAJOR;
        let cpu_regs: Vec<CpuAbi<'p>> = if v1 {
            Vec::new()
        } else {
            plan.cpus
                .iter()
                .map(|c| CpuAbi::new(c, Some(plan.arch)))
                .collect()
        };
        // The register lists' heap buffers do not move with `cpu_regs`.
        let cpus = cpu_regs.iter().map(CpuAbi::cpu).collect();
        PlanArrays {
            cpu_regs,
            cpus,
            ranges: plan
                .ranges
                .iter()
                .map(|r| abi::Range {
                    start: r.start,
                    end: r.end,
                })
                .collect(),
            mappings: plan.mappings.as_ref().map(|l| {
                l.runs()
                    .iter()
                    .map(|m| abi::Mapping {
                        virt: m.virt,
                        phys: m.phys,
                        len: m.len,
                    })
                    .collect()
            }),
            notes: plan
                .notes
                .iter()
                .map(|n| abi::Note {
                    name: bytes(&n.name),
                    n_type: n.n_type,
                    reserved: 0,
                    desc: bytes(&n.desc),
                })
                .collect(),
            cpus_v1: if v1 {
                plan.cpus
                    .iter()
                    .map(|c| cpu_to_abi_v1(c, Some(plan.arch)))
                    .collect()
            } else {
                Vec::new()
            },
            options: plan
                .options
                .iter()
                .map(|(k, v)| abi::PluginOption {
                    key: bytes(k.as_bytes()),
                    value: bytes(v.as_bytes()),
                })
                .collect(),
            vmcoreinfo: plan.vmcoreinfo.as_ref().map(|v| v.raw()),
        }
    }

    /// The version-1 plan: the same layout but for the architecture number and the
    /// CPUs.
    fn plan_v1(&self, plan: &DumpPlan) -> abi::v1::Plan {
        let p = self.plan(plan);
        abi::v1::Plan {
            struct_size: std::mem::size_of::<abi::v1::Plan>() as u32,
            arch: v1::arch_value(plan.arch),
            page_size: p.page_size,
            ranges: p.ranges,
            range_count: p.range_count,
            mappings: p.mappings,
            mapping_count: p.mapping_count,
            notes: p.notes,
            note_count: p.note_count,
            cpus: self.cpus_v1.as_ptr(),
            cpu_count: self.cpus_v1.len(),
            vmcoreinfo: p.vmcoreinfo,
            options: p.options,
            option_count: p.option_count,
        }
    }

    fn plan(&self, plan: &DumpPlan) -> abi::Plan {
        let _ = &self.cpu_regs;
        abi::Plan {
            struct_size: std::mem::size_of::<abi::Plan>() as u32,
            arch: arch_to_abi(Some(plan.arch)),
            page_size: plan.page_size,
            ranges: self.ranges.as_ptr(),
            range_count: self.ranges.len(),
            // An empty Vec's pointer is dangling but not NULL: "paging, no mappings".
            mappings: self
                .mappings
                .as_ref()
                .map_or(std::ptr::null(), |m| m.as_ptr()),
            mapping_count: self.mappings.as_ref().map_or(0, Vec::len),
            notes: self.notes.as_ptr(),
            note_count: self.notes.len(),
            cpus: self.cpus.as_ptr(),
            cpu_count: self.cpus.len(),
            vmcoreinfo: self.vmcoreinfo.map_or(
                abi::Bytes {
                    ptr: std::ptr::null(),
                    len: 0,
                },
                bytes,
            ),
            options: self.options.as_ptr(),
            option_count: self.options.len(),
        }
    }
}

impl DumpWriter for PluginWriter {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn description(&self) -> &str {
        &self.info.description
    }

    fn extensions(&self) -> &[&str] {
        &self.extensions
    }

    fn compresses_itself(&self) -> bool {
        self.self_compressing
    }

    /// Call the plugin's write with the plan; on success finish the sink (the ABI has no
    /// finish callback: the host completes the output).
    fn write(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<()> {
        let arrays = PlanArrays::new(plan, self.abi_major);
        let aplan = arrays.plan(plan);
        let aplan_v1 = arrays.plan_v1(plan);
        progress.start("writing", plan.total_bytes());
        let code;
        {
            let mut ctx = CallCtx::new(mem);
            ctx.progress = Some(progress);
            ctx.state().sink = Some(&mut *sink);
            let call = LiveCall::register(&ctx);
            let host = CallCtx::host(&call, false, true);
            // SAFETY: every pointer is valid for the call: host, the plan and the arrays
            // it points at (`arrays`, `plan`); the host's ctx names `ctx` until `call`
            // is dropped below. The function pointer was validated when the plugin was
            // loaded.
            code = unsafe {
                if self.abi_major == abi::v1::DUMPCONV_ABI_MAJOR {
                    // A version-1 writer's write takes the v1 plan (same argument ABI:
                    // a pointer).
                    (self.write)(&host, (&aplan_v1 as *const abi::v1::Plan).cast())
                } else {
                    (self.write)(&host, &aplan)
                }
            };
            drop(call);
            ctx.finish(&self.info, "write", code)?;
        }
        sink.finish()?;
        progress.finish();
        Ok(())
    }
}
