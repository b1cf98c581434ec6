//! `elf_prstatus`, the NT_PRSTATUS ("CORE", type 1) descriptor, for x86_64 (336 bytes),
//! i386 (144 bytes) and aarch64 (392 bytes). Layout: docs/formats.md#prstatus. The
//! aarch64 one is the generic LP64 `elf_prstatus` (pr_pid at 32, pr_reg at 112, as on
//! x86_64) whose `pr_reg` is arm64's `struct user_pt_regs`: 34 u64s, x0..x30, sp, pc,
//! pstate; then `pr_fpvalid` (int) and 4 bytes of padding.
//!
//! Only `pr_pid` and `pr_reg` carry anything in memory dumps: QEMU fills just those, and
//! the kernel's per-CPU crash notes add signal fields nobody reads. So decoding keeps
//! the pid and the registers, and encoding writes zeros everywhere else, as QEMU does,
//! which is what gdb and crash expect.
//!
//! Note the register *order* here is the kernel's `user_regs_struct`, not the order of
//! QEMU's CPU-state note (rax first); each layout has its own table.

use dumpconv_core::{Arch, CpuState, Error, Registers, Result};

use crate::bytes::{le_u32, le_u64, put_u32, put_u64, ShortRead};

/// Descriptor size on x86_64.
pub const SIZE_X86_64: usize = 336;
/// Descriptor size on i386.
pub const SIZE_I386: usize = 144;
/// Descriptor size on aarch64.
pub const SIZE_AARCH64: usize = 392;

const PID_X86_64: usize = 32;
const REG_X86_64: usize = 112;
const PID_I386: usize = 24;
const REG_I386: usize = 72;
const PID_AARCH64: usize = 32;
const REG_AARCH64: usize = 112;

/// The aarch64 `pr_reg` (`struct user_pt_regs`, 34 × u64): names in slot order, which
/// is also the order they are recorded in.
const SLOTS_AARCH64: [&str; 34] = [
    "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14",
    "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
    "x28", "x29", "x30", "sp", "pc", "pstate",
];

/// The x86_64 `pr_reg` (27 × u64): register names in slot order.
const SLOTS_X86_64: [&str; 27] = [
    "r15",
    "r14",
    "r13",
    "r12",
    "rbp",
    "rbx",
    "r11",
    "r10",
    "r9",
    "r8",
    "rax",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "orig_rax",
    "rip",
    "cs.selector",
    "rflags",
    "rsp",
    "ss.selector",
    "fs_base",
    "gs_base",
    "ds.selector",
    "es.selector",
    "fs.selector",
    "gs.selector",
];

/// The i386 `pr_reg` (17 × u32): register names in slot order (the e-registers are
/// the low halves of the x86-64 names).
const SLOTS_I386: [&str; 17] = [
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rbp",
    "rax",
    "ds.selector",
    "es.selector",
    "fs.selector",
    "gs.selector",
    "orig_rax",
    "rip",
    "cs.selector",
    "rflags",
    "rsp",
    "ss.selector",
];

/// The order registers are recorded in (and `info` shows them): general registers,
/// then segment selectors.
const ORDER: [&str; 27] = [
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rbp",
    "rsp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rip",
    "rflags",
    "orig_rax",
    "fs_base",
    "gs_base",
    "cs.selector",
    "ds.selector",
    "es.selector",
    "fs.selector",
    "gs.selector",
    "ss.selector",
];

/// What an NT_PRSTATUS descriptor says about a CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrStatus {
    /// Which layout the descriptor had (from its size).
    pub arch: Arch,
    pub pid: u32,
    /// General registers and segment selectors (`cs.selector`...), by name.
    pub regs: Registers,
}

impl PrStatus {
    /// Copy the pid and registers into `cpu`.
    pub fn apply_to(&self, cpu: &mut CpuState) {
        cpu.pid = Some(self.pid);
        for (n, v) in self.regs.iter() {
            cpu.set_reg(n, v);
        }
    }
}

/// The descriptor size for an architecture (None: no layout for it here).
pub fn size_for(arch: Arch) -> Option<usize> {
    if arch == Arch::X86_64 {
        Some(SIZE_X86_64)
    } else if arch == Arch::I386 {
        Some(SIZE_I386)
    } else if arch == Arch::AARCH64 {
        Some(SIZE_AARCH64)
    } else {
        None
    }
}

/// Whether `arch` is one of the x86 layouts (the QEMU CPU-state note is x86's).
pub fn is_x86(arch: Arch) -> bool {
    arch == Arch::X86_64 || arch == Arch::I386
}

