//! QEMU's CPU-state note: name "QEMU", type 0, descriptor `QEMUCPUState`
//! (FORMATS.md §2.5; QEMU `target/i386/arch_dump.c`, version 1).
//!
//! Layout, the same for x86_64 and i386 guests (every field is 64-bit wide):
//! `version u32 @0`, `size u32 @4`, rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags
//! as u64 from @8, ten 24-byte segments `{selector u32, limit u32, flags u32, pad u32,
//! base u64}` from @152 (cs ds es fs gs ss ldt tr gdt idt), `cr[5]` u64 @392..@424,
//! `kernel_gs_base` u64 @432 (since QEMU 3.0; the note is 432 bytes before that, 440
//! after). The `size` field is what tells the two apart.
//!
//! EFER is *not* in the note (no QEMU version has it). Whether the CPU was in long mode
//! (EFER.LMA) decides 4-level vs PAE paging, so [`infer_efer`] reconstructs it; see
//! there for the evidence used.

use dumpconv_core::{CpuState, Error, Result};

use crate::input::{le_u32, le_u64, put_u32, put_u64};

/// The note name.
pub const NAME: &str = "QEMU";
/// The note type QEMU uses.
pub const NOTE_TYPE: u32 = 0;
/// `QEMUCPUSTATE_VERSION`.
pub const VERSION: u32 = 1;
/// Size with `kernel_gs_base` (QEMU ≥ 3.0): what we write.
pub const SIZE: usize = 440;
/// Size before QEMU 3.0 (no `kernel_gs_base`); the smallest we accept.
pub const SIZE_V1_OLD: usize = 432;

const GPR: usize = 8;
const SEGS: usize = 152;
const SEG_SIZE: usize = 24;
const CR: usize = 392;
const KERNEL_GS_BASE: usize = 432;

/// x86 control-register bits the note's decoding needs (CR0.PG, CR4.PAE) and the EFER
/// bits it reconstructs (LME, LMA).
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

/// The general registers of the note, in its order (rax first).
pub const GPRS: [&str; 18] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "rflags",
];

/// The segment registers of the note, in its order.
pub const SEGMENTS: [&str; 10] = [
    "cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt",
];

/// A segment register as the note records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentReg {
    pub selector: u64,
    pub limit: u64,
    pub flags: u64,
    pub base: u64,
}

/// `DESC_L_MASK` in QEMU's cached segment flags (descriptor bit 53 = flags bit 21):
/// a 64-bit code segment.
pub const SEG_FLAGS_L: u64 = 1 << 21;

/// A decoded `QEMUCPUState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuCpuState {
    pub version: u32,
    /// The note's own `size` field.
    pub size: u32,
    /// rax..r15, rip, rflags, in the order of [`GPRS`].
    pub gprs: [u64; 18],
    /// In the order of [`SEGMENTS`].
    pub segments: [SegmentReg; 10],
    /// cr0..cr4 (cr1 is reserved and always 0).
    pub cr: [u64; 5],
    /// None in notes from QEMU before 3.0.
    pub kernel_gs_base: Option<u64>,
}

/// Decode a descriptor. Accepts version 1 with `size` 432 or more (later fields beyond
/// 440 would be a newer QEMU appending fields, which the size field exists for, so they
/// are ignored rather than refused).
pub fn decode(desc: &[u8]) -> Result<QemuCpuState> {
    if desc.len() < 8 {
        return Err(Error::invalid(format!(
            "QEMU CPU-state note is {} bytes, too short for its header",
            desc.len()
        )));
    }
    let version = le_u32(desc, 0);
    let size = le_u32(desc, 4);
    if version != VERSION {
        return Err(Error::invalid(format!(
            "QEMU CPU-state note has version {version}; only version {VERSION} is known"
        )));
    }
    let size_us = size as usize;
    if size_us < SIZE_V1_OLD || size_us > desc.len() {
        return Err(Error::invalid(format!(
            "QEMU CPU-state note says its size is {size} bytes in a {}-byte descriptor \
             (expected {SIZE_V1_OLD} or {SIZE})",
            desc.len()
        )));
    }
    let g = |i: usize| le_u64(desc, GPR + 8 * i);
    let seg = |i: usize| {
        let o = SEGS + SEG_SIZE * i;
        SegmentReg {
            selector: u64::from(le_u32(desc, o)),
            limit: u64::from(le_u32(desc, o + 4)),
            flags: u64::from(le_u32(desc, o + 8)),
            base: le_u64(desc, o + 16),
        }
    };
    let mut segments = [SegmentReg::default(); 10];
    for (i, sg) in segments.iter_mut().enumerate() {
        *sg = seg(i);
    }
    let mut gprs = [0u64; 18];
    for (i, r) in gprs.iter_mut().enumerate() {
        *r = g(i);
    }
    let mut cr = [0u64; 5];
    for (i, c) in cr.iter_mut().enumerate() {
        *c = le_u64(desc, CR + 8 * i);
    }
    Ok(QemuCpuState {
        version,
        size,
        gprs,
        segments,
        cr,
        kernel_gs_base: (size_us >= SIZE).then(|| le_u64(desc, KERNEL_GS_BASE)),
    })
}

