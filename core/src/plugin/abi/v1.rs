//! The `#[repr(C)]` mirror of the frozen version-1 header
//! (`core/include/v1/dumpconv_plugin.h`) where it differs from version 2: the x86 CPU
//! (CR0/CR3/CR4/EFER/A20 and a paging-mode number), the walker table listing x86
//! paging-mode numbers, and the plan whose architecture is a number and whose CPUs are
//! version-1 CPUs. Every other struct (descriptor, host, options, stats, ranges,
//! mappings, notes, writer table) is the same in both versions: see [`super`].
//!
//! A test compares this file with the v1 header, as it compares abi.rs with the v2 one.

#![allow(unsafe_code)]

use super::{Bytes, Host, Mapping, Note, PluginOption, Range, WalkOptions, WalkStats};

pub const DUMPCONV_ABI_MAJOR: u32 = 1;

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
            host: *const Host,
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