/// `slots` read by `get`, recorded in [`ORDER`].
fn ordered(
    slots: &[&str],
    get: impl Fn(usize) -> std::result::Result<u64, ShortRead>,
) -> std::result::Result<Registers, ShortRead> {
    let mut regs = Registers::new();
    for name in ORDER {
        if let Some(i) = slots.iter().position(|s| *s == name) {
            regs.set(name, get(i)?);
        }
    }
    Ok(regs)
}

/// Decode a descriptor. The layout is chosen by its size, not by the file's machine:
/// QEMU picks it from the first CPU's mode, and an EM_386 file may come in ELF64.
pub fn decode(desc: &[u8]) -> Result<PrStatus> {
    match desc.len() {
        SIZE_X86_64 => Ok(PrStatus {
            arch: Arch::X86_64,
            pid: le_u32(desc, PID_X86_64)?,
            regs: ordered(&SLOTS_X86_64, |i| le_u64(desc, REG_X86_64 + 8 * i))?,
        }),
        SIZE_I386 => Ok(PrStatus {
            arch: Arch::I386,
            pid: le_u32(desc, PID_I386)?,
            regs: ordered(&SLOTS_I386, |i| {
                let v = u64::from(le_u32(desc, REG_I386 + 4 * i)?);
                // Segment slots are 32 bits holding a 16-bit selector (QEMU zeroes the
                // upper half; the kernel may leave junk there, so mask it).
                Ok(if SLOTS_I386[i].ends_with(".selector") {
                    v & 0xffff
                } else {
                    v
                })
            })?,
        }),
        SIZE_AARCH64 => {
            let mut regs = Registers::new();
            for (i, name) in SLOTS_AARCH64.iter().enumerate() {
                regs.set(name, le_u64(desc, REG_AARCH64 + 8 * i)?);
            }
            Ok(PrStatus {
                arch: Arch::AARCH64,
                pid: le_u32(desc, PID_AARCH64)?,
                regs,
            })
        }
        n => Err(Error::invalid(format!(
            "NT_PRSTATUS descriptor is {n} bytes; expected {SIZE_X86_64} (x86_64), \
             {SIZE_I386} (i386) or {SIZE_AARCH64} (aarch64)"
        ))),
    }
}

