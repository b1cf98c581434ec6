//! The `#[repr(C)]` mirror of `core/include/dumpconv_plugin.h`, the C ABI of plugins
//! (major version 2). [`v1`] mirrors the frozen version-1 header
//! (`core/include/v1/dumpconv_plugin.h`) where the versions differ.
//!
//! Naming: C `dumpconv_foo` is `Foo` here (`dumpconv_option` is [`PluginOption`], so as
//! not to shadow `Option`); field names and constants are the header's, verbatim. A test
//! compares every size, offset and constant with the header; change both together.
//! Function pointers are `Option<unsafe extern "C" fn ..>` so that NULL is representable.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};

pub mod v1;

pub const DUMPCONV_ABI_MAJOR: u32 = 2;
/// The entry function's symbol name, as a C string (NUL-terminated).
pub const DUMPCONV_ENTRY_SYMBOL: &str = "dumpconv_plugin_entry";
/// The ABI-version static's symbol name.
pub const DUMPCONV_ABI_SYMBOL: &str = "dumpconv_plugin_abi";

pub const DUMPCONV_OK: i32 = 0;
pub const DUMPCONV_ERR_FAILED: i32 = 1;
pub const DUMPCONV_ERR_INVALID: i32 = 2;
pub const DUMPCONV_ERR_UNSUPPORTED: i32 = 3;
pub const DUMPCONV_ERR_IO: i32 = 4;
pub const DUMPCONV_ERR_PANIC: i32 = 5;

pub const DUMPCONV_KIND_WALKER: u32 = 1;
pub const DUMPCONV_KIND_WRITER: u32 = 2;

pub const DUMPCONV_EM_386: u32 = 3;
pub const DUMPCONV_EM_X86_64: u32 = 62;
pub const DUMPCONV_EM_AARCH64: u32 = 183;
pub const DUMPCONV_EM_RISCV: u32 = 243;

pub const DUMPCONV_MODE_UNKNOWN: i32 = -1;

pub const DUMPCONV_LOG_ERROR: u32 = 1;
pub const DUMPCONV_LOG_WARN: u32 = 2;
pub const DUMPCONV_LOG_INFO: u32 = 3;
pub const DUMPCONV_LOG_DEBUG: u32 = 4;

/// `dumpconv_writer.flags`: the writer compresses its own data and takes the `compress`,
/// `level` and `threads` options; its output is never wrapped in a whole-file stream.
pub const DUMPCONV_WRITER_SELF_COMPRESSING: u32 = 1 << 0;

/// `dumpconv_bytes`: a byte string borrowed from the host; `ptr` may be NULL when `len`
/// is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Bytes {
    pub ptr: *const u8,
    pub len: usize,
}

/// `dumpconv_host`: the host's services for one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Host {
    pub struct_size: u32,
    pub reserved: u32,
    pub ctx: *mut c_void,
    pub read_phys:
        Option<unsafe extern "C" fn(ctx: *mut c_void, addr: u64, buf: *mut u8, len: usize) -> i32>,
    pub set_error: Option<unsafe extern "C" fn(ctx: *mut c_void, msg: *const c_char, len: usize)>,
    pub log:
        Option<unsafe extern "C" fn(ctx: *mut c_void, level: u32, msg: *const c_char, len: usize)>,
    pub emit_mapping:
        Option<unsafe extern "C" fn(ctx: *mut c_void, virt: u64, phys: u64, len: u64) -> i32>,
    pub sink_write:
        Option<unsafe extern "C" fn(ctx: *mut c_void, buf: *const u8, len: usize) -> i32>,
    pub sink_skip: Option<unsafe extern "C" fn(ctx: *mut c_void, len: u64) -> i32>,
    pub sink_write_at: Option<
        unsafe extern "C" fn(ctx: *mut c_void, offset: u64, buf: *const u8, len: usize) -> i32,
    >,
    pub sink_position: Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>,
    pub sink_seekable: Option<unsafe extern "C" fn(ctx: *mut c_void) -> i32>,
    pub progress: Option<unsafe extern "C" fn(ctx: *mut c_void, done: u64, total: u64)>,
    /// Appended in version 2: one register of the CPU a walker's `cpu_from_root` or
    /// `roots_from_vmcoreinfo` builds (NULL in every other call).
    pub emit_reg: Option<
        unsafe extern "C" fn(ctx: *mut c_void, name: *const c_char, len: usize, value: u64) -> i32,
    >,
}

