//! `elf_prstatus`, the NT_PRSTATUS ("CORE", type 1) descriptor, for x86_64 (336 bytes)
//! and i386 (144 bytes). Layout: docs/formats.md#prstatus.
//!
//! Only `pr_pid` and `pr_reg` carry anything in memory dumps: QEMU fills just those, and
//! the kernel's per-CPU crash notes add signal fields nobody reads. So decoding keeps
//! the pid and the registers, and encoding writes zeros everywhere else, as QEMU does,
//! which is what gdb and crash expect.
//!
//! Note the register *order* here is the kernel's `user_regs_struct`, not the order of
//! QEMU's CPU-state note (rax first); each layout has its own table.

use dumpconv_core::cpu::SegmentRegs;
use dumpconv_core::{Arch, CpuState, Error, GeneralRegs, Result, SegmentReg};

use crate::bytes::{le_u32, le_u64, put_u32, put_u64};

/// Descriptor size on x86_64.
pub const SIZE_X86_64: usize = 336;
/// Descriptor size on i386.
pub const SIZE_I386: usize = 144;

const PID_X86_64: usize = 32;
const REG_X86_64: usize = 112;
const PID_I386: usize = 24;
const REG_I386: usize = 72;

/// Slots of the x86_64 `pr_reg` (27 × u64), in order.
#[derive(Clone, Copy)]
enum R64 {
    R15,
    R14,
    R13,
    R12,
    Rbp,
    Rbx,
    R11,
    R10,
    R9,
    R8,
    Rax,
    Rcx,
    Rdx,
    Rsi,
    Rdi,
    OrigRax,
    Rip,
    Cs,
    Eflags,
    Rsp,
    Ss,
    FsBase,
    GsBase,
    Ds,
    Es,
    Fs,
    Gs,
}

/// Slots of the i386 `pr_reg` (17 × u32), in order.
#[derive(Clone, Copy)]
enum R32 {
    Ebx,
    Ecx,
    Edx,
    Esi,
    Edi,
    Ebp,
    Eax,
    Ds,
    Es,
    Fs,
    Gs,
    OrigEax,
    Eip,
    Cs,
    Eflags,
    Esp,
    Ss,
}

/// What an NT_PRSTATUS descriptor says about a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrStatus {
    /// Which layout the descriptor had (from its size).
    pub arch: Arch,
    pub pid: u32,
    pub regs: GeneralRegs,
    /// Segment selectors: cs, ds, es, fs, gs, ss (the order of [`SegmentRegs`]).
    pub selectors: [u64; 6],
}

impl PrStatus {
    /// The segment registers this note knows: selectors only (limit, flags and base
    /// are not in `elf_prstatus`; the fs/gs bases are in `regs`).
    pub fn segments(&self) -> SegmentRegs {
        let s = |selector| SegmentReg {
            selector,
            ..SegmentReg::default()
        };
        let [cs, ds, es, fs, gs, ss] = self.selectors;
        SegmentRegs {
            cs: s(cs),
            ds: s(ds),
            es: s(es),
            fs: s(fs),
            gs: s(gs),
            ss: s(ss),
            ..SegmentRegs::default()
        }
    }
}

/// The descriptor size for an architecture.
pub fn size_for(arch: Arch) -> usize {
    match arch {
        Arch::X86_64 => SIZE_X86_64,
        Arch::X86 => SIZE_I386,
    }
}