/// Reconstruct EFER's long-mode bits, which the note lacks.
///
/// Long mode needs CR0.PG and CR4.PAE, so without both the answer is "not in long
/// mode" and None is returned (the mode is then fully decided by CR0/CR4). With both
/// set, the CPU is taken to be in long mode (LME|LMA) if any of these holds:
/// - `long_mode_hint`: the dump says the guest is 64-bit. QEMU chooses EM_X86_64 and
///   the 336-byte NT_PRSTATUS exactly when the first CPU has LMA, and a 64-bit kernel
///   keeps every running CPU in long mode.
/// - CS.L is set: the L bit only means anything in IA-32e mode, and a legacy-mode OS
///   has no reason to load a 64-bit code segment. (CS.L clear does *not* prove legacy
///   mode: a 64-bit kernel running a 32-bit process is in compatibility mode.)
/// - rip or rsp is above 4 GiB, impossible outside 64-bit mode.
///
/// Otherwise the CPU is in PAE legacy mode: `Some(0)`.
pub fn infer_efer(state: &QemuCpuState, long_mode_hint: bool) -> Option<u64> {
    let (cr0, cr4) = (state.cr[0], state.cr[4]);
    if cr0 & CR0_PG == 0 || cr4 & CR4_PAE == 0 {
        return None;
    }
    let long = long_mode_hint
        || state.segments[0].flags & SEG_FLAGS_L != 0
        || state.gpr("rip") > u64::from(u32::MAX)
        || state.gpr("rsp") > u64::from(u32::MAX);
    Some(if long { EFER_LME | EFER_LMA } else { 0 })
}

impl QemuCpuState {
    /// A general register by name (0 for a name the note lacks).
    pub fn gpr(&self, name: &str) -> u64 {
        GPRS.iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.gprs[i])
    }

    /// A segment register by name (`cs`...).
    pub fn segment(&self, name: &str) -> SegmentReg {
        SEGMENTS
            .iter()
            .position(|n| *n == name)
            .map_or(SegmentReg::default(), |i| self.segments[i])
    }

    /// Copy what the note knows into `cpu`: control registers, segments and
    /// kernel_gs_base always; general registers only if `cpu` has none yet (an
    /// NT_PRSTATUS, when present, is kept: it has orig_rax and the kernel's view), with
    /// `fs_base`/`gs_base` from the fs/gs segment bases so the registers match what
    /// NT_PRSTATUS would say, and `orig_rax` 0. EFER comes from [`infer_efer`].
    pub fn apply_to(&self, cpu: &mut CpuState, long_mode_hint: bool) {
        if !cpu.regs.contains("rip") {
            for (n, v) in GPRS.iter().zip(self.gprs) {
                cpu.set_reg(n, v);
            }
            cpu.set_reg("orig_rax", 0);
            cpu.set_reg("fs_base", self.segment("fs").base);
            cpu.set_reg("gs_base", self.segment("gs").base);
        }
        for (n, sg) in SEGMENTS.iter().zip(self.segments) {
            cpu.set_reg(&format!("{n}.selector"), sg.selector);
            cpu.set_reg(&format!("{n}.limit"), sg.limit);
            cpu.set_reg(&format!("{n}.flags"), sg.flags);
            cpu.set_reg(&format!("{n}.base"), sg.base);
        }
        cpu.set_reg("cr0", self.cr[0]);
        cpu.set_reg("cr2", self.cr[2]);
        cpu.set_reg("cr3", self.cr[3]);
        cpu.set_reg("cr4", self.cr[4]);
        if let Some(k) = self.kernel_gs_base {
            cpu.set_reg("kernel_gs_base", k);
        }
        if !cpu.regs.contains("efer") {
            cpu.set_reg_opt("efer", infer_efer(self, long_mode_hint));
        }
    }
}

