//! The plugin side of the ABI, for plugins written in Rust: [`export_plugin!`] exports a
//! type implementing [`ArchWalker`] or [`DumpWriter`] from a `cdylib`.
//!
//! ```ignore
//! // Cargo.toml: [lib] crate-type = ["cdylib"]
//! dumpconv_core::export_plugin!(
//!     walker: my_crate::MyWalker::new(),
//!     version: env!("CARGO_PKG_VERSION"),
//!     description: "page tables of the Foo architecture",
//! );
//! ```
//!
//! The macro expands to the `dumpconv_plugin_entry` function, the `dumpconv_plugin_abi`
//! static and `extern "C"` functions that rebuild a [`CpuState`] or [`DumpPlan`] from the
//! ABI structs and call the trait through a [`PhysicalMemory`] over `read_phys`, a
//! [`Sink`] over the sink callbacks and a [`Progress`] over `progress`. Every export
//! catches panics and returns `DUMPCONV_ERR_PANIC` with the panic message and location
//! ("panicked at src/lib.rs:12:5: boom"); a Rust error becomes an error code plus its
//! message.
//!
//! A `cdylib` has its own copy of std, hence its own panic hook, which would print
//! "thread '<unnamed>' panicked at ..." (and a backtrace under `RUST_BACKTRACE`) on
//! stderr before the host's clean error. So the exported entry installs, once, a hook
//! in the plugin's std ([`install_panic_hook`]) that, for a panic inside an export,
//! records the message and location for the error and prints nothing. Panics elsewhere
//! (the plugin's own threads, building the export) go to the previous hook as before.
//!
//! The implementation is constructed once, on the first call of the entry function.
//! Its name, description and extensions come from the trait.
//!
//! [`export_plugin!`]: crate::export_plugin

#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};

use crate::cpu::{Arch, CpuState};
use crate::error::{Error, Result};
use crate::mapping::{Mapping, MappingList};
use crate::memory::{PhysRange, PhysicalMemory};
use crate::note::Note;
use crate::progress::Progress;
use crate::sink::Sink;
use crate::vmcoreinfo::VmcoreInfo;
use crate::walker::{ArchWalker, WalkOptions};
use crate::writer::{DumpPlan, DumpWriter};

use super::abi;
use super::host::{panic_message, v1};
use crate::cpu::Registers;

/// The implementation behind an exported descriptor.
enum Implementation {
    Walker(Box<dyn ArchWalker>),
    Writer(Box<dyn DumpWriter>),
}

/// One exported plugin: the descriptor, its tables and strings, and the implementation.
/// Built once and leaked, so every pointer in it stays valid as long as the library.
pub struct Export {
    plugin: abi::Plugin,
    walker: abi::Walker,
    walker_v1: abi::v1::Walker,
    writer: abi::Writer,
    imp: Implementation,
    // Owners of the memory the descriptor points at.
    _strings: Vec<CString>,
    _modes_v1: Vec<u32>,
    _arches: Vec<abi::Arch>,
}

// SAFETY: an Export is immutable once built (it is leaked behind a shared reference); its
// raw pointers point into its own heap data (CStrings, mode Vec), which is never freed;
// the implementation is Send + Sync by the trait bounds.
unsafe impl Sync for Export {}
// SAFETY: as above.
unsafe impl Send for Export {}

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
type CpuInfoFn = unsafe extern "C" fn(*const abi::Host, *const abi::Cpu, *mut abi::CpuInfo) -> i32;
type TranslateFn = unsafe extern "C" fn(
    *const abi::Host,
    *const abi::Cpu,
    *const abi::WalkOptions,
    u64,
    *mut abi::Translation,
) -> i32;
type CpuFromRootFn =
    unsafe extern "C" fn(*const abi::Host, abi::Arch, *const c_char, usize, u64) -> i32;
type RootsFromVmcoreinfoFn =
    unsafe extern "C" fn(*const abi::Host, abi::Arch, *const u8, usize) -> i32;
type WriteFn = unsafe extern "C" fn(*const abi::Host, *const abi::Plan) -> i32;

/// The exported functions of a walker: version 2 (the SDK's) or version 1 (x86 only,
/// for testing the host's compatibility).
pub enum WalkerExports {
    V2 {
        walk: WalkFn,
        cpu_info: CpuInfoFn,
        translate: TranslateFn,
        cpu_from_root: CpuFromRootFn,
        roots_from_vmcoreinfo: RootsFromVmcoreinfoFn,
    },
    V1 {
        walk: WalkFnV1,
    },
}

fn cstring(s: &str) -> CString {
    // Interior NULs cannot be represented; cut there rather than fail the export.
    let cut = s.split('\0').next().unwrap_or("");
    CString::new(cut).unwrap_or_default()
}

