//! vCPU registers and VMCOREINFO from the device sections.
//!
//! x86 `cpu` sections (target/i386's `vmstate_x86_cpu`), read by field name through the
//! VMDESCRIPTION: `env.regs[0..16]` in QEMU's register order (rax rcx rdx rbx rsp rbp
//! rsi rdi r8..r15), `env.eip`, `env.eflags`, `env.segs[0..6]` in QEMU's segment order
//! (es cs ss ds fs gs) with `selector`/`base`/`limit`/`flags`, `env.ldt`, `env.tr`,
//! `env.gdt`, `env.idt`, `env.cr[0|2|3|4]`, `env.efer`, `env.kernelgsbase`,
//! `env.a20_mask` (an int32). They become the same register names the QEMU CPU-note
//! reader gives ([`crate::notes::qemu`]), EFER included (the note has none).
//! qemu-system-i386's sections have 32-bit fields, `env.regs[0..8]` only, no
//! `env.kernelgsbase`, and `env.efer` only in the subsection `cpu/efer32`, which QEMU
//! sends when EFER is not zero: absent, EFER is 0.
//!
//! The `vmcoreinfo` device (`-device vmcoreinfo`) keeps what the guest kernel wrote
//! through fw_cfg: `vmcoreinfo.guest_format` (1: an ELF note), `vmcoreinfo.size` and
//! `vmcoreinfo.paddr`, the guest-physical address of the kernel's VMCOREINFO ELF note;
//! QEMU's `dump-guest-memory` reads the note from there, and so does this reader.

use dumpconv_core::{Arch, CpuState, PhysicalMemory, VmcoreInfo};

use super::vmdesc::Fields;

/// QEMU's general-register order in `env.regs`.
const REGS: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
/// QEMU's segment order in `env.segs`.
const SEGS: [&str; 6] = ["es", "cs", "ss", "ds", "fs", "gs"];
const EFER_LMA: u64 = 1 << 10;