/// Encode a CPU's state as an `elf_prstatus` of the size gdb and crash expect for
/// `arch` (x86_64, i386 or aarch64; None for another architecture). `pr_pid` is the CPU's
/// recorded pid, or index + 1 as QEMU writes it; registers the state lacks are 0; on
/// i386 the upper halves of 64-bit values are dropped.
pub fn encode(cpu: &CpuState, arch: Arch) -> Option<Vec<u8>> {
    let pid = cpu.pid.unwrap_or(cpu.index.saturating_add(1));
    let reg = |n: &str| cpu.reg(n).unwrap_or(0);
    let mut d = vec![0u8; size_for(arch)?];
    if arch == Arch::AARCH64 {
        put_u32(&mut d, PID_AARCH64, pid);
        for (i, n) in SLOTS_AARCH64.iter().enumerate() {
            put_u64(&mut d, REG_AARCH64 + 8 * i, reg(n));
        }
    } else if arch == Arch::X86_64 {
        put_u32(&mut d, PID_X86_64, pid);
        for (i, n) in SLOTS_X86_64.iter().enumerate() {
            put_u64(&mut d, REG_X86_64 + 8 * i, reg(n));
        }
    } else {
        put_u32(&mut d, PID_I386, pid);
        for (i, n) in SLOTS_I386.iter().enumerate() {
            let v = if n.ends_with(".selector") {
                reg(n) & 0xffff
            } else {
                reg(n)
            };
            // Truncation to the 32-bit register is the point here.
            put_u32(&mut d, REG_I386 + 4 * i, v as u32);
        }
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPRS: [&str; 21] = [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "rip", "rflags", "orig_rax", "fs_base", "gs_base",
    ];

    fn sample_cpu(wide: bool) -> CpuState {
        let v = |n: u64| if wide { 0x1111_0000_0000_0000 | n } else { n };
        let mut c = CpuState::new(2, None);
        c.pid = Some(77);
        let vals = [
            v(1),
            v(2),
            v(3),
            v(4),
            v(5),
            v(6),
            v(7),
            v(8),
            if wide { 9 } else { 0 },
            if wide { 10 } else { 0 },
            if wide { 11 } else { 0 },
            if wide { 12 } else { 0 },
            if wide { 13 } else { 0 },
            if wide { 14 } else { 0 },
            if wide { 15 } else { 0 },
            if wide { 16 } else { 0 },
            v(17),
            0x246,
            v(19),
            if wide { 20 } else { 0 },
            if wide { 21 } else { 0 },
        ];
        for (n, x) in GPRS.iter().zip(vals) {
            c.set_reg(n, x);
        }
        for (s, sel) in [
            ("cs", 0x10),
            ("ds", 0x18),
            ("es", 0x18),
            ("fs", 0x0),
            ("gs", 0x2b),
            ("ss", 0x18),
        ] {
            c.set_reg(&format!("{s}.selector"), sel);
        }
        c
    }

    #[test]
    fn x86_64_round_trip_and_offsets() {
        let c = sample_cpu(true);
        let d = encode(&c, Arch::X86_64).unwrap();
        assert_eq!(d.len(), 336);
        // Spot-check docs/formats.md#prstatus offsets: pid @32, pr_reg @112, r15 first, rip @+128,
        // cs @+136, gs @+208, pr_fpvalid @328 left 0.
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
        assert_eq!(p.regs, c.regs);
        let mut back = CpuState::new(2, None);
        p.apply_to(&mut back);
        assert_eq!(back, c);
    }

    #[test]
    fn i386_round_trip_and_offsets() {
        let c = sample_cpu(false);
        let d = encode(&c, Arch::I386).unwrap();
        assert_eq!(d.len(), 144);
        assert_eq!(le_u32(&d, 24).unwrap(), 77);
        assert_eq!(le_u32(&d, 72).unwrap(), 2); // ebx first
        assert_eq!(le_u32(&d, 72 + 24).unwrap(), 1); // eax
        assert_eq!(le_u32(&d, 72 + 48).unwrap(), 17); // eip
        assert_eq!(le_u32(&d, 72 + 52).unwrap(), 0x10); // cs
        assert_eq!(le_u32(&d, 72 + 64).unwrap(), 0x18); // ss
        let p = decode(&d).unwrap();
        assert_eq!(p.arch, Arch::I386);
        // Every register the i386 layout has comes back; r8-r15, fs_base and gs_base are
        // not in it (they were 0 in the sample).
        for (n, v) in p.regs.iter() {
            assert_eq!(c.reg(n), Some(v), "{n}");
        }
        for n in [
            "rax",
            "rip",
            "rflags",
            "orig_rax",
            "cs.selector",
            "ss.selector",
        ] {
            assert!(p.regs.contains(n), "{n}");
        }
        assert_eq!(p.regs.get("r8"), None);
    }

    #[test]
    fn i386_drops_upper_halves_and_defaults_pid() {
        let mut c = sample_cpu(true);
        c.pid = None;
        let p = decode(&encode(&c, Arch::I386).unwrap()).unwrap();
        assert_eq!(p.pid, 3);
        assert_eq!(p.regs.get("rax"), Some(1));
        assert_eq!(p.regs.get("r8"), None);
    }

    #[test]
    fn aarch64_round_trip_and_offsets() {
        let mut c = CpuState::new(1, Some(Arch::AARCH64));
        c.pid = Some(2);
        for (i, n) in SLOTS_AARCH64.iter().enumerate() {
            c.set_reg(n, 0x1000 + i as u64);
        }
        // System registers are not in pr_reg: not written, not read back.
        c.set_reg("ttbr1_el1", 0x4185_8000);
        let d = encode(&c, Arch::AARCH64).unwrap();
        assert_eq!(d.len(), 392);
        // struct elf_prstatus (LP64): pr_pid @32, pr_reg @112; user_pt_regs: x0 @+0,
        // x30 @+240, sp @+248, pc @+256, pstate @+264; pr_fpvalid @384 left 0.
        assert_eq!(le_u32(&d, 32).unwrap(), 2);
        assert_eq!(le_u64(&d, 112).unwrap(), 0x1000);
        assert_eq!(le_u64(&d, 112 + 240).unwrap(), 0x1000 + 30);
        assert_eq!(le_u64(&d, 112 + 248).unwrap(), 0x1000 + 31);
        assert_eq!(le_u64(&d, 112 + 256).unwrap(), 0x1000 + 32);
        assert_eq!(le_u64(&d, 112 + 264).unwrap(), 0x1000 + 33);
        assert_eq!(le_u32(&d, 384).unwrap(), 0);
        let p = decode(&d).unwrap();
        assert_eq!(p.arch, Arch::AARCH64);
        assert_eq!(p.pid, 2);
        assert_eq!(p.regs.len(), 34);
        assert_eq!(p.regs.get("pc"), Some(0x1000 + 32));
        assert_eq!(p.regs.get("ttbr1_el1"), None);
        assert_eq!(p.regs.iter().next().map(|(n, _)| n), Some("x0"));
    }

    #[test]
    fn wrong_size_is_an_error() {
        assert!(decode(&[0; 100]).is_err());
        assert!(decode(&[]).is_err());
        assert!(encode(&sample_cpu(true), Arch::RISCV64).is_none());
    }
}