impl Export {
    fn build(
        imp: Implementation,
        version: &str,
        description: &str,
        walker: Option<WalkerExports>,
        write: Option<WriteFn>,
    ) -> &'static Export {
        let v1 = matches!(walker, Some(WalkerExports::V1 { .. }));
        let (kind, name, modes, arches, extensions) = match &imp {
            Implementation::Walker(w) => (
                abi::DUMPCONV_KIND_WALKER,
                w.name().to_string(),
                w.modes().join(","),
                w.arches()
                    .iter()
                    .map(|a| super::host::arch_to_abi(Some(*a)))
                    .collect(),
                String::new(),
            ),
            Implementation::Writer(w) => (
                abi::DUMPCONV_KIND_WRITER,
                w.name().to_string(),
                String::new(),
                Vec::new(),
                w.extensions().join(","),
            ),
        };
        let modes_v1: Vec<u32> = match &imp {
            Implementation::Walker(w) if v1 => {
                w.modes().iter().filter_map(|m| v1::mode_value(m)).collect()
            }
            _ => Vec::new(),
        };
        let writer_flags = match &imp {
            Implementation::Writer(w) if w.compresses_itself() => {
                abi::DUMPCONV_WRITER_SELF_COMPRESSING
            }
            _ => 0,
        };
        let strings = vec![
            cstring(&name),
            cstring(version),
            cstring(description),
            cstring(&extensions),
            cstring(&modes),
        ];
        let (walk, cpu_info, translate, walk_v1, roots) = match walker {
            Some(WalkerExports::V2 {
                walk,
                cpu_info,
                translate,
                cpu_from_root,
                roots_from_vmcoreinfo,
            }) => (
                Some(walk),
                Some(cpu_info),
                Some(translate),
                None,
                (Some(cpu_from_root), Some(roots_from_vmcoreinfo)),
            ),
            Some(WalkerExports::V1 { walk }) => (None, None, None, Some(walk), (None, None)),
            None => (None, None, None, None, (None, None)),
        };
        let e = Box::leak(Box::new(Export {
            plugin: abi::Plugin {
                abi_major: if v1 {
                    abi::v1::DUMPCONV_ABI_MAJOR
                } else {
                    abi::DUMPCONV_ABI_MAJOR
                },
                struct_size: std::mem::size_of::<abi::Plugin>() as u32,
                kind,
                reserved: 0,
                name: strings[0].as_ptr(),
                version: strings[1].as_ptr(),
                description: strings[2].as_ptr(),
                walker: std::ptr::null(),
                writer: std::ptr::null(),
            },
            walker: abi::Walker {
                struct_size: std::mem::size_of::<abi::Walker>() as u32,
                arch_count: 0,
                arches: std::ptr::null(),
                modes: strings[4].as_ptr(),
                walk,
                cpu_info,
                translate,
                cpu_from_root: roots.0,
                roots_from_vmcoreinfo: roots.1,
            },
            walker_v1: abi::v1::Walker {
                struct_size: std::mem::size_of::<abi::v1::Walker>() as u32,
                mode_count: 0,
                modes: std::ptr::null(),
                walk: walk_v1,
            },
            writer: abi::Writer {
                struct_size: std::mem::size_of::<abi::Writer>() as u32,
                flags: writer_flags,
                extensions: strings[3].as_ptr(),
                write,
            },
            imp,
            _strings: Vec::new(),
            _modes_v1: modes_v1,
            _arches: arches,
        }));
        // The CStrings' and Vecs' heap buffers do not move when the Export moves.
        e._strings = strings;
        e.walker.modes = e._strings[4].as_ptr();
        e.walker.arch_count = e._arches.len() as u32;
        e.walker.arches = e._arches.as_ptr();
        e.walker_v1.mode_count = e._modes_v1.len() as u32;
        e.walker_v1.modes = e._modes_v1.as_ptr();
        match e.imp {
            Implementation::Walker(_) if v1 => {
                e.plugin.walker = (&e.walker_v1 as *const abi::v1::Walker).cast()
            }
            Implementation::Walker(_) => e.plugin.walker = &e.walker,
            Implementation::Writer(_) => e.plugin.writer = &e.writer,
        }
        e
    }

    /// Export a walker whose entries are `fns` (generated by the macro).
    pub fn walker(
        w: Box<dyn ArchWalker>,
        version: &str,
        description: &str,
        fns: WalkerExports,
    ) -> &'static Export {
        Export::build(
            Implementation::Walker(w),
            version,
            description,
            Some(fns),
            None,
        )
    }

    /// Export a writer whose `write` entry is `write` (generated by the macro).
    pub fn writer(
        w: Box<dyn DumpWriter>,
        version: &str,
        description: &str,
        write: WriteFn,
    ) -> &'static Export {
        Export::build(
            Implementation::Writer(w),
            version,
            description,
            None,
            Some(write),
        )
    }

    pub fn descriptor(&self) -> *const abi::Plugin {
        &self.plugin
    }
}

/// The body of an entry function: build the export once. NULL if building panicked
/// (the host then refuses the plugin: "entry returned NULL").
pub fn entry(
    cell: &'static OnceLock<&'static Export>,
    build: impl FnOnce() -> &'static Export,
) -> *const abi::Plugin {
    match catch_unwind(AssertUnwindSafe(|| *cell.get_or_init(build))) {
        Ok(e) => e.descriptor(),
        Err(_) => std::ptr::null(),
    }
}

thread_local! {
    /// True while this thread runs an export's body under [`guarded`].
    static IN_EXPORT: Cell<bool> = const { Cell::new(false) };
    /// "panicked at FILE:LINE:COL: MESSAGE" of the last panic in an export on this
    /// thread, recorded by the hook of [`install_panic_hook`].
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install, once, a panic hook in this copy of std that records a panic raised inside an
/// export (for [`guarded`] to report through `set_error`) and prints nothing; any other
/// panic goes to the hook that was there before.
///
/// Called by the `dumpconv_plugin_entry` that [`export_plugin!`](crate::export_plugin)
/// generates, i.e. only in a `cdylib`, whose std (and hook) is its own. Never from
/// [`plugin_entry!`](crate::plugin_entry): used in-process, it shares the host's std, and
/// installing a hook there would replace the host's.
pub fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_EXPORT.with(Cell::get) {
                return previous(info);
            }
            let msg = panic_message(info.payload());
            let text = match info.location() {
                Some(l) => format!(
                    "panicked at {}:{}:{}: {msg}",
                    l.file(),
                    l.line(),
                    l.column()
                ),
                None => format!("panicked: {msg}"),
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
        }));
    });
}