fn get(f: &Fields, name: &str) -> Option<u64> {
    f.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// The element index `i` of a field named `array[i]` (decimal, as the walk names it).
fn element(name: &str, array: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(array)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    let i: u64 = digits.parse().ok()?;
    (i.to_string() == digits).then_some(i)
}

/// The vCPUs of the `cpu` sections, in instance order, and the architecture their
/// state says (x86_64 when the first vCPU is in long mode, as QEMU's dump decides).
pub fn x86_cpus(
    devices: &[(String, u32, Fields)],
    warnings: &mut Vec<String>,
) -> (Vec<CpuState>, Option<Arch>) {
    let mut secs: Vec<&(String, u32, Fields)> =
        devices.iter().filter(|(n, _, _)| n == "cpu").collect();
    secs.sort_by_key(|(_, i, _)| *i);
    let mut cpus = Vec::new();
    for (_, inst, f) in secs {
        let mut c = CpuState::new(*inst, None);
        // qemu-system-i386 (a 32-bit `target_ulong`) has 8 general registers and no
        // `env.kernelgsbase`; its EFER is in the subsection `cpu/efer32`, sent only when
        // EFER is not zero
        let target32 = get(f, "env.regs[7]").is_some() && get(f, "env.regs[8]").is_none();
        let mut missing = Vec::new();
        let mut put = |c: &mut CpuState, reg: &str, field: &str| match get(f, field) {
            Some(v) => c.set_reg(reg, v),
            None => missing.push(field.to_string()),
        };
        let nregs = if target32 { 8 } else { REGS.len() };
        for (i, r) in REGS.iter().enumerate().take(nregs) {
            put(&mut c, r, &format!("env.regs[{i}]"));
        }
        put(&mut c, "rip", "env.eip");
        put(&mut c, "rflags", "env.eflags");
        c.set_reg("orig_rax", 0);
        for (i, s) in SEGS.iter().enumerate() {
            for part in ["selector", "limit", "flags", "base"] {
                put(
                    &mut c,
                    &format!("{s}.{part}"),
                    &format!("env.segs[{i}].{part}"),
                );
            }
        }
        for s in ["ldt", "tr", "gdt", "idt"] {
            for part in ["selector", "limit", "flags", "base"] {
                put(&mut c, &format!("{s}.{part}"), &format!("env.{s}.{part}"));
            }
        }
        if let (Some(fs), Some(gs)) = (c.reg("fs.base"), c.reg("gs.base")) {
            c.set_reg("fs_base", fs);
            c.set_reg("gs_base", gs);
        }
        for cr in [0, 2, 3, 4] {
            put(&mut c, &format!("cr{cr}"), &format!("env.cr[{cr}]"));
        }
        if target32 {
            c.set_reg("efer", get(f, "env.efer").unwrap_or(0));
        } else {
            put(&mut c, "efer", "env.efer");
            put(&mut c, "kernel_gs_base", "env.kernelgsbase");
        }
        if let Some(a20) = get(f, "env.a20_mask") {
            // an int32 on the wire: -1 (all ones) when A20 is enabled
            c.set_reg("a20_mask", a20 as u32 as i32 as i64 as u64);
        }
        if !missing.is_empty() {
            warnings.push(format!(
                "cpu {inst}: the cpu section lacks {} (not in its VMDESCRIPTION)",
                missing.join(", ")
            ));
        }
        cpus.push(c);
    }
    let arch = cpus.first().map(|c| {
        if c.reg("efer").is_some_and(|e| e & EFER_LMA != 0) {
            Arch::X86_64
        } else {
            Arch::I386
        }
    });
    for c in &mut cpus {
        c.arch = arch;
    }
    (cpus, arch)
}

/// The guest's VMCOREINFO, read from the note the `vmcoreinfo` device points to.
pub fn vmcoreinfo(
    devices: &[(String, u32, Fields)],
    mem: &dyn PhysicalMemory,
    warnings: &mut Vec<String>,
) -> Option<VmcoreInfo> {
    let (_, _, f) = devices.iter().find(|(n, _, _)| n == "vmcoreinfo")?;
    if get(f, "has_vmcoreinfo") != Some(1) {
        warnings.push("the vmcoreinfo device holds no note address (the guest kernel never wrote one: qemu_fw_cfg not loaded?)".into());
        return None;
    }
    let (format, size, paddr) = (
        get(f, "vmcoreinfo.guest_format")?,
        get(f, "vmcoreinfo.size")?,
        get(f, "vmcoreinfo.paddr")?,
    );
    if format != 1 {
        warnings.push(format!(
            "vmcoreinfo device: guest format {format} (only 1, an ELF note, is known)"
        ));
        return None;
    }
    match read_note(mem, paddr, size) {
        Ok(desc) => Some(VmcoreInfo::parse(&desc)),
        Err(e) => {
            warnings.push(format!(
                "vmcoreinfo device points to {paddr:#x} ({size:#x} bytes): {e}"
            ));
            None
        }
    }
}

/// The descriptor of the ELF note "VMCOREINFO" at `paddr` (at most `size` bytes long).
fn read_note(mem: &dyn PhysicalMemory, paddr: u64, size: u64) -> Result<Vec<u8>, String> {
    if !(12..=(1 << 20)).contains(&size) {
        return Err(format!("note size {size:#x} is implausible"));
    }
    let mut buf = vec![0u8; size as usize];
    mem.read_at(paddr, &mut buf).map_err(|e| e.to_string())?;
    let u = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]) as usize;
    let (namesz, descsz) = (u(0), u(4));
    let name_end = 12 + namesz;
    let desc_at = 12 + namesz.div_ceil(4) * 4;
    let name = buf
        .get(12..name_end)
        .ok_or("note name runs past its size")?;
    if name.strip_suffix(b"\0").unwrap_or(name) != b"VMCOREINFO" {
        return Err(format!(
            "the note there is named {:?}, not VMCOREINFO",
            String::from_utf8_lossy(name)
        ));
    }
    buf.get(desc_at..desc_at + descsz)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "note descriptor runs past its size".to_string())
}

/// The system registers read from an arm64 vCPU's `cpreg_vmstate_indexes` /
/// `cpreg_vmstate_values` lists, by (op0, op1, CRn, CRm, op2). QEMU keys the lists with
/// the KVM register id: 0x6030_0000_0013_0000 | op0 << 14 | op1 << 11 | CRn << 7 |
/// CRm << 3 | op2.
/// (op0, op1, CRn, CRm, op2) of an AArch64 system register.
type SysRegEnc = (u64, u64, u64, u64, u64);

const ARM64_SYSREGS: [(&str, SysRegEnc); 6] = [
    ("sctlr_el1", (3, 0, 1, 0, 0)),
    ("ttbr0_el1", (3, 0, 2, 0, 0)),
    ("ttbr1_el1", (3, 0, 2, 0, 1)),
    ("tcr_el1", (3, 0, 2, 0, 2)),
    ("mair_el1", (3, 0, 10, 2, 0)),
    ("vbar_el1", (3, 0, 12, 0, 0)),
];

fn arm64_sysreg_id((op0, op1, crn, crm, op2): SysRegEnc) -> u64 {
    0x6030_0000_0013_0000 | op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2
}