/// `dumpconv_arch`: ELF e_machine and word size in bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arch {
    pub machine: u16,
    pub word_size: u8,
    pub reserved: u8,
}

/// `dumpconv_reg`: one named register.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Reg {
    pub name: Bytes,
    pub value: u64,
}

/// `dumpconv_cpu`: a CPU's architecture and recorded registers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub struct_size: u32,
    pub index: u32,
    pub arch: Arch,
    pub reserved: u32,
    pub regs: *const Reg,
    pub reg_count: usize,
}

/// `dumpconv_cpu_info`: what a walker says about a CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuInfo {
    pub struct_size: u32,
    pub paging: u32,
    pub mode: i32,
    pub reserved: u32,
    pub kernel_start: u64,
}

/// `dumpconv_walk_options`. `ram`/`ram_count` were appended after the first draft: a
/// plugin reads them only when `struct_size` covers them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WalkOptions {
    pub struct_size: u32,
    pub max_phys_bits: u32,
    pub clear_mask: u64,
    pub max_table_pages: u64,
    pub ram: *const Range,
    pub ram_count: usize,
}

/// `dumpconv_walk_stats`: filled by walk; write only the fields that fit `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkStats {
    pub struct_size: u32,
    pub reserved: u32,
    pub leaves: u64,
    pub leaves_outside_ram: u64,
    pub table_pages: u64,
    pub tables_outside_ram: u64,
}

/// `dumpconv_translation_step`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TranslationStep {
    pub level: *const c_char,
    pub entry_addr: u64,
    pub entry: u64,
}

/// `dumpconv_translation`: the result of translate, in host-provided buffers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Translation {
    pub struct_size: u32,
    pub step_count: u32,
    pub steps: *mut TranslationStep,
    pub step_capacity: u32,
    pub mapped: u32,
    pub phys: u64,
    pub page_size: u64,
    pub fault: *mut c_char,
    pub fault_capacity: usize,
    pub fault_len: usize,
}

/// `dumpconv_walker`: the walker function table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Walker {
    pub struct_size: u32,
    pub arch_count: u32,
    pub arches: *const Arch,
    pub modes: *const c_char,
    pub walk: Option<
        unsafe extern "C" fn(
            host: *const Host,
            cpu: *const Cpu,
            opts: *const WalkOptions,
            stats: *mut WalkStats,
        ) -> i32,
    >,
    pub cpu_info:
        Option<unsafe extern "C" fn(host: *const Host, cpu: *const Cpu, info: *mut CpuInfo) -> i32>,
    pub translate: Option<
        unsafe extern "C" fn(
            host: *const Host,
            cpu: *const Cpu,
            opts: *const WalkOptions,
            virt: u64,
            out: *mut Translation,
        ) -> i32,
    >,
    /// Appended (read only when `struct_size` covers it; may be NULL): build the CPU for
    /// a root address and a mode name through `host->emit_reg`.
    pub cpu_from_root: Option<
        unsafe extern "C" fn(
            host: *const Host,
            arch: Arch,
            mode: *const c_char,
            mode_len: usize,
            root: u64,
        ) -> i32,
    >,
    /// Appended (read only when `struct_size` covers it; may be NULL): the CPU of the
    /// kernel's own root from VMCOREINFO through `host->emit_reg`; none emitted = none.
    pub roots_from_vmcoreinfo: Option<
        unsafe extern "C" fn(
            host: *const Host,
            arch: Arch,
            vmcoreinfo: *const u8,
            len: usize,
        ) -> i32,
    >,
}

/// `dumpconv_range`: half-open physical range `[start, end)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// `dumpconv_mapping`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mapping {
    pub virt: u64,
    pub phys: u64,
    pub len: u64,
}

/// `dumpconv_note`: name without its NUL, type, descriptor.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Note {
    pub name: Bytes,
    pub n_type: u32,
    pub reserved: u32,
    pub desc: Bytes,
}

/// `dumpconv_option`: a writer option (`--compress zstd` => "compress" = "zstd").
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginOption {
    pub key: Bytes,
    pub value: Bytes,
}

/// `dumpconv_plan`: what to write.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub struct_size: u32,
    pub arch: Arch,
    pub page_size: u64,
    pub ranges: *const Range,
    pub range_count: usize,
    pub mappings: *const Mapping,
    pub mapping_count: usize,
    pub notes: *const Note,
    pub note_count: usize,
    pub cpus: *const Cpu,
    pub cpu_count: usize,
    pub vmcoreinfo: Bytes,
    pub options: *const PluginOption,
    pub option_count: usize,
}

