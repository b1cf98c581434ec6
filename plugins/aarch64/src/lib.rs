//! AArch64 page tables: stage-1 translation of the EL1&0 regime (what a Linux kernel and
//! its processes use), written only against `dumpconv-core`'s public API.
//!
//! This crate is data plus register reading, like the x86 one: [`regime`] turns
//! TCR_EL1 into one MMU description per VA range (granule 4KB, 16KB or 64KB and VA size
//! from TnSZ, so each range may start at a different level), and [`Aarch64Walker`]
//! reads TTBR0_EL1, TTBR1_EL1, TCR_EL1 and SCTLR_EL1 of a CPU to give core's engine
//! two address spaces: TTBR0 for the low range (addresses with the top bits 0), TTBR1
//! for the high range (top bits 1). The walk, its bounds (depth, `max_table_pages`, loops),
//! the table cache and the multi-CPU view are core's.
//!
//! What it handles: 4KB, 16KB and 64KB granules; VA sizes from 25 to 48 bits and 52
//! (64KB with FEAT_LVA; 4KB/16KB with FEAT_LPA2, TCR_EL1.DS = 1); block descriptors at
//! every level the granule allows (4KB: L1 and L2, L0 with DS; 16KB: L2, L1 with DS;
//! 64KB: L2, L1 with a 52-bit PA); 52-bit output addresses (64KB: OA[51:48] in
//! descriptor bits 15:12; DS: OA[51:50] in bits 9:8; the TTBR's BADDR[51:48] in bits
//! 5:2); the ASID and CnP bits of the TTBRs are ignored; address-size faults (address bits
//! above TCR_EL1.IPS) and reserved encodings are skipped and counted as invalid entries;
//! EPD0/EPD1 disable a range; SCTLR_EL1.M = 0 is paging off; SCTLR_EL1.EE = 1 reads the
//! tables big-endian.
//!
//! Mode names ([`regime::MODE_NAMES`]) are `<granule>-<VA bits>` of the kernel (TTBR1)
//! range: "4k-48", "16k-47", "64k-42", "4k-52"... `--root ADDR --paging-mode 4k-48`
//! builds a CPU whose TTBR1_EL1 is ADDR (the kernel's `swapper_pg_dir`), with TTBR0
//! disabled.

pub mod regime;

use std::borrow::Cow;

use dumpconv_core::paging::{AddressSpace, Regime};
use dumpconv_core::{Arch, ArchWalker, CpuState, Error, Result, VmcoreInfo, WalkOptions};

pub use regime::{
    kernel_tcr, mode_name, parse_mode, ttbr_for, Granule, Half, HalfState, MODE_NAMES, SCTLR_M,
};

/// What `dumpconv plugins` says about this walker.
pub const DESCRIPTION: &str =
    "AArch64 stage-1 page tables: 4K/16K/64K granules, 39-52-bit VAs, TTBR0 and TTBR1";

/// The architectures handled.
static ARCHES: [Arch; 1] = [Arch::AARCH64];

/// The AArch64 walker.
#[derive(Debug, Default, Clone, Copy)]
pub struct Aarch64Walker;

impl Aarch64Walker {
    pub fn new() -> Self {
        Aarch64Walker
    }
}

fn walk_err(cpu: &CpuState, msg: impl Into<String>) -> Error {
    Error::Walk {
        cpu: cpu.index,
        msg: msg.into(),
    }
}

/// The registers a CPU state for `g`/`va_bits` with TTBR1 at `root` holds.
fn kernel_cpu(arch: Arch, g: Granule, va_bits: u32, root: u64) -> CpuState {
    CpuState::new(0, Some(arch))
        .with_reg("ttbr1_el1", ttbr_for(root))
        .with_reg("tcr_el1", kernel_tcr(g, va_bits))
        .with_reg("sctlr_el1", SCTLR_M)
}

impl ArchWalker for Aarch64Walker {
    fn name(&self) -> &str {
        "aarch64"
    }

    fn arches(&self) -> &[Arch] {
        &ARCHES
    }

    fn modes(&self) -> &[&str] {
        &MODE_NAMES
    }

