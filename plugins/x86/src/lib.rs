//! x86 page tables: 32-bit (PSE, PSE-36), PAE, IA-32e 4-level and 5-level.
//!
//! This crate is data plus register reading: `mode.rs` describes the four modes for the
//! walk engine of `dumpconv_core::paging`, and [`X86Walker`] reads CR0, CR3, CR4, EFER
//! and the A20 mask of a CPU to choose one. Everything else (the walk, its bounds, the
//! table cache shared across CPUs, the multi-CPU view) is core's. Where QEMU's walker
//! (FORMATS.md §3) goes wrong, this one does not:
//!
//! - virtual addresses are canonical (sign-extended from bit 47, or 56 with LA57);
//! - physical addresses keep only MAXPHYADDR bits (`WalkOptions::max_phys_bits`) minus
//!   `WalkOptions::clear_mask` (the SME C-bit), so NX, protection keys and software
//!   bits 52–58 never leak into an address, in leaves and table pointers alike;
//! - a leaf outside RAM is counted, and a large page partly in RAM keeps its RAM part;
//! - a table page is read with one positioned read, upper-level tables are cached, and
//!   the work is bounded by depth and by `WalkOptions::max_table_pages`.
//!
//! A20: the `a20_mask` register is applied to the root and to every table address (as
//! QEMU does), not to the leaves' physical addresses.

mod mode;

use std::borrow::Cow;

use dumpconv_core::paging::{AddressSpace, Regime, VirtRange};
use dumpconv_core::{Arch, ArchWalker, CpuState, Error, Result, VmcoreInfo, WalkOptions};

pub use mode::{
    cpu_from_root, describe, paging_mode, pse, PagingMode, CR0_PE, CR0_PG, CR4_LA57, CR4_PAE,
    CR4_PSE, EFER_LMA, EFER_LME,
};

/// The mode names, in the order `dumpconv plugins` lists them.
static MODE_NAMES: [&str; 4] = ["32bit", "pae", "4level", "5level"];

/// The architectures handled.
static ARCHES: [Arch; 2] = [Arch::X86_64, Arch::I386];

/// `__START_KERNEL_map`: where x86_64 maps the kernel image.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// The x86 walker: all four paging modes, chosen per CPU from CR0.PG, CR4.PAE,
/// EFER.LMA and CR4.LA57 ([`paging_mode`]); 4 MiB pages from CR4.PSE.
#[derive(Debug, Default, Clone, Copy)]
pub struct X86Walker;

impl X86Walker {
    pub fn new() -> Self {
        X86Walker
    }
}

fn walk_err(cpu: &CpuState, msg: impl Into<String>) -> Error {
    Error::Walk {
        cpu: cpu.index,
        msg: msg.into(),
    }
}

impl ArchWalker for X86Walker {
    fn name(&self) -> &str {
        "x86"
    }

    fn arches(&self) -> &[Arch] {
        &ARCHES
    }

    fn modes(&self) -> &[&str] {
        &MODE_NAMES
    }

