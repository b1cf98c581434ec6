//! The `#[repr(C)]` mirror of the frozen version-1 header
//! (`core/include/v1/dumpconv_plugin.h`) where it differs from version 2: the x86 CPU
//! (CR0/CR3/CR4/EFER/A20 and a paging-mode number), the walker table listing x86
//! paging-mode numbers, and the plan whose architecture is a number and whose CPUs are
//! version-1 CPUs. Every other struct (descriptor, options, stats, ranges, mappings,
//! notes, writer table) is the same in both versions: see [`super`]. The host table of
//! version 1 ([`Host`]) is a prefix of version 2's, which appended `emit_reg`: version-1
//! plugins receive the version-2 table, whose struct_size covers more than they read.
//!
//! A test compares this file with the v1 header, as it compares abi.rs with the v2 one.

#![allow(unsafe_code)]

use super::{Bytes, Mapping, Note, PluginOption, Range, WalkOptions, WalkStats};

pub const DUMPCONV_ABI_MAJOR: u32 = 1;

/// `dumpconv_host` (v1): the version-2 [`super::Host`] without the appended `emit_reg`.
/// Only the drift test uses it; the host passes [`super::Host`] to every plugin.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Host {
    pub struct_size: u32,
    pub reserved: u32,
    pub ctx: *mut std::ffi::c_void,
    pub read_phys: Option<
        unsafe extern "C" fn(
            ctx: *mut std::ffi::c_void,
            addr: u64,
            buf: *mut u8,
            len: usize,
        ) -> i32,
    >,
    pub set_error: Option<
        unsafe extern "C" fn(ctx: *mut std::ffi::c_void, msg: *const std::ffi::c_char, len: usize),
    >,
    pub log: Option<
        unsafe extern "C" fn(
            ctx: *mut std::ffi::c_void,
            level: u32,
            msg: *const std::ffi::c_char,
            len: usize,
        ),
    >,
    pub emit_mapping: Option<
        unsafe extern "C" fn(ctx: *mut std::ffi::c_void, virt: u64, phys: u64, len: u64) -> i32,
    >,
    pub sink_write:
        Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void, buf: *const u8, len: usize) -> i32>,
    pub sink_skip: Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void, len: u64) -> i32>,
    pub sink_write_at: Option<
        unsafe extern "C" fn(
            ctx: *mut std::ffi::c_void,
            offset: u64,
            buf: *const u8,
            len: usize,
        ) -> i32,
    >,
    pub sink_position: Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void) -> u64>,
    pub sink_seekable: Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void) -> i32>,
    pub progress: Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void, done: u64, total: u64)>,
}

pub const DUMPCONV_ARCH_X86_64: u32 = 1;
pub const DUMPCONV_ARCH_X86: u32 = 2;

pub const DUMPCONV_PAGING_OFF: u32 = 0;
pub const DUMPCONV_PAGING_32BIT: u32 = 1;
pub const DUMPCONV_PAGING_PAE: u32 = 2;
pub const DUMPCONV_PAGING_4LEVEL: u32 = 3;
pub const DUMPCONV_PAGING_5LEVEL: u32 = 4;

pub const DUMPCONV_CPU_CR0: u32 = 1 << 0;
pub const DUMPCONV_CPU_CR3: u32 = 1 << 1;
pub const DUMPCONV_CPU_CR4: u32 = 1 << 2;
pub const DUMPCONV_CPU_EFER: u32 = 1 << 3;
pub const DUMPCONV_CPU_A20: u32 = 1 << 4;

/// `dumpconv_cpu` (v1): the state of one x86 CPU, as far as paging is concerned.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub struct_size: u32,
    pub index: u32,
    pub arch: u32,
    pub paging_mode: u32,
    pub valid: u32,
    pub reserved: u32,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub a20_mask: u64,
}

/// `dumpconv_walker` (v1): the walker function table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Walker {
    pub struct_size: u32,
    pub mode_count: u32,
    pub modes: *const u32,
    pub walk: Option<
        unsafe extern "C" fn(
            host: *const super::Host,
            cpu: *const Cpu,
            opts: *const WalkOptions,
            stats: *mut WalkStats,
        ) -> i32,
    >,
}

/// `dumpconv_plan` (v1): what to write.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub struct_size: u32,
    pub arch: u32,
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

// SAFETY: as for `super::Walker`: an immutable static of the plugin.
unsafe impl Sync for Walker {}

/// The v1 walker table's size: the smallest `struct_size` accepted.
pub const WALKER_V1_SIZE: usize = std::mem::size_of::<Walker>();