/// Encode a CPU's state as a version-1, 440-byte `QEMUCPUState`. Fields the state
/// lacks are 0 (EFER and a20_mask have no place in the note).
pub fn encode(cpu: &CpuState) -> Vec<u8> {
    let mut d = vec![0u8; SIZE];
    put_u32(&mut d, 0, VERSION);
    put_u32(&mut d, 4, SIZE as u32);
    let reg = |n: &str| cpu.reg(n).unwrap_or(0);
    for (i, n) in GPRS.iter().enumerate() {
        put_u64(&mut d, GPR + 8 * i, reg(n));
    }
    for (i, n) in SEGMENTS.iter().enumerate() {
        let o = SEGS + SEG_SIZE * i;
        // The note's selector/limit/flags are 32-bit; wider values cannot be real.
        put_u32(&mut d, o, reg(&format!("{n}.selector")) as u32);
        put_u32(&mut d, o + 4, reg(&format!("{n}.limit")) as u32);
        put_u32(&mut d, o + 8, reg(&format!("{n}.flags")) as u32);
        put_u64(&mut d, o + 16, reg(&format!("{n}.base")));
    }
    let crs = [reg("cr0"), 0, reg("cr2"), reg("cr3"), reg("cr4")];
    for (i, v) in crs.into_iter().enumerate() {
        put_u64(&mut d, CR + 8 * i, v);
    }
    put_u64(&mut d, KERNEL_GS_BASE, reg("kernel_gs_base"));
    d
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The descriptor of the first "QEMU" note of a real dump: QEMU 7.2
    /// (Debian 1:7.2+dfsg-7+deb12u18) `qemu-system-x86_64 -m 64 -S`, never booted,
    /// `dump-guest-memory paging=false`, bytes copied from `xxd` of the file.
    /// The CPU sits at the reset vector: rdx = CPUID signature 0x60fb1 (qemu64),
    /// rip 0xfff0, rflags 2, cs = f000/ffff/9b00/base ffff0000, cr0 = 0x60000010.
    pub(crate) fn real_reset_note() -> Vec<u8> {
        let mut d = vec![0u8; 440];
        d[0] = 1;
        d[4..8].copy_from_slice(&440u32.to_le_bytes());
        d[32..40].copy_from_slice(&0x60fb1u64.to_le_bytes()); // rdx
        d[136..144].copy_from_slice(&0xfff0u64.to_le_bytes()); // rip
        d[144] = 2; // rflags
        let seg = |d: &mut Vec<u8>, i: usize, sel: u32, lim: u32, fl: u32, base: u64| {
            let o = 152 + 24 * i;
            d[o..o + 4].copy_from_slice(&sel.to_le_bytes());
            d[o + 4..o + 8].copy_from_slice(&lim.to_le_bytes());
            d[o + 8..o + 12].copy_from_slice(&fl.to_le_bytes());
            d[o + 16..o + 24].copy_from_slice(&base.to_le_bytes());
        };
        seg(&mut d, 0, 0xf000, 0xffff, 0x9b00, 0xffff_0000);
        for i in 1..6 {
            seg(&mut d, i, 0, 0xffff, 0x9300, 0);
        }
        seg(&mut d, 6, 0, 0xffff, 0x8200, 0);
        seg(&mut d, 7, 0, 0xffff, 0x8b00, 0);
        seg(&mut d, 8, 0, 0xffff, 0, 0);
        seg(&mut d, 9, 0, 0xffff, 0, 0);
        d[392..400].copy_from_slice(&0x6000_0010u64.to_le_bytes());
        d
    }

    /// Hex of the same descriptor as `readelf -n` printed it, to check the builder
    /// above against the real bytes rather than against itself.
    const REAL_READELF_HEX: &str = "01 00 00 00 b8 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 b1 0f 06 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 f0 ff 00 00 00 00 00 00 02 00 00 00 00 00 00 00 00 f0 00 00 ff ff 00 00 00 9b 00 00 00 00 00 00 00 00 ff ff 00 00 00 00 00 00 00 00 ff ff 00 00 00 93 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 93 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 93 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 93 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 93 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 82 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 8b 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 10 00 00 60 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";

    pub(crate) fn real_note_bytes() -> Vec<u8> {
        REAL_READELF_HEX
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_real_qemu_7_2_note() {
        let real = real_note_bytes();
        assert_eq!(real.len(), 440);
        assert_eq!(real, real_reset_note());
        let s = decode(&real).unwrap();
        assert_eq!((s.version, s.size), (1, 440));
        assert_eq!(s.gpr("rdx"), 0x60fb1);
        assert_eq!(s.gpr("rip"), 0xfff0);
        assert_eq!(s.gpr("rflags"), 2);
        assert_eq!(s.segment("cs").selector, 0xf000);
        assert_eq!(s.segment("cs").limit, 0xffff);
        assert_eq!(s.segment("cs").flags, 0x9b00);
        assert_eq!(s.segment("cs").base, 0xffff_0000);
        assert_eq!(s.segment("tr").flags, 0x8b00);
        assert_eq!(s.segment("idt").limit, 0xffff);
        assert_eq!(s.cr, [0x6000_0010, 0, 0, 0, 0]);
        assert_eq!(s.kernel_gs_base, Some(0));
        let mut cpu = CpuState::default();
        s.apply_to(&mut cpu, false);
        // Paging off (CR0.PG clear), and no EFER to infer.
        assert_eq!(cpu.reg("cr0"), Some(0x6000_0010));
        assert_eq!(cpu.reg("efer"), None);
        assert_eq!(cpu.reg("cs.flags"), Some(0x9b00));
        // Re-encoding gives the same bytes back.
        assert_eq!(encode(&cpu), real);
    }

    #[test]
    fn old_432_byte_note_has_no_kernel_gs_base() {
        let mut d = real_note_bytes();
        d.truncate(432);
        d[4..8].copy_from_slice(&432u32.to_le_bytes());
        let s = decode(&d).unwrap();
        assert_eq!(s.kernel_gs_base, None);
        assert_eq!(s.cr[0], 0x6000_0010);
    }

    #[test]
    fn bad_headers_are_errors() {
        let mut d = real_note_bytes();
        d[0] = 2;
        assert!(decode(&d).is_err());
        let mut d = real_note_bytes();
        d[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode(&d).is_err());
        assert!(decode(&d[..7]).is_err());
        assert!(decode(&real_note_bytes()[..400]).is_err());
    }

    #[test]
    fn efer_inference() {
        let mut s = decode(&real_note_bytes()).unwrap();
        // Paging off: no inference.
        assert_eq!(infer_efer(&s, true), None);
        s.cr[0] = 0x8000_0011;
        s.cr[4] = 0x20; // PAE
        assert_eq!(infer_efer(&s, false), Some(0));
        assert_eq!(infer_efer(&s, true), Some(EFER_LME | EFER_LMA));
        s.segments[0].flags = 0x00a0_9b00; // 64-bit kernel code segment (L, P, S, type)
        assert_eq!(infer_efer(&s, false), Some(EFER_LME | EFER_LMA));
        s.segments[0].flags = 0x00c0_9b00; // 32-bit code segment
        s.gprs[16] = 0xffff_ffff_8100_0000; // rip
        assert_eq!(infer_efer(&s, false), Some(EFER_LME | EFER_LMA));
        s.cr[4] = 0; // no PAE: 32-bit paging whatever else
        assert_eq!(infer_efer(&s, true), None);
    }

    #[test]
    fn encode_decode_round_trip() {
        let cpu = CpuState::new(0, None)
            .with_reg("rax", 1)
            .with_reg("r15", 15)
            .with_reg("rip", 0xffff_ffff_8100_0000)
            .with_reg("rflags", 0x246)
            .with_reg("fs_base", 0x7000)
            .with_reg("gs_base", 0xffff_8880_0000_0000)
            .with_reg("fs.base", 0x7000)
            .with_reg("gs.base", 0xffff_8880_0000_0000)
            .with_reg("cr0", 0x8005_0033)
            .with_reg("cr3", 0x1234_5000)
            .with_reg("cr4", 0x3406f0)
            .with_reg("kernel_gs_base", 0x42);
        let s = decode(&encode(&cpu)).unwrap();
        let mut back = CpuState::default();
        s.apply_to(&mut back, false);
        for n in GPRS.iter().chain(&["fs_base", "gs_base", "cr3"]) {
            assert_eq!(back.reg(n), Some(cpu.reg(n).unwrap_or(0)), "{n}");
        }
        assert_eq!(back.reg("kernel_gs_base"), Some(0x42));
        // rip above 4 GiB ⇒ long mode.
        assert_eq!(back.reg("efer"), Some(EFER_LME | EFER_LMA));
    }
}