/// The error code a Rust error crosses the boundary as.
fn error_code(e: &Error) -> i32 {
    match e {
        Error::Unsupported(_) => abi::DUMPCONV_ERR_UNSUPPORTED,
        Error::Io { .. } | Error::Output { .. } | Error::Hole { .. } => abi::DUMPCONV_ERR_IO,
        Error::PageUnavailable { .. } => abi::DUMPCONV_ERR_IO,
        Error::Format { .. } | Error::Walk { .. } | Error::Invalid(_) => abi::DUMPCONV_ERR_INVALID,
        _ => abi::DUMPCONV_ERR_FAILED,
    }
}

/// The host's callback table, for the guest-side adapters.
#[derive(Clone, Copy)]
struct HostRef<'h>(&'h abi::Host);

// SAFETY: the host's callbacks are thread-safe (documented in the header and
// implemented so by dumpconv's host), and its ctx is only passed back to them.
unsafe impl Send for HostRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for HostRef<'_> {}

impl HostRef<'_> {
    fn set_error(&self, msg: &str) {
        if let Some(f) = self.0.set_error {
            // SAFETY: a host callback called with its own ctx and a valid message.
            unsafe { f(self.0.ctx, msg.as_ptr().cast::<c_char>(), msg.len()) }
        }
    }

    fn log(&self, level: u32, msg: &str) {
        if let Some(f) = self.0.log {
            // SAFETY: a host callback called with its own ctx and a valid message.
            unsafe { f(self.0.ctx, level, msg.as_ptr().cast::<c_char>(), msg.len()) }
        }
    }

    /// Emit every register of `cpu` through the host's `emit_reg` (appended to the host
    /// table: used only when its struct_size covers it).
    fn emit_regs(&self, cpu: &CpuState) -> Result<()> {
        let end = std::mem::offset_of!(abi::Host, emit_reg) + std::mem::size_of::<usize>();
        let f = if covers(self.0.struct_size, end) {
            self.0.emit_reg
        } else {
            None
        }
        .ok_or_else(|| Self::missing("emit_reg"))?;
        for (name, value) in cpu.regs.iter() {
            // SAFETY: a host callback called with its own ctx and a valid name.
            let code = unsafe {
                f(
                    self.0.ctx,
                    name.as_ptr().cast::<c_char>(),
                    name.len(),
                    value,
                )
            };
            Self::status("emit_reg", code)?;
        }
        Ok(())
    }

    fn missing(what: &str) -> Error {
        Error::invalid(format!("the host gave no {what} callback"))
    }

    fn status(what: &str, code: i32) -> Result<()> {
        if code == abi::DUMPCONV_OK {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "host callback {what} failed (code {code})"
            )))
        }
    }
}

/// Run an export's body: catch panics, turn errors into a code plus `set_error`.
fn guarded(host: *const abi::Host, body: impl FnOnce(HostRef<'_>) -> Result<()>) -> i32 {
    if host.is_null() {
        return abi::DUMPCONV_ERR_INVALID;
    }
    // SAFETY: the host passes a valid Host for the duration of the call.
    let h = HostRef(unsafe { &*host });
    // Exports may nest on one thread only through host callbacks; keep the outer state.
    let outer = IN_EXPORT.with(|f| f.replace(true));
    LAST_PANIC.with(|p| p.borrow_mut().take());
    let result = catch_unwind(AssertUnwindSafe(|| body(h)));
    IN_EXPORT.with(|f| f.set(outer));
    match result {
        Ok(Ok(())) => abi::DUMPCONV_OK,
        Ok(Err(e)) => {
            h.set_error(&e.to_string());
            error_code(&e)
        }
        Err(p) => {
            // The hook's record has the location; without the hook (in-process), the
            // payload alone.
            let msg = LAST_PANIC
                .with(|r| r.borrow_mut().take())
                .unwrap_or_else(|| format!("panic: {}", panic_message(p.as_ref())));
            h.set_error(&msg);
            abi::DUMPCONV_ERR_PANIC
        }
    }
}

/// `count` elements at `ptr` (NULL allowed when `count` is 0).
///
/// # Safety
/// When `count` > 0, `ptr` is valid for `count` elements for `'a`.
unsafe fn slice<'a, T>(ptr: *const T, count: usize) -> Result<&'a [T]> {
    if count == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Error::invalid("the host passed a NULL array"));
    }
    // SAFETY: by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// # Safety
/// As for [`slice`].
unsafe fn byte_string<'a>(b: abi::Bytes) -> Result<&'a [u8]> {
    // SAFETY: by the caller's contract.
    unsafe { slice(b.ptr, b.len) }
}

fn ranges_from_abi(r: &[abi::Range]) -> Vec<PhysRange> {
    r.iter().map(|r| PhysRange::new(r.start, r.end)).collect()
}

/// Physical memory over the host's `read_phys`.
struct HostMemory<'h> {
    host: HostRef<'h>,
    ranges: Vec<PhysRange>,
}

impl PhysicalMemory for HostMemory<'_> {
    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
        let f = self
            .host
            .0
            .read_phys
            .ok_or_else(|| HostRef::missing("read_phys"))?;
        // SAFETY: a host callback called with its own ctx and a buffer of buf.len() bytes.
        let code = unsafe { f(self.host.0.ctx, paddr, buf.as_mut_ptr(), buf.len()) };
        if code == abi::DUMPCONV_OK {
            Ok(())
        } else {
            Err(Error::PageUnavailable {
                paddr,
                why: "unreadable: the host's read_phys failed",
            })
        }
    }
}