/// `dumpconv_writer`: the writer function table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Writer {
    pub struct_size: u32,
    pub flags: u32,
    pub extensions: *const c_char,
    pub write: Option<unsafe extern "C" fn(host: *const Host, plan: *const Plan) -> i32>,
}

/// `dumpconv_plugin`: the descriptor returned by `dumpconv_plugin_entry`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Plugin {
    pub abi_major: u32,
    pub struct_size: u32,
    pub kind: u32,
    pub reserved: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub description: *const c_char,
    pub walker: *const Walker,
    pub writer: *const Writer,
}

/// `dumpconv_entry_fn`.
pub type EntryFn = unsafe extern "C" fn() -> *const Plugin;

// SAFETY: the descriptor and the tables it points to are immutable statics of the plugin
// (or of the SDK macro's expansion) that live as long as the library, which the host
// never unloads; sharing them between threads only reads them.
unsafe impl Sync for Plugin {}
// SAFETY: as for `Plugin`.
unsafe impl Sync for Walker {}
// SAFETY: as for `Plugin`.
unsafe impl Sync for Writer {}

/// Sizes of the structs as first published: the smallest `struct_size` the host accepts
/// for each (fields appended later are read only when `struct_size` covers them). The
/// descriptor and the writer table are the same in versions 1 and 2.
pub const PLUGIN_V1_SIZE: usize = std::mem::size_of::<Plugin>();
pub const WRITER_V1_SIZE: usize = std::mem::size_of::<Writer>();
/// The version-2 walker table as first published (without `cpu_from_root` and
/// `roots_from_vmcoreinfo`).
pub const WALKER_V2_SIZE: usize = std::mem::offset_of!(Walker, cpu_from_root);
/// The version-2 walker table with `cpu_from_root` and `roots_from_vmcoreinfo`.
pub const WALKER_V2_ROOTS_SIZE: usize = std::mem::size_of::<Walker>();
/// `DUMPCONV_MAX_EMITTED_REGS`: most registers a walker may emit for one CPU.
pub const DUMPCONV_MAX_EMITTED_REGS: u32 = 256;
/// `DUMPCONV_MAX_REG_NAME`: the longest register name.
pub const DUMPCONV_MAX_REG_NAME: u32 = 64;
pub const MAX_EMITTED_REGS: usize = DUMPCONV_MAX_EMITTED_REGS as usize;
pub const MAX_REG_NAME: usize = DUMPCONV_MAX_REG_NAME as usize;
/// `dumpconv_walk_options` without `ram`/`ram_count`.
pub const WALK_OPTIONS_NO_RAM_SIZE: usize = std::mem::offset_of!(WalkOptions, ram);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout_on_lp64() {
        // The header's own test (drift test) compares with a C compiler; this only pins
        // the obvious so a field reordering here fails fast.
        assert_eq!(size_of::<Bytes>(), 16);
        assert_eq!(size_of::<Cpu>(), 32);
        assert_eq!(offset_of!(Cpu, regs), 16);
        assert_eq!(size_of::<Reg>(), 24);
        assert_eq!(size_of::<Walker>(), 64);
        assert_eq!(WALKER_V2_SIZE, 48);
        assert_eq!(size_of::<Translation>(), 64);
        assert_eq!(size_of::<v1::Cpu>(), 64);
        assert_eq!(size_of::<WalkOptions>(), 40);
        assert_eq!(offset_of!(WalkOptions, ram), 24);
        assert_eq!(size_of::<Plugin>(), 56);
        assert_eq!(offset_of!(Plugin, writer), 48);
        assert_eq!(offset_of!(Host, progress), 88);
        assert_eq!(size_of::<Plan>(), 112);
    }

    #[test]
    fn v1_host_is_a_prefix_of_v2s() {
        // Version-1 plugins are handed the version-2 host table.
        assert_eq!(offset_of!(Host, emit_reg), size_of::<v1::Host>());
        assert_eq!(offset_of!(Host, progress), offset_of!(v1::Host, progress));
        assert_eq!(offset_of!(Host, ctx), offset_of!(v1::Host, ctx));
        assert_eq!(
            offset_of!(Host, emit_mapping),
            offset_of!(v1::Host, emit_mapping)
        );
    }
}