    fn parse_mode(&self, name: &str) -> Option<Cow<'static, str>> {
        PagingMode::parse(name).map(|m| Cow::Borrowed(m.name()))
    }

    /// One address space: the whole (canonical) address space from CR3. Missing CR0 or
    /// CR4, and paging on without CR3, are [`Error::Walk`] errors.
    fn regime(&self, cpu: &CpuState, _opts: &WalkOptions) -> Result<Regime> {
        let mode = paging_mode(cpu).ok_or_else(|| {
            walk_err(
                cpu,
                "no control registers recorded (CR0/CR4): the paging mode is unknown; \
                 give --cr3 and --paging-mode",
            )
        })?;
        let Some(desc) = describe(mode, pse(cpu)) else {
            return Ok(Regime::Off);
        };
        let cr3 = cpu.reg("cr3").ok_or_else(|| {
            walk_err(cpu, format!("{mode} paging is on but CR3 was not recorded"))
        })?;
        Ok(Regime::Paging {
            mode: Cow::Borrowed(mode.name()),
            spaces: vec![AddressSpace {
                range: VirtRange::ALL,
                root: cr3,
                root_name: "CR3",
                table_mask: cpu.reg("a20_mask").unwrap_or(u64::MAX),
                desc: Cow::Borrowed(desc),
            }],
        })
    }

    fn mode_of(&self, cpu: &CpuState) -> Option<Cow<'static, str>> {
        paging_mode(cpu).map(|m| Cow::Borrowed(m.name()))
    }

    /// CR0.PG set (with the control registers recorded), whether or not CR3 was.
    fn paging_enabled(&self, cpu: &CpuState) -> bool {
        !matches!(paging_mode(cpu), None | Some(PagingMode::Off))
    }

    /// Bit 63 after sign extension in IA-32e modes, bit 31 in 32-bit and PAE paging
    /// (Linux's 3G/1G split puts 0x8000_0000..0xC000_0000 in user space, so that band
    /// is merged from all CPUs, first CPU winning contradictions).
    fn kernel_start(&self, cpu: &CpuState) -> u64 {
        paging_mode(cpu)
            .and_then(|m| describe(m, pse(cpu)))
            .map_or(1 << 63, mode::kernel_start)
    }

    fn cpu_from_root(&self, arch: Arch, mode: &str, root: u64) -> Result<CpuState> {
        let m = PagingMode::parse(mode).ok_or_else(|| {
            Error::invalid(format!(
                "unknown x86 paging mode {mode:?} (expected 32bit, pae, 4level or 5level)"
            ))
        })?;
        let mut c = cpu_from_root(0, root, m);
        c.arch = Some(arch);
        Ok(c)
    }

    /// x86_64: `SYMBOL(init_top_pgt)` - `__START_KERNEL_map` + `NUMBER(phys_base)`
    /// (the symbol already includes the KASLR offset), 5-level iff
    /// `NUMBER(pgtable_l5_enabled)=1`. i386: `SYMBOL(swapper_pg_dir)` minus
    /// `PAGE_OFFSET` (0xC0000000, Linux's default 3G/1G split; VMCOREINFO does not
    /// carry it), PAE iff `CONFIG_X86_PAE=y`.
    fn roots_from_vmcoreinfo(&self, arch: Arch, v: &VmcoreInfo) -> Option<CpuState> {
        let (root, mode) = if arch == Arch::X86_64 {
            let sym = v.symbol("init_top_pgt")?;
            let phys_base = v.phys_base()?;
            // phys_base is a signed long: negative when the kernel runs below where it was
            // linked.
            let root = sym.checked_sub(START_KERNEL_MAP)?.wrapping_add(phys_base);
            let mode = if v.pgtable_l5_enabled() == Some(true) {
                PagingMode::Level5
            } else {
                PagingMode::Level4
            };
            (root, mode)
        } else if arch == Arch::I386 {
            let sym = v.symbol("swapper_pg_dir")?;
            let root = sym.checked_sub(0xC000_0000)?;
            let mode = if v.get("CONFIG_X86_PAE") == Some("y") {
                PagingMode::Pae
            } else {
                PagingMode::Bits32
            };
            (root, mode)
        } else {
            return None;
        };
        let mut c = cpu_from_root(0, root, mode);
        c.arch = Some(arch);
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_from_vmcoreinfo_follow_the_kernel_rules() {
        let w = X86Walker;
        let v = VmcoreInfo::parse(
            b"SYMBOL(init_top_pgt)=ffffffff82a0a000\nNUMBER(phys_base)=1000000\n\
              NUMBER(pgtable_l5_enabled)=1\n",
        );
        let c = w.roots_from_vmcoreinfo(Arch::X86_64, &v).unwrap();
        assert_eq!(c.reg("cr3"), Some(0x2a0_a000 + 1_000_000));
        assert_eq!(paging_mode(&c), Some(PagingMode::Level5));
        assert_eq!(c.arch, Some(Arch::X86_64));
        // Missing phys_base: None.
        let v = VmcoreInfo::parse(b"SYMBOL(init_top_pgt)=ffffffff82a0a000\n");
        assert!(w.roots_from_vmcoreinfo(Arch::X86_64, &v).is_none());
        let v = VmcoreInfo::parse(b"SYMBOL(swapper_pg_dir)=c1b2c000\nCONFIG_X86_PAE=y\n");
        let c = w.roots_from_vmcoreinfo(Arch::I386, &v).unwrap();
        assert_eq!(c.reg("cr3"), Some(0x1b2_c000));
        assert_eq!(paging_mode(&c), Some(PagingMode::Pae));
        assert!(w.roots_from_vmcoreinfo(Arch::AARCH64, &v).is_none());
    }
}