/// Rebuild a CPU state from the version-1 form (x86 control registers).
fn cpu_from_abi_v1(c: &abi::v1::Cpu) -> CpuState {
    let mut cpu = CpuState::new(c.index, v1::arch_from_value(c.arch));
    for (name, bit, v) in [
        ("cr0", abi::v1::DUMPCONV_CPU_CR0, c.cr0),
        ("cr3", abi::v1::DUMPCONV_CPU_CR3, c.cr3),
        ("cr4", abi::v1::DUMPCONV_CPU_CR4, c.cr4),
        ("efer", abi::v1::DUMPCONV_CPU_EFER, c.efer),
        ("a20_mask", abi::v1::DUMPCONV_CPU_A20, c.a20_mask),
    ] {
        if c.valid & bit != 0 {
            cpu.set_reg(name, v);
        }
    }
    cpu
}

/// An architecture from the ABI (machine 0: unknown).
fn arch_from_abi(a: abi::Arch) -> Option<Arch> {
    (a.machine != 0).then(|| Arch::new(a.machine, a.word_size))
}

/// Rebuild a CPU state from the version-2 form: its architecture and registers.
/// Registers whose names are not UTF-8 are skipped.
///
/// # Safety
/// `c.regs` is valid for `c.reg_count` entries, their names for their lengths.
unsafe fn cpu_from_abi(c: &abi::Cpu) -> Result<CpuState> {
    let mut regs = Registers::new();
    // SAFETY: by the caller's contract.
    for r in unsafe { slice(c.regs, c.reg_count) }? {
        // SAFETY: by the caller's contract.
        if let Ok(n) = std::str::from_utf8(unsafe { byte_string(r.name) }?) {
            regs.set(n, r.value);
        }
    }
    Ok(CpuState {
        index: c.index,
        pid: None,
        arch: arch_from_abi(c.arch),
        regs,
    })
}

/// Does a struct whose `struct_size` is `size` contain the field ending at `end`?
fn covers(size: u32, end: usize) -> bool {
    size as usize >= end
}

/// Physical memory over the host's `read_phys`, with the RAM list of `o` when it has
/// one.
///
/// # Safety
/// `o` and the RAM array it points at are valid for the call.
unsafe fn host_memory<'h>(h: HostRef<'h>, o: &abi::WalkOptions) -> Result<HostMemory<'h>> {
    // The RAM list was appended to the options: without it, let read_phys decide.
    let ram_end = std::mem::offset_of!(abi::WalkOptions, ram_count) + size_of::<usize>();
    let ranges = if covers(o.struct_size, ram_end) {
        // SAFETY: covered by struct_size; the host's array is valid for the call.
        ranges_from_abi(unsafe { slice(o.ram, o.ram_count) }?)
    } else {
        vec![PhysRange::new(0, u64::MAX)]
    };
    Ok(HostMemory { host: h, ranges })
}

fn walk_options(o: &abi::WalkOptions) -> WalkOptions {
    WalkOptions {
        max_phys_bits: u8::try_from(o.max_phys_bits).unwrap_or(u8::MAX).min(64),
        clear_mask: o.clear_mask,
        max_table_pages: o.max_table_pages,
    }
}

/// The walker behind an export.
fn walker_of<'e>(export: Option<&'e Export>, what: &str) -> Result<&'e dyn ArchWalker> {
    match export.map(|e| &e.imp) {
        Some(Implementation::Walker(w)) => Ok(w.as_ref()),
        _ => Err(Error::invalid(format!(
            "{what} called before the entry function"
        ))),
    }
}

/// The body of a generated version-2 `walk` export.
///
/// # Safety
/// The arguments are what the host passes to `walk` (valid for the call).
pub unsafe fn walk(
    export: Option<&Export>,
    host: *const abi::Host,
    cpu: *const abi::Cpu,
    opts: *const abi::WalkOptions,
    stats: *mut abi::WalkStats,
) -> i32 {
    guarded(host, |h| {
        let w = walker_of(export, "walk")?;
        if cpu.is_null() || opts.is_null() {
            return Err(Error::invalid("walk: cpu or options is NULL"));
        }
        // SAFETY: non-NULL, valid for the call, with the arrays they point at.
        let (c, o) = unsafe { (cpu_from_abi(&*cpu)?, &*opts) };
        // SAFETY: as above.
        unsafe { walk_body(w, h, &c, o, stats) }
    })
}

/// The body of a generated version-1 `walk` export (x86 CPUs).
///
/// # Safety
/// The arguments are what the host passes to `walk` (valid for the call).
pub unsafe fn walk_v1(
    export: Option<&Export>,
    host: *const abi::Host,
    cpu: *const abi::v1::Cpu,
    opts: *const abi::WalkOptions,
    stats: *mut abi::WalkStats,
) -> i32 {
    guarded(host, |h| {
        let w = walker_of(export, "walk")?;
        if cpu.is_null() || opts.is_null() {
            return Err(Error::invalid("walk: cpu or options is NULL"));
        }
        // SAFETY: non-NULL, valid for the call.
        let (c, o) = unsafe { (cpu_from_abi_v1(&*cpu), &*opts) };
        // SAFETY: as above.
        unsafe { walk_body(w, h, &c, o, stats) }
    })
}

