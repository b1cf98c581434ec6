//! x86 page tables: 32-bit (PSE, PSE-36), PAE, IA-32e 4-level and 5-level.
//!
//! This crate is data plus register reading: `mode.rs` describes the four modes for the
//! walk engine of `dumpconv_core::paging`, and [`X86Walker`] reads CR0, CR3, CR4, EFER
//! and the A20 mask of a CPU to choose one. Everything else (the walk, its bounds, the
//! table cache shared across CPUs, the multi-CPU view) is core's. Where QEMU's walker
//! (docs/formats.md#x86-qemu-walker) goes wrong, this one does not:
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
use dumpconv_core::{
    Arch, ArchWalker, CpuState, Error, MappingList, PhysicalMemory, Result, VmcoreInfo, WalkOptions,
};

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

    /// x86_64: `SYMBOL(init_top_pgt)` (or its old name `init_level4_pgt`), or
    /// `NUMBER(phys_base)` with kernel-image addresses. i386: `SYMBOL(swapper_pg_dir)`
    /// and `SYMBOL(_stext)` are 32-bit addresses and nothing of another architecture
    /// (arm64's `kimage_voffset`, arm's `ARM_LPAE`, x86_64's `phys_base`) is there;
    /// `CONFIG_X86_PAE=y` settles it. The candidate checks confirm it by reading the
    /// kernel's utsname.
    fn arch_from_vmcoreinfo(&self, v: &VmcoreInfo) -> Option<Arch> {
        if v.symbol("init_top_pgt").is_some() || v.symbol("init_level4_pgt").is_some() {
            return Some(Arch::X86_64);
        }
        let stext = v.symbol("_stext")?;
        if v.phys_base().is_some() && stext >= START_KERNEL_MAP {
            return Some(Arch::X86_64);
        }
        let swapper = v.symbol("swapper_pg_dir")?;
        let foreign = v.entries().iter().any(|(k, _)| {
            k.contains("kimage_voffset") || k.contains("ARM") || k.contains("phys_base")
        });
        let small = swapper <= u64::from(u32::MAX) && stext <= u64::from(u32::MAX);
        (small && (!foreign || v.get("CONFIG_X86_PAE") == Some("y"))).then_some(Arch::I386)
    }

    /// x86_64 4-level: pages whose upper half looks like a PML4's kernel half (every
    /// entry empty or a present, non-huge pointer into RAM; the last, which maps the
    /// kernel image at `__START_KERNEL_map`, present), walked over the top 2 GiB; kept
    /// when a banner's page is mapped there.
    fn scan_roots(
        &self,
        arch: Arch,
        mem: &dyn PhysicalMemory,
        banners: &[u64],
        max_tables: usize,
    ) -> Result<Vec<(CpuState, String)>> {
        if arch != Arch::X86_64 || banners.is_empty() {
            return Ok(Vec::new());
        }
        let banner_pages: Vec<u64> = banners.iter().map(|b| b & !0xfff).collect();
        let opts = WalkOptions {
            max_table_pages: 4096,
            ..WalkOptions::default()
        };
        let mut tried = 0usize;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8 << 20];
        for r in mem.ranges().to_vec() {
            let mut at = r.start.next_multiple_of(4096);
            while at < r.end && tried < max_tables && out.is_empty() {
                let len = (buf.len() as u64).min(r.end - at);
                let chunk = &mut buf[..len as usize];
                if mem.read_at(at, chunk).is_err() {
                    at += len;
                    continue;
                }
                for (i, page) in chunk.chunks_exact(4096).enumerate() {
                    if !looks_like_pml4(page, mem) {
                        continue;
                    }
                    tried += 1;
                    let root = at + i as u64 * 4096;
                    let mut c = cpu_from_root(0, root, PagingMode::Level4);
                    c.arch = Some(arch);
                    let Ok(Regime::Paging { spaces, .. }) = self.regime(&c, &opts) else {
                        continue;
                    };
                    let mut list = MappingList::new();
                    let walked = dumpconv_core::paging::walk(
                        0,
                        &spaces,
                        mem,
                        &opts,
                        VirtRange::from(START_KERNEL_MAP),
                        None,
                        &mut list,
                    );
                    if walked.is_err() {
                        continue;
                    }
                    let hit = list.runs().iter().find_map(|m| {
                        banner_pages
                            .iter()
                            .find(|&&b| b >= m.phys && b - m.phys < m.len)
                            .map(|&b| m.virt + (b - m.phys))
                    });
                    if let Some(v) = hit {
                        out.push((
                            c,
                            format!(
                                "4level table at {root:#x} maps a \"Linux version \" page at {v:#x}"
                            ),
                        ));
                        break;
                    }
                    if tried >= max_tables {
                        break;
                    }
                }
                at += len;
            }
        }
        Ok(out)
    }
}

/// A PML4 page as Linux fills it: the kernel half (entries 256..511) holds present,
/// non-huge pointers into RAM or zeros, at least two of them, and entry 511 is present.
fn looks_like_pml4(page: &[u8], mem: &dyn PhysicalMemory) -> bool {
    let entry = |i: usize| {
        let b = &page[i * 8..i * 8 + 8];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    };
    let last = entry(511);
    if last & 1 == 0 || last & 0x80 != 0 {
        return false;
    }
    let mut present = 0;
    for i in 256..512 {
        let e = entry(i);
        if e == 0 {
            continue;
        }
        // Present, not huge, no reserved bits 51..52 used by Linux's kernel entries.
        if e & 1 == 0 || e & 0x80 != 0 || !mem.is_ram(e & 0x000f_ffff_ffff_f000, 4096) {
            return false;
        }
        present += 1;
    }
    present >= 2
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