/// Decode a descriptor. The layout is chosen by its size, not by the file's machine:
/// QEMU picks it from the first CPU's mode, and an EM_386 file may come in ELF64.
pub fn decode(desc: &[u8]) -> Result<PrStatus> {
    match desc.len() {
        SIZE_X86_64 => {
            let r = |slot: R64| le_u64(desc, REG_X86_64 + 8 * slot as usize);
            Ok(PrStatus {
                arch: Arch::X86_64,
                pid: le_u32(desc, PID_X86_64)?,
                regs: GeneralRegs {
                    rax: r(R64::Rax)?,
                    rbx: r(R64::Rbx)?,
                    rcx: r(R64::Rcx)?,
                    rdx: r(R64::Rdx)?,
                    rsi: r(R64::Rsi)?,
                    rdi: r(R64::Rdi)?,
                    rbp: r(R64::Rbp)?,
                    rsp: r(R64::Rsp)?,
                    r8: r(R64::R8)?,
                    r9: r(R64::R9)?,
                    r10: r(R64::R10)?,
                    r11: r(R64::R11)?,
                    r12: r(R64::R12)?,
                    r13: r(R64::R13)?,
                    r14: r(R64::R14)?,
                    r15: r(R64::R15)?,
                    rip: r(R64::Rip)?,
                    rflags: r(R64::Eflags)?,
                    orig_rax: r(R64::OrigRax)?,
                    fs_base: r(R64::FsBase)?,
                    gs_base: r(R64::GsBase)?,
                },
                selectors: [
                    r(R64::Cs)?,
                    r(R64::Ds)?,
                    r(R64::Es)?,
                    r(R64::Fs)?,
                    r(R64::Gs)?,
                    r(R64::Ss)?,
                ],
            })
        }
        SIZE_I386 => {
            let r = |slot: R32| le_u32(desc, REG_I386 + 4 * slot as usize).map(u64::from);
            // Segment slots are 32 bits holding a 16-bit selector (QEMU zeroes the
            // upper half; the kernel may leave junk there, so mask it).
            let sel = |slot: R32| r(slot).map(|v| v & 0xffff);
            Ok(PrStatus {
                arch: Arch::X86,
                pid: le_u32(desc, PID_I386)?,
                regs: GeneralRegs {
                    rax: r(R32::Eax)?,
                    rbx: r(R32::Ebx)?,
                    rcx: r(R32::Ecx)?,
                    rdx: r(R32::Edx)?,
                    rsi: r(R32::Esi)?,
                    rdi: r(R32::Edi)?,
                    rbp: r(R32::Ebp)?,
                    rsp: r(R32::Esp)?,
                    rip: r(R32::Eip)?,
                    rflags: r(R32::Eflags)?,
                    orig_rax: r(R32::OrigEax)?,
                    ..GeneralRegs::default()
                },
                selectors: [
                    sel(R32::Cs)?,
                    sel(R32::Ds)?,
                    sel(R32::Es)?,
                    sel(R32::Fs)?,
                    sel(R32::Gs)?,
                    sel(R32::Ss)?,
                ],
            })
        }
        n => Err(Error::invalid(format!(
            "NT_PRSTATUS descriptor is {n} bytes; expected {SIZE_X86_64} (x86_64) or \
             {SIZE_I386} (i386)"
        ))),
    }
}