/// Walk `c` and emit its runs, warnings and statistics to the host.
///
/// # Safety
/// `o` (and its RAM array) and `stats` (NULL allowed) are valid for the call.
unsafe fn walk_body(
    w: &dyn ArchWalker,
    h: HostRef<'_>,
    c: &CpuState,
    o: &abi::WalkOptions,
    stats: *mut abi::WalkStats,
) -> Result<()> {
    // SAFETY: by the caller's contract.
    let mem = unsafe { host_memory(h, o) }?;
    let wopts = walk_options(o);
    let mut out = MappingList::new();
    let st = w.walk(c, &mem, &wopts, &mut out)?;
    let emit =
        h.0.emit_mapping
            .ok_or_else(|| HostRef::missing("emit_mapping"))?;
    for m in out.runs() {
        // SAFETY: a host callback called with its own ctx.
        let code = unsafe { emit(h.0.ctx, m.virt, m.phys, m.len) };
        HostRef::status("emit_mapping", code)?;
    }
    for msg in &st.warnings {
        h.log(abi::DUMPCONV_LOG_WARN, msg);
    }
    if !stats.is_null() {
        // SAFETY: non-NULL, valid for the call; only fields within its struct_size
        // are written.
        let s = unsafe { &mut *stats };
        let size = s.struct_size;
        let fields = [
            (std::mem::offset_of!(abi::WalkStats, leaves), st.leaves),
            (
                std::mem::offset_of!(abi::WalkStats, leaves_outside_ram),
                st.leaves_outside_ram,
            ),
            (
                std::mem::offset_of!(abi::WalkStats, table_pages),
                st.table_pages,
            ),
            (
                std::mem::offset_of!(abi::WalkStats, tables_outside_ram),
                st.tables_outside_ram,
            ),
        ];
        for (off, v) in fields {
            if covers(size, off + 8) {
                // SAFETY: within struct_size bytes of the host's struct.
                unsafe { stats.cast::<u8>().add(off).cast::<u64>().write_unaligned(v) };
            }
        }
    }
    Ok(())
}

/// The body of a generated `cpu_info` export: paging on, mode, kernel half.
///
/// # Safety
/// The arguments are what the host passes to `cpu_info` (valid for the call).
pub unsafe fn cpu_info(
    export: Option<&Export>,
    host: *const abi::Host,
    cpu: *const abi::Cpu,
    info: *mut abi::CpuInfo,
) -> i32 {
    guarded(host, |_h| {
        let w = walker_of(export, "cpu_info")?;
        if cpu.is_null() || info.is_null() {
            return Err(Error::invalid("cpu_info: cpu or info is NULL"));
        }
        // SAFETY: non-NULL, valid for the call, with the arrays it points at.
        let c = unsafe { cpu_from_abi(&*cpu) }?;
        let mode = w.mode_of(&c).ok_or_else(|| {
            Error::invalid(format!(
                "cpu {}: the registers do not say the mode",
                c.index
            ))
        })?;
        let paging = w.paging_enabled(&c);
        let index = w
            .modes()
            .iter()
            .position(|m| m.eq_ignore_ascii_case(&mode))
            .and_then(|i| i32::try_from(i).ok())
            .unwrap_or(abi::DUMPCONV_MODE_UNKNOWN);
        let fields: [(usize, u64, usize); 3] = [
            (
                std::mem::offset_of!(abi::CpuInfo, paging),
                u64::from(paging),
                4,
            ),
            (
                std::mem::offset_of!(abi::CpuInfo, mode),
                index as u32 as u64,
                4,
            ),
            (
                std::mem::offset_of!(abi::CpuInfo, kernel_start),
                w.kernel_start(&c),
                8,
            ),
        ];
        // SAFETY: non-NULL, valid for the call; only fields within its struct_size are
        // written.
        let size = unsafe { (*info).struct_size };
        for (off, v, n) in fields {
            if covers(size, off + n) {
                // SAFETY: within struct_size bytes of the host's struct.
                unsafe {
                    let p = info.cast::<u8>().add(off);
                    if n == 4 {
                        p.cast::<u32>().write_unaligned(v as u32);
                    } else {
                        p.cast::<u64>().write_unaligned(v);
                    }
                }
            }
        }
        Ok(())
    })
}

/// The body of a generated `cpu_from_root` export: the walker's CPU for a root and a
/// mode name, emitted register by register.
///
/// # Safety
/// The arguments are what the host passes to `cpu_from_root` (valid for the call).
pub unsafe fn cpu_from_root(
    export: Option<&Export>,
    host: *const abi::Host,
    arch: abi::Arch,
    mode: *const c_char,
    mode_len: usize,
    root: u64,
) -> i32 {
    guarded(host, |h| {
        let w = walker_of(export, "cpu_from_root")?;
        // SAFETY: valid for mode_len bytes for the call (NULL only with 0).
        let m = unsafe { slice(mode.cast::<u8>(), mode_len) }?;
        let m = std::str::from_utf8(m)
            .map_err(|_| Error::invalid("cpu_from_root: the mode name is not UTF-8"))?;
        let c = w.cpu_from_root(Arch::new(arch.machine, arch.word_size), m, root)?;
        h.emit_regs(&c)
    })
}

/// The body of a generated `roots_from_vmcoreinfo` export: the kernel's root CPU,
/// emitted register by register, or nothing when VMCOREINFO does not say.
///
/// # Safety
/// The arguments are what the host passes to `roots_from_vmcoreinfo` (valid for the
/// call).
pub unsafe fn roots_from_vmcoreinfo(
    export: Option<&Export>,
    host: *const abi::Host,
    arch: abi::Arch,
    vmcoreinfo: *const u8,
    len: usize,
) -> i32 {
    guarded(host, |h| {
        let w = walker_of(export, "roots_from_vmcoreinfo")?;
        // SAFETY: valid for len bytes for the call (NULL only with 0).
        let raw = unsafe { slice(vmcoreinfo, len) }?;
        let v = crate::vmcoreinfo::VmcoreInfo::parse(raw);
        match w.roots_from_vmcoreinfo(Arch::new(arch.machine, arch.word_size), &v) {
            Some(c) => h.emit_regs(&c),
            None => Ok(()),
        }
    })
}