    fn parse_mode(&self, name: &str) -> Option<Cow<'static, str>> {
        if name.eq_ignore_ascii_case("off") {
            return Some(Cow::Borrowed("off"));
        }
        parse_mode(name).map(|(g, va)| mode_name(g, va))
    }

    /// SCTLR_EL1.M clear: paging off. Otherwise one address space per VA range whose
    /// walks TCR_EL1 enables and whose TTBR was recorded. Errors: no TCR_EL1, or no
    /// range usable (each reason named).
    fn regime(&self, cpu: &CpuState, _opts: &WalkOptions) -> Result<Regime> {
        let tcr = cpu.reg("tcr_el1").ok_or_else(|| {
            walk_err(
                cpu,
                "no TCR_EL1 recorded: the translation layout is unknown; give --cr3 \
                 (TTBR1_EL1) and --paging-mode (e.g. 4k-48)",
            )
        })?;
        // A state with TCR but no SCTLR is taken to have the MMU on.
        let sctlr = cpu.reg("sctlr_el1").unwrap_or(SCTLR_M);
        if sctlr & SCTLR_M == 0 {
            return Ok(Regime::Off);
        }
        let mut spaces = Vec::new();
        let mut why = Vec::new();
        let mut mode: Option<Cow<'static, str>> = None;
        // TTBR1 first: the mode name is the kernel range's.
        for upper in [true, false] {
            let reg = if upper { "ttbr1_el1" } else { "ttbr0_el1" };
            let half = match Half::decode(tcr, sctlr, upper) {
                HalfState::Enabled(h) => h,
                HalfState::Disabled => continue,
                HalfState::Invalid(m) => {
                    why.push(m);
                    continue;
                }
            };
            let Some(ttbr) = cpu.reg(reg) else {
                why.push(format!("{} not recorded", half.ttbr_name()));
                continue;
            };
            let Some(root) = half.root(ttbr) else {
                why.push(format!(
                    "{} {ttbr:#x} holds a table address above the {}-bit PA size",
                    half.ttbr_name(),
                    half.pa_bits
                ));
                continue;
            };
            mode.get_or_insert_with(|| half.mode_name());
            spaces.push(AddressSpace {
                range: half.range(),
                root,
                root_name: half.ttbr_name(),
                table_mask: u64::MAX,
                desc: Cow::Owned(half.desc()),
            });
        }
        let Some(mode) = mode else {
            return Err(walk_err(
                cpu,
                if why.is_empty() {
                    "TCR_EL1 disables walks through both TTBR0_EL1 and TTBR1_EL1".to_string()
                } else {
                    format!("no usable translation range: {}", why.join("; "))
                },
            ));
        };
        spaces.sort_by_key(|s| s.range.lo);
        Ok(Regime::Paging { mode, spaces })
    }

    /// `--root ADDR --paging-mode G-VA`: TTBR1_EL1 = ADDR with granule G and VA size VA,
    /// TTBR0 disabled; "off" gives a CPU with the MMU off.
    fn cpu_from_root(&self, arch: Arch, mode: &str, root: u64) -> Result<CpuState> {
        if mode.eq_ignore_ascii_case("off") {
            return Ok(CpuState::new(0, Some(arch)).with_reg("sctlr_el1", 0));
        }
        let (g, va) = parse_mode(mode).ok_or_else(|| {
            Error::invalid(format!(
                "unknown aarch64 paging mode {mode:?} (expected <granule>-<VA bits>: \
                 {}, ...)",
                MODE_NAMES.join(", ")
            ))
        })?;
        Ok(kernel_cpu(arch, g, va, root))
    }

    /// arm64 Linux: the kernel's TTBR1 root is `SYMBOL(swapper_pg_dir)` (a kernel-image
    /// address, KASLR offset included) minus `NUMBER(kimage_voffset)` (the image's
    /// virtual-to-physical offset). VA size from `NUMBER(TCR_EL1_T1SZ)` (64 - T1SZ, the
    /// size the kernel runs with), else `NUMBER(VA_BITS)`; granule from `PAGESIZE`.
    ///
    /// A kernel built for 52-bit VAs with 64KB pages that runs with 48 (T1SZ = 16 on a
    /// CPU without FEAT_LVA) points TTBR1 into its 52-bit top table, at the entry where
    /// the 48-bit range starts; that offset is added.
    ///
    /// Kernels before 4.6 have no `kimage_voffset`: their image is in the linear map,
    /// so the root is `swapper_pg_dir - PAGE_OFFSET + NUMBER(PHYS_OFFSET)` with that
    /// era's `PAGE_OFFSET` (the top 2^(VA_BITS-1) bytes). With neither, None.
    fn roots_from_vmcoreinfo(&self, arch: Arch, v: &VmcoreInfo) -> Option<CpuState> {
        if arch != Arch::AARCH64 {
            return None;
        }
        let sym = v.symbol("swapper_pg_dir")?;
        let g = Granule::from_bytes(v.page_size().unwrap_or(0x1000))?;
        let config_va = v.number("VA_BITS").and_then(|n| u32::try_from(n).ok());
        let va = match v.number("TCR_EL1_T1SZ") {
            Some(t) => 64u32.checked_sub(u32::try_from(t).ok()?)?,
            None => config_va?,
        };
        if !((25..=48).contains(&va) || va == 52) {
            return None;
        }
        let mut root = match v.number("kimage_voffset") {
            Some(off) => sym.wrapping_sub(off as u64),
            None => {
                let phys_offset = v.number("PHYS_OFFSET")? as u64;
                // A VA_BITS no arm64 kernel has (from a damaged text) gives no root.
                let bits = config_va.filter(|b| (25..=52).contains(b))?;
                let page_offset = u64::MAX << (bits - 1);
                sym.checked_sub(page_offset)?.wrapping_add(phys_offset)
            }
        };
        if g == Granule::K64 && config_va == Some(52) && va == 48 {
            // Entries of the 52-bit top table (L1, VA[51:42]) below the 48-bit range's
            // first: (2^10 - 2^6) of them, 8 bytes each.
            root = root.checked_add(((1 << 10) - (1 << 6)) * 8)?;
        }
        Some(kernel_cpu(arch, g, va, root))
    }

    /// `NUMBER(kimage_voffset)` (arm64 writes it, nothing else does) with a kernel-half
    /// `SYMBOL(swapper_pg_dir)`.
    fn arch_from_vmcoreinfo(&self, v: &VmcoreInfo) -> Option<Arch> {
        let swapper = v.symbol("swapper_pg_dir")?;
        (v.number("kimage_voffset").is_some() && swapper >> 63 == 1).then_some(Arch::AARCH64)
    }
}