/// arm64 vCPUs of a `virt` machine (target/arm's `vmstate_arm_cpu`): `env.xregs[0..31]`
/// (x0..x30; `xregs[31]` is the current stack pointer), `env.pc`, `cpsr` (PSTATE on an
/// AArch64 vCPU), and the system registers of [`ARM64_SYSREGS`].
pub fn arm64_cpus(devices: &[(String, u32, Fields)], warnings: &mut Vec<String>) -> Vec<CpuState> {
    let mut secs: Vec<&(String, u32, Fields)> =
        devices.iter().filter(|(n, _, _)| n == "cpu").collect();
    secs.sort_by_key(|(_, i, _)| *i);
    let mut cpus = Vec::new();
    for (_, inst, f) in secs {
        let mut c = CpuState::new(*inst, Some(Arch::AARCH64));
        for i in 0..31 {
            c.set_reg_opt(&format!("x{i}"), get(f, &format!("env.xregs[{i}]")));
        }
        c.set_reg_opt("sp", get(f, "env.xregs[31]"));
        c.set_reg_opt("pc", get(f, "env.pc"));
        c.set_reg_opt("pstate", get(f, "cpsr"));
        let n = get(f, "cpreg_vmstate_array_len").unwrap_or(0);
        // `cpreg_vmstate_array_len` is an int32 written little-endian ("int32 le"): it
        // was read big-endian here
        let n = if n > 0xffff {
            u64::from((n as u32).swap_bytes())
        } else {
            n
        };
        // One pass over the fields, not a search per element: the count comes from
        // the input (up to 2^32), and a fuzzed one made a 30 KB stream take minutes.
        let mut indexes = std::collections::BTreeMap::new();
        let mut values = std::collections::BTreeMap::new();
        for (name, v) in f {
            if let Some(i) = element(name, "cpreg_vmstate_indexes").filter(|&i| i < n) {
                indexes.entry(i).or_insert(*v);
            } else if let Some(i) = element(name, "cpreg_vmstate_values").filter(|&i| i < n) {
                values.entry(i).or_insert(*v);
            }
        }
        let ids: Vec<(u64, u64)> = indexes
            .iter()
            .filter_map(|(i, id)| Some((*id, *values.get(i)?)))
            .collect();
        let mut missing = Vec::new();
        for (name, enc) in ARM64_SYSREGS {
            match ids.iter().find(|(id, _)| *id == arm64_sysreg_id(enc)) {
                Some((_, v)) => c.set_reg(name, *v),
                None => missing.push(name),
            }
        }
        if !missing.is_empty() || !c.regs.contains("pc") {
            warnings.push(format!(
                "cpu {inst}: not in its cpu section: {}{}",
                if c.regs.contains("pc") { "" } else { "pc, " },
                missing.join(", ")
            ));
        }
        cpus.push(c);
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of one `cpu` section: `regs` general registers, `efer` if sent.
    fn section(regs: usize, efer: Option<u64>, kernelgsbase: bool) -> Fields {
        let mut f: Fields = (0..regs)
            .map(|i| (format!("env.regs[{i}]"), 0x100 + i as u64))
            .collect();
        f.push(("env.eip".into(), 0xc100_0000));
        f.push(("env.eflags".into(), 0x46));
        for seg in (0..6).map(|i| format!("env.segs[{i}]")).chain(
            ["ldt", "tr", "gdt", "idt"]
                .iter()
                .map(|s| format!("env.{s}")),
        ) {
            for part in ["selector", "limit", "flags", "base"] {
                f.push((format!("{seg}.{part}"), 0));
            }
        }
        for cr in [0, 2, 3, 4] {
            f.push((format!("env.cr[{cr}]"), 0));
        }
        if let Some(e) = efer {
            f.push(("env.efer".into(), e));
        }
        if kernelgsbase {
            f.push(("env.kernelgsbase".into(), 0));
        }
        f
    }

    #[test]
    fn i386_target_sections_have_8_registers_and_efer_only_when_not_zero() {
        // qemu-system-i386 without NX: no cpu/efer32 subsection, so no env.efer
        for (efer, want) in [(None, 0), (Some(0x800), 0x800)] {
            let mut w = Vec::new();
            let devs = vec![("cpu".to_string(), 0, section(8, efer, false))];
            let (cpus, arch) = x86_cpus(&devs, &mut w);
            assert!(w.is_empty(), "{w:?}");
            assert_eq!(arch, Some(Arch::I386));
            assert_eq!(cpus[0].reg("efer"), Some(want));
            assert_eq!(cpus[0].reg("rdi"), Some(0x107));
            assert_eq!(cpus[0].reg("r8"), None);
        }
    }

    #[test]
    fn x86_64_target_section_without_efer_is_warned() {
        let mut w = Vec::new();
        let devs = vec![("cpu".to_string(), 0, section(16, None, true))];
        let (cpus, _) = x86_cpus(&devs, &mut w);
        assert_eq!(cpus[0].reg("r15"), Some(0x10f));
        assert_eq!(cpus[0].reg("efer"), None);
        assert!(w.len() == 1 && w[0].contains("env.efer"), "{w:?}");
    }
}