/// NUL-terminated copies of translation level names, kept for the life of the library
/// (the ABI hands out static strings).
static LEVEL_CSTRINGS: std::sync::Mutex<Vec<(&'static str, &'static std::ffi::CStr)>> =
    std::sync::Mutex::new(Vec::new());

fn level_cstr(name: &'static str) -> *const c_char {
    let mut v = LEVEL_CSTRINGS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = v.iter().find(|(n, _)| *n == name) {
        return c.as_ptr();
    }
    let c: &'static std::ffi::CStr = Box::leak(cstring(name).into_boxed_c_str());
    v.push((name, c));
    c.as_ptr()
}

/// The body of a generated `translate` export.
///
/// # Safety
/// The arguments are what the host passes to `translate` (valid for the call).
pub unsafe fn translate(
    export: Option<&Export>,
    host: *const abi::Host,
    cpu: *const abi::Cpu,
    opts: *const abi::WalkOptions,
    virt: u64,
    out: *mut abi::Translation,
) -> i32 {
    guarded(host, |h| {
        let w = walker_of(export, "translate")?;
        if cpu.is_null() || opts.is_null() || out.is_null() {
            return Err(Error::invalid("translate: cpu, options or out is NULL"));
        }
        // SAFETY: non-NULL, valid for the call, with the arrays they point at.
        let (c, o) = unsafe { (cpu_from_abi(&*cpu)?, &*opts) };
        // SAFETY: as above.
        let mem = unsafe { host_memory(h, o) }?;
        let t = w.translate(&c, &mem, &walk_options(o), virt)?;
        // SAFETY: non-NULL, valid for the call.
        let r = unsafe { &mut *out };
        if !covers(r.struct_size, std::mem::size_of::<abi::Translation>()) {
            return Err(Error::invalid("translate: the result struct is too small"));
        }
        let cap = r.step_capacity as usize;
        let n = t.steps.len().min(cap);
        if n > 0 && r.steps.is_null() {
            return Err(Error::invalid("translate: steps is NULL"));
        }
        for (i, st) in t.steps.iter().take(n).enumerate() {
            // SAFETY: i < step_capacity entries of the host's array.
            unsafe {
                r.steps.add(i).write(abi::TranslationStep {
                    level: level_cstr(st.level),
                    entry_addr: st.entry_addr,
                    entry: st.entry,
                })
            };
        }
        r.step_count = n as u32;
        r.mapped = u32::from(t.phys.is_some());
        r.phys = t.phys.unwrap_or(0);
        r.page_size = t.page_size.unwrap_or(0);
        r.fault_len = 0;
        if let (Some(f), false) = (&t.fault, r.fault.is_null()) {
            let mut len = f.len().min(r.fault_capacity);
            while !f.is_char_boundary(len) {
                len -= 1;
            }
            // SAFETY: fault is valid for fault_capacity bytes; len <= fault_capacity.
            unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), r.fault.cast::<u8>(), len) };
            r.fault_len = len;
        }
        Ok(())
    })
}

/// A sink over the host's sink callbacks. `finish` does nothing: the host completes the
/// output after `write` returns.
struct HostSink<'h> {
    host: HostRef<'h>,
}

impl Sink for HostSink<'_> {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        let f = self
            .host
            .0
            .sink_write
            .ok_or_else(|| HostRef::missing("sink_write"))?;
        // SAFETY: a host callback called with its own ctx and a valid buffer.
        HostRef::status("sink_write", unsafe {
            f(self.host.0.ctx, buf.as_ptr(), buf.len())
        })
    }

    fn skip(&mut self, len: u64) -> Result<()> {
        let f = self
            .host
            .0
            .sink_skip
            .ok_or_else(|| HostRef::missing("sink_skip"))?;
        // SAFETY: a host callback called with its own ctx.
        HostRef::status("sink_skip", unsafe { f(self.host.0.ctx, len) })
    }

    fn position(&self) -> u64 {
        match self.host.0.sink_position {
            // SAFETY: a host callback called with its own ctx.
            Some(f) => unsafe { f(self.host.0.ctx) },
            None => 0,
        }
    }

    fn is_seekable(&self) -> bool {
        match self.host.0.sink_seekable {
            // SAFETY: a host callback called with its own ctx.
            Some(f) => (unsafe { f(self.host.0.ctx) }) != 0,
            None => false,
        }
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let f = self
            .host
            .0
            .sink_write_at
            .ok_or_else(|| HostRef::missing("sink_write_at"))?;
        // SAFETY: a host callback called with its own ctx and a valid buffer.
        HostRef::status("sink_write_at", unsafe {
            f(self.host.0.ctx, offset, buf.as_ptr(), buf.len())
        })
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Progress over the host's `progress` (bytes done out of the total) and `log`.
struct HostProgress<'h> {
    host: HostRef<'h>,
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress for HostProgress<'_> {
    fn start(&self, _what: &str, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
    }

    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if let Some(f) = self.host.0.progress {
            // SAFETY: a host callback called with its own ctx.
            unsafe { f(self.host.0.ctx, done, self.total.load(Ordering::Relaxed)) }
        }
    }

    fn warn(&self, msg: &str) {
        self.host.log(abi::DUMPCONV_LOG_WARN, msg);
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::invalid(format!("{what} is not UTF-8")))
}