/// Encode a CPU's state as an `elf_prstatus` of the size gdb and crash expect for
/// `arch`. `pr_pid` is the CPU's recorded pid, or index + 1 as QEMU writes it; registers
/// the state lacks are 0; on i386 the upper halves of 64-bit values are dropped.
pub fn encode(cpu: &CpuState, arch: Arch) -> Vec<u8> {
    let regs = cpu.regs.unwrap_or_default();
    let segs = cpu.segments.unwrap_or_default();
    let pid = cpu.pid.unwrap_or(cpu.index.saturating_add(1));
    let mut d = vec![0u8; size_for(arch)];
    match arch {
        Arch::X86_64 => {
            put_u32(&mut d, PID_X86_64, pid);
            let slots = [
                (R64::R15, regs.r15),
                (R64::R14, regs.r14),
                (R64::R13, regs.r13),
                (R64::R12, regs.r12),
                (R64::Rbp, regs.rbp),
                (R64::Rbx, regs.rbx),
                (R64::R11, regs.r11),
                (R64::R10, regs.r10),
                (R64::R9, regs.r9),
                (R64::R8, regs.r8),
                (R64::Rax, regs.rax),
                (R64::Rcx, regs.rcx),
                (R64::Rdx, regs.rdx),
                (R64::Rsi, regs.rsi),
                (R64::Rdi, regs.rdi),
                (R64::OrigRax, regs.orig_rax),
                (R64::Rip, regs.rip),
                (R64::Cs, segs.cs.selector),
                (R64::Eflags, regs.rflags),
                (R64::Rsp, regs.rsp),
                (R64::Ss, segs.ss.selector),
                (R64::FsBase, regs.fs_base),
                (R64::GsBase, regs.gs_base),
                (R64::Ds, segs.ds.selector),
                (R64::Es, segs.es.selector),
                (R64::Fs, segs.fs.selector),
                (R64::Gs, segs.gs.selector),
            ];
            for (slot, v) in slots {
                put_u64(&mut d, REG_X86_64 + 8 * slot as usize, v);
            }
        }
        Arch::X86 => {
            put_u32(&mut d, PID_I386, pid);
            let sel = |s: &SegmentReg| s.selector & 0xffff;
            let slots = [
                (R32::Ebx, regs.rbx),
                (R32::Ecx, regs.rcx),
                (R32::Edx, regs.rdx),
                (R32::Esi, regs.rsi),
                (R32::Edi, regs.rdi),
                (R32::Ebp, regs.rbp),
                (R32::Eax, regs.rax),
                (R32::Ds, sel(&segs.ds)),
                (R32::Es, sel(&segs.es)),
                (R32::Fs, sel(&segs.fs)),
                (R32::Gs, sel(&segs.gs)),
                (R32::OrigEax, regs.orig_rax),
                (R32::Eip, regs.rip),
                (R32::Cs, sel(&segs.cs)),
                (R32::Eflags, regs.rflags),
                (R32::Esp, regs.rsp),
                (R32::Ss, sel(&segs.ss)),
            ];
            for (slot, v) in slots {
                // Truncation to the 32-bit register is the point here.
                put_u32(&mut d, REG_I386 + 4 * slot as usize, v as u32);
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_regs(wide: bool) -> GeneralRegs {
        let v = |n: u64| if wide { 0x1111_0000_0000_0000 | n } else { n };
        GeneralRegs {
            rax: v(1),
            rbx: v(2),
            rcx: v(3),
            rdx: v(4),
            rsi: v(5),
            rdi: v(6),
            rbp: v(7),
            rsp: v(8),
            r8: if wide { 9 } else { 0 },
            r9: if wide { 10 } else { 0 },
            r10: if wide { 11 } else { 0 },
            r11: if wide { 12 } else { 0 },
            r12: if wide { 13 } else { 0 },
            r13: if wide { 14 } else { 0 },
            r14: if wide { 15 } else { 0 },
            r15: if wide { 16 } else { 0 },
            rip: v(17),
            rflags: 0x246,
            orig_rax: v(19),
            fs_base: if wide { 20 } else { 0 },
            gs_base: if wide { 21 } else { 0 },
        }
    }

    fn cpu(regs: GeneralRegs) -> CpuState {
        let seg = |selector| SegmentReg {
            selector,
            ..SegmentReg::default()
        };
        CpuState {
            index: 2,
            pid: Some(77),
            regs: Some(regs),
            segments: Some(SegmentRegs {
                cs: seg(0x10),
                ds: seg(0x18),
                es: seg(0x18),
                fs: seg(0x0),
                gs: seg(0x2b),
                ss: seg(0x18),
                ..SegmentRegs::default()
            }),
            ..CpuState::default()
        }
    }

    #[test]
    fn x86_64_round_trip_and_offsets() {
        let c = cpu(sample_regs(true));
        let d = encode(&c, Arch::X86_64);
        assert_eq!(d.len(), 336);
        // Spot-check docs/formats.md#prstatus offsets: pid @32, pr_reg @112, r15 first,
        // rip @+128, cs @+136, gs @+208, pr_fpvalid @328 left 0.
        assert_eq!(le_u32(&d, 32).unwrap(), 77);
        assert_eq!(le_u64(&d, 112).unwrap(), 16);
        assert_eq!(le_u64(&d, 112 + 80).unwrap(), 0x1111_0000_0000_0001);
        assert_eq!(le_u64(&d, 112 + 128).unwrap(), 0x1111_0000_0000_0011);
        assert_eq!(le_u64(&d, 112 + 136).unwrap(), 0x10);
        assert_eq!(le_u64(&d, 112 + 208).unwrap(), 0x2b);
        assert_eq!(le_u32(&d, 328).unwrap(), 0);
        let p = decode(&d).unwrap();
        assert_eq!(p.arch, Arch::X86_64);
        assert_eq!(p.pid, 77);
        assert_eq!(p.regs, c.regs.unwrap());
        assert_eq!(p.segments(), c.segments.unwrap());
    }

    #[test]
    fn i386_round_trip_and_offsets() {
        let c = cpu(sample_regs(false));
        let d = encode(&c, Arch::X86);
        assert_eq!(d.len(), 144);
        assert_eq!(le_u32(&d, 24).unwrap(), 77);
        assert_eq!(le_u32(&d, 72).unwrap(), 2); // ebx first
        assert_eq!(le_u32(&d, 72 + 24).unwrap(), 1); // eax
        assert_eq!(le_u32(&d, 72 + 48).unwrap(), 17); // eip
        assert_eq!(le_u32(&d, 72 + 52).unwrap(), 0x10); // cs
        assert_eq!(le_u32(&d, 72 + 64).unwrap(), 0x18); // ss
        let p = decode(&d).unwrap();
        assert_eq!(p.arch, Arch::X86);
        assert_eq!(p.regs, c.regs.unwrap());
        assert_eq!(p.segments(), c.segments.unwrap());
    }

    #[test]
    fn i386_drops_upper_halves_and_defaults_pid() {
        let mut c = cpu(sample_regs(true));
        c.pid = None;
        let p = decode(&encode(&c, Arch::X86)).unwrap();
        assert_eq!(p.pid, 3);
        assert_eq!(p.regs.rax, 1);
        assert_eq!(p.regs.r8, 0);
    }

    #[test]
    fn wrong_size_is_an_error() {
        assert!(decode(&[0; 100]).is_err());
        assert!(decode(&[]).is_err());
    }
}