/// Rebuild the plan from the ABI form.
///
/// # Safety
/// `p` and every array it points at are valid for the call.
unsafe fn plan_from_abi(p: &abi::Plan) -> Result<DumpPlan> {
    // SAFETY (whole block): arrays valid for the call by the caller's contract.
    unsafe {
        let ranges = ranges_from_abi(slice(p.ranges, p.range_count)?);
        let mappings = if p.mappings.is_null() {
            None
        } else {
            Some(
                slice(p.mappings, p.mapping_count)?
                    .iter()
                    .map(|m| Mapping {
                        virt: m.virt,
                        phys: m.phys,
                        len: m.len,
                    })
                    .collect::<MappingList>(),
            )
        };
        let mut notes = Vec::with_capacity(p.note_count);
        for n in slice(p.notes, p.note_count)? {
            notes.push(Note {
                name: byte_string(n.name)?.to_vec(),
                n_type: n.n_type,
                desc: byte_string(n.desc)?.to_vec(),
            });
        }
        let mut cpus = Vec::with_capacity(p.cpu_count);
        for c in slice(p.cpus, p.cpu_count)? {
            cpus.push(cpu_from_abi(c)?);
        }
        let vmcoreinfo = if p.vmcoreinfo.ptr.is_null() {
            None
        } else {
            Some(VmcoreInfo::parse(byte_string(p.vmcoreinfo)?))
        };
        let mut options = BTreeMap::new();
        for o in slice(p.options, p.option_count)? {
            options.insert(
                utf8(byte_string(o.key)?, "option name")?,
                utf8(byte_string(o.value)?, "option value")?,
            );
        }
        Ok(DumpPlan {
            filter: None,
            arch: arch_from_abi(p.arch).ok_or_else(|| {
                Error::Unsupported("the plan does not say its architecture".into())
            })?,
            page_size: p.page_size,
            ranges,
            mappings,
            notes,
            cpus,
            vmcoreinfo,
            options,
        })
    }
}

/// The body of a generated `write` export.
///
/// # Safety
/// The arguments are what the host passes to `write` (valid for the call).
pub unsafe fn write(
    export: Option<&Export>,
    host: *const abi::Host,
    plan: *const abi::Plan,
) -> i32 {
    guarded(host, |h| {
        let Some(Implementation::Writer(w)) = export.map(|e| &e.imp) else {
            return Err(Error::invalid("write called before the entry function"));
        };
        if plan.is_null() {
            return Err(Error::invalid("write: plan is NULL"));
        }
        // SAFETY: non-NULL; the plan and its arrays are valid for the call.
        let plan = unsafe { plan_from_abi(&*plan) }?;
        let mem = HostMemory {
            host: h,
            ranges: plan.ranges.clone(),
        };
        let mut sink = HostSink { host: h };
        let progress = HostProgress {
            host: h,
            done: AtomicU64::new(0),
            total: AtomicU64::new(plan.total_bytes()),
        };
        w.write(&plan, &mem, &mut sink, &progress)
    })
}

/// Define an entry function (not exported) for a walker or writer: what
/// [`export_plugin!`](crate::export_plugin) builds on, and what in-process tests call.
///
/// It does not install the SDK's panic hook ([`install_panic_hook`]): called in-process
/// it shares the host's std, whose hook is the host's. A panic in an export is still
/// caught and reported, as "panic: MESSAGE" (no location), and the host's hook prints it
/// as for any panic.
///
/// `plugin_entry!(pub fn my_entry, walker: MyWalker, version: "1.0", description: "...")`
#[macro_export]
macro_rules! plugin_entry {
    ($vis:vis fn $entry:ident, walker: $make:expr, version: $ver:expr, description: $desc:expr $(,)?) => {
        $vis extern "C" fn $entry() -> *const $crate::plugin::abi::Plugin {
            static EXPORT: ::std::sync::OnceLock<&'static $crate::plugin::guest::Export> =
                ::std::sync::OnceLock::new();
            #[allow(unsafe_code)]
            unsafe extern "C" fn walk(
                host: *const $crate::plugin::abi::Host,
                cpu: *const $crate::plugin::abi::Cpu,
                opts: *const $crate::plugin::abi::WalkOptions,
                stats: *mut $crate::plugin::abi::WalkStats,
            ) -> i32 {
                // SAFETY: the host's arguments are passed on unchanged.
                unsafe {
                    $crate::plugin::guest::walk(EXPORT.get().copied(), host, cpu, opts, stats)
                }
            }
            #[allow(unsafe_code)]
            unsafe extern "C" fn cpu_info(
                host: *const $crate::plugin::abi::Host,
                cpu: *const $crate::plugin::abi::Cpu,
                info: *mut $crate::plugin::abi::CpuInfo,
            ) -> i32 {
                // SAFETY: the host's arguments are passed on unchanged.
                unsafe { $crate::plugin::guest::cpu_info(EXPORT.get().copied(), host, cpu, info) }
            }
            #[allow(unsafe_code)]
            unsafe extern "C" fn translate(
                host: *const $crate::plugin::abi::Host,
                cpu: *const $crate::plugin::abi::Cpu,
                opts: *const $crate::plugin::abi::WalkOptions,
                virt: u64,
                out: *mut $crate::plugin::abi::Translation,
            ) -> i32 {
                // SAFETY: the host's arguments are passed on unchanged.
                unsafe {
                    $crate::plugin::guest::translate(EXPORT.get().copied(), host, cpu, opts, virt, out)
                }
            }
            #[allow(unsafe_code)]
            unsafe extern "C" fn cpu_from_root(
                host: *const $crate::plugin::abi::Host,
                arch: $crate::plugin::abi::Arch,
                mode: *const ::std::ffi::c_char,
                mode_len: usize,
                root: u64,
            ) -> i32 {
                // SAFETY: the host's arguments are passed on unchanged.
                unsafe {
                    $crate::plugin::guest::cpu_from_root(EXPORT.get().copied(), host, arch, mode, mode_len, root)
                }
            }
            #[allow(unsafe_code)]
            unsafe extern "C" fn roots_from_vmcoreinfo(
                host: *const $crate::plugin::abi::Host,
                arch: $crate::plugin::abi::Arch,
                vmcoreinfo: *const u8,
                len: usize,
            ) -> i32 {
                // SAFETY: the host's arguments are passed on unchanged.
                unsafe {
                    $crate::plugin::guest::roots_from_vmcoreinfo(EXPORT.get().copied(), host, arch, vmcoreinfo, len)
                }
            }
            $crate::plugin::guest::entry(&EXPORT, || {
                $crate::plugin::guest::Export::walker(
                    ::std::boxed::Box::new($make),
                    $ver,
                    $desc,
                    $crate::plugin::guest::WalkerExports::V2 {
                        walk,
                        cpu_info,
                        translate,
                        cpu_from_root,
                        roots_from_vmcoreinfo,
                    },
                )
            })
        }
    };
    ($vis:vis fn $entry:ident, walker_v1: $make:expr, version: $ver:expr, description: $desc:expr $(,)?) => {
        $vis extern "C" fn $entry() -> *const $crate::plugin::abi::Plugin {
            static EXPORT: ::std::sync::OnceLock<&'static $crate::plugin::guest::Export> =
                ::std::sync::OnceLock::new();
            #[allow(unsafe_code)]
            unsafe extern "C" fn walk(
                host: *const $crate::plugin::abi::Host,
                cpu: *const $crate::plugin::abi::v1::Cpu,
                opts: *const $crate::plugin::abi::WalkOptions,
                stats: *mut $crate::plugin::abi::WalkStats,
            ) -> i32 {
                // SAFETY: the host's arguments are passed on unchanged.
                unsafe {
                    $crate::plugin::guest::walk_v1(EXPORT.get().copied(), host, cpu, opts, stats)
                }
            }
            $crate::plugin::guest::entry(&EXPORT, || {
                $crate::plugin::guest::Export::walker(
                    ::std::boxed::Box::new($make),
                    $ver,
                    $desc,
                    $crate::plugin::guest::WalkerExports::V1 { walk },
                )
            })
        }
    };
    ($vis:vis fn $entry:ident, writer: $make:expr, version: $ver:expr, description: $desc:expr $(,)?) => {
        $vis extern "C" fn $entry() -> *const $crate::plugin::abi::Plugin {
            static EXPORT: ::std::sync::OnceLock<&'static $crate::plugin::guest::Export> =
                ::std::sync::OnceLock::new();
            #[allow(unsafe_code)]
            unsafe extern "C" fn write(
                host: *const $crate::plugin::abi::Host,
                plan: *const $crate::plugin::abi::Plan,
            ) -> i32 {
                // SAFETY: the host's arguments are passed on unchanged.
                unsafe { $crate::plugin::guest::write(EXPORT.get().copied(), host, plan) }
            }
            $crate::plugin::guest::entry(&EXPORT, || {
                $crate::plugin::guest::Export::writer(::std::boxed::Box::new($make), $ver, $desc, write)
            })
        }
    };
}

/// Export a Rust walker or writer as a dumpconv plugin (in a `cdylib` crate), with ABI
/// version 2 (`walker:` or `writer:`). `walker_v1:` exports an x86 walker with the frozen
/// version-1 ABI instead (CR0/CR3/CR4/EFER CPUs), to test dumpconv's compatibility with
/// version-1 plugins; new plugins have no reason to use it.
///
/// ```ignore
/// dumpconv_core::export_plugin!(
///     writer: my_crate::MyWriter::default(),
///     version: env!("CARGO_PKG_VERSION"),
///     description: "my format",
/// );
/// ```
///
/// Defines the exported symbols `dumpconv_plugin_entry` and `dumpconv_plugin_abi`; use it
/// once per library.
///
/// The first call of `dumpconv_plugin_entry` installs the SDK's panic hook
/// ([`install_panic_hook`](crate::plugin::guest::install_panic_hook)) in the library's
/// own std: a panic in an export then prints nothing and is reported through the host's
/// error as "panicked at FILE:LINE:COL: MESSAGE". This is why only the exported entry
/// installs it: the library is a `cdylib` with its own std, so the hook cannot replace
/// the host's. (Do not call `dumpconv_plugin_entry` of a crate linked into the host
/// itself; use [`plugin_entry!`](crate::plugin_entry) for in-process use.)
#[macro_export]
macro_rules! export_plugin {
    ($kind:ident: $make:expr, version: $ver:expr, description: $desc:expr $(,)?) => {
        $crate::plugin_entry!(fn __dumpconv_plugin_entry, $kind: $make, version: $ver, description: $desc);

        /// The plugin's entry point (dumpconv plugin ABI).
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dumpconv_plugin_entry() -> *const $crate::plugin::abi::Plugin {
            $crate::plugin::guest::install_panic_hook();
            __dumpconv_plugin_entry()
        }

        /// The plugin's ABI major version, read by the host before loading the library.
        #[allow(unsafe_code, non_upper_case_globals)]
        #[no_mangle]
        pub static dumpconv_plugin_abi: u32 = $crate::__dumpconv_abi_of!($kind);
    };
}

/// The ABI major version a plugin kind of [`export_plugin!`] exports: 1 for
/// `walker_v1`, else the current one.
#[doc(hidden)]
#[macro_export]
macro_rules! __dumpconv_abi_of {
    (walker_v1) => {
        $crate::plugin::abi::v1::DUMPCONV_ABI_MAJOR
    };
    ($other:ident) => {
        $crate::plugin::abi::DUMPCONV_ABI_MAJOR
    };
}
