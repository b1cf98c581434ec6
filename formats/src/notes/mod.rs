//! Note descriptors: NT_PRSTATUS (x86_64, i386, aarch64), the QEMU CPU-state note, and the
//! order notes are written in.
//!
//! Readers keep notes byte for byte ([`dumpconv_core::Dump::notes`]); this module turns
//! them into [`CpuState`]s and a [`VmcoreInfo`], and decides which notes a writer emits
//! ([`plan_notes`]), so every output format orders and synthesises notes the same way.

pub mod prstatus;
pub mod qemu;

use dumpconv_core::note::NoteKind;
use dumpconv_core::{Arch, CpuState, Note, VmcoreInfo};

/// The CPUs the notes describe. The i-th NT_PRSTATUS and the i-th QEMU note are the
/// same CPU (QEMU writes both in CPU order; the kernel writes only NT_PRSTATUS), so the
/// CPU count is the larger of the two counts and `index` is the position.
/// Descriptors that do not decode are skipped; [`decode_cpus`] also says why.
pub fn cpus_from_notes(notes: &[Note], arch: Arch) -> Vec<CpuState> {
    decode_cpus(notes, arch).0
}

/// Like [`cpus_from_notes`], plus one message per note that could not be decoded (for
/// `dumpconv info` and the reader's details: a bad register note should not make a
/// dump unreadable).
pub fn decode_cpus(notes: &[Note], arch: Arch) -> (Vec<CpuState>, Vec<String>) {
    let mut warnings = Vec::new();
    let prs: Vec<&Note> = notes
        .iter()
        .filter(|n| n.kind() == NoteKind::PrStatus)
        .collect();
    let qemus: Vec<&Note> = notes
        .iter()
        .filter(|n| n.kind() == NoteKind::QemuCpuState)
        .collect();
    let n = prs.len().max(qemus.len());
    let mut cpus = Vec::with_capacity(n);
    for i in 0..n {
        let mut cpu = CpuState::new(u32::try_from(i).unwrap_or(u32::MAX), Some(arch));
        // Long mode hint for the QEMU note: the file is EM_X86_64 or this CPU's
        // NT_PRSTATUS has the x86_64 layout (QEMU picks both from LMA).
        let mut long_mode = arch == Arch::X86_64;
        if let Some(p) = prs.get(i) {
            match prstatus::decode(&p.desc) {
                Ok(ps) => {
                    ps.apply_to(&mut cpu);
                    long_mode |= ps.arch == Arch::X86_64;
                }
                Err(e) => warnings.push(format!("cpu {i}: NT_PRSTATUS note ignored: {e}")),
            }
        }
        if let Some(q) = qemus.get(i) {
            match qemu::decode(&q.desc) {
                Ok(qs) => qs.apply_to(&mut cpu, long_mode),
                Err(e) => warnings.push(format!("cpu {i}: QEMU note ignored: {e}")),
            }
        }
        cpus.push(cpu);
    }
    (cpus, warnings)
}

/// The first VMCOREINFO note, parsed.
pub fn vmcoreinfo_from_notes(notes: &[Note]) -> Option<VmcoreInfo> {
    notes
        .iter()
        .find(|n| n.kind() == NoteKind::VmcoreInfo)
        .map(|n| VmcoreInfo::parse(&n.desc))
}

/// The notes a writer should emit, in output order: NT_PRSTATUS for every CPU, the
/// QEMU note for every CPU, VMCOREINFO, then every other note in input order.
///
/// Notes found in the input are carried byte for byte (a writer must not "improve" what
/// the kernel or QEMU wrote). What the input lacks is synthesised:
/// - no NT_PRSTATUS but `cpus` given (a raw image plus `--cpu-state`): one per CPU, in
///   the layout of `arch` (x86_64 and i386), so gdb sees threads and crash counts CPUs;
/// - no QEMU note but some x86 CPU has control registers: one per CPU, because crash reads
///   CR3 from it to find the kernel when VMCOREINFO is missing (kaslr_helper.c). CPUs
///   with registers only (a kdump vmcore) get none: a note of zeros would mislead;
/// - no VMCOREINFO note but `vmcoreinfo` given (a user-supplied file): one, with the
///   raw text.
pub fn plan_notes(
    notes: &[Note],
    cpus: &[CpuState],
    vmcoreinfo: Option<&VmcoreInfo>,
    arch: Arch,
) -> Vec<Note> {
    let of = |k: NoteKind| notes.iter().filter(move |n| n.kind() == k).cloned();
    let mut out: Vec<Note> = of(NoteKind::PrStatus).collect();
    if out.is_empty() {
        out.extend(cpus.iter().filter_map(|c| prstatus_note(c, arch)));
    }
    let qemu_in: Vec<Note> = of(NoteKind::QemuCpuState).collect();
    let x86 = prstatus::is_x86(arch);
    if !qemu_in.is_empty() {
        out.extend(qemu_in);
    } else if x86
        && cpus
            .iter()
            .any(|c| ["cr0", "cr3", "cr4"].iter().any(|r| c.regs.contains(r)))
    {
        out.extend(cpus.iter().map(qemu_note));
    }
    let vmci_in: Vec<Note> = of(NoteKind::VmcoreInfo).collect();
    if !vmci_in.is_empty() {
        out.extend(vmci_in);
    } else if let Some(v) = vmcoreinfo {
        out.push(vmcoreinfo_note(v));
    }
    out.extend(of(NoteKind::Other));
    out
}

/// An NT_PRSTATUS note ("CORE", type 1) for `cpu` in the layout of `arch` (None when
/// there is no layout for `arch` here).
pub fn prstatus_note(cpu: &CpuState, arch: Arch) -> Option<Note> {
    Some(Note::new(
        "CORE",
        dumpconv_core::note::NT_PRSTATUS,
        prstatus::encode(cpu, arch)?,
    ))
}

/// A QEMU CPU-state note ("QEMU", type 0) for `cpu`.
pub fn qemu_note(cpu: &CpuState) -> Note {
    Note::new(qemu::NAME, qemu::NOTE_TYPE, qemu::encode(cpu))
}

/// A VMCOREINFO note ("VMCOREINFO", type 0) holding `v`'s raw text.
pub fn vmcoreinfo_note(v: &VmcoreInfo) -> Note {
    Note::new(
        "VMCOREINFO",
        dumpconv_core::note::NT_VMCOREINFO,
        v.raw().to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(i: u32, rip: u64) -> CpuState {
        CpuState::new(i, None)
            .with_reg("rip", rip)
            .with_reg("rsp", rip + 8)
    }

    /// A CPU in 4-level paging with root `cr3` (as `--cr3 --paging-mode 4level` gives).
    fn paging_cpu(i: u32, cr3: u64) -> CpuState {
        CpuState::new(i, None)
            .with_reg("cr0", 0x8000_0001)
            .with_reg("cr3", cr3)
            .with_reg("cr4", 0x30)
            .with_reg("efer", 0x500)
    }

    #[test]
    fn pairs_prstatus_and_qemu_notes_by_position() {
        let q1 = paging_cpu(1, 0x5000)
            .with_reg("rip", 0x1000)
            .with_reg("rsp", 0x1008);
        let notes = vec![
            prstatus_note(&cpu(0, 0xffff_ffff_8100_0000), Arch::X86_64).unwrap(),
            prstatus_note(&cpu(1, 0xffff_ffff_8100_1000), Arch::X86_64).unwrap(),
            Note::new("VMCOREINFO", 0, b"OSRELEASE=6.1\n".to_vec()),
            qemu_note(&paging_cpu(0, 0x4000)),
            qemu_note(&q1),
        ];
        let (cpus, w) = decode_cpus(&notes, Arch::X86_64);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1].index, 1);
        assert_eq!(cpus[1].pid, Some(2));
        assert_eq!(cpus[0].reg("cr3"), Some(0x4000));
        assert_eq!(cpus[1].reg("cr3"), Some(0x5000));
        assert_eq!(cpus[1].arch, Some(Arch::X86_64));
        // NT_PRSTATUS registers win over the QEMU note's.
        assert_eq!(cpus[1].reg("rip"), Some(0xffff_ffff_8100_1000));
        // Long mode (the file is x86_64): EFER.LME|LMA inferred.
        assert_eq!(cpus[1].reg("efer"), Some(0x500));
        assert_eq!(
            vmcoreinfo_from_notes(&notes).and_then(|v| v.osrelease().map(str::to_owned)),
            Some("6.1".to_owned())
        );
    }

    #[test]
    fn bad_notes_become_warnings() {
        let notes = vec![
            Note::new("CORE", 1, vec![0; 10]),
            Note::new("QEMU", 0, vec![9; 440]),
        ];
        let (cpus, w) = decode_cpus(&notes, Arch::I386);
        assert_eq!(cpus.len(), 1);
        assert!(cpus[0].regs.is_empty());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn plan_orders_and_carries_notes_verbatim() {
        let other = Note::new("XEN", 7, vec![1, 2, 3]);
        let pr = Note::new("CORE", 1, vec![5; 336]);
        let q = Note::new("QEMU", 0, vec![6; 440]);
        let v = Note::new("VMCOREINFO", 0, b"A=1\n".to_vec());
        let input = vec![other.clone(), v.clone(), q.clone(), pr.clone()];
        let out = plan_notes(&input, &[cpu(0, 1)], None, Arch::X86_64);
        assert_eq!(out, vec![pr, q, v, other]);
    }

    #[test]
    fn plan_synthesises_what_is_missing() {
        let vmci = VmcoreInfo::parse(b"OSRELEASE=5.10\n");
        // Registers only: NT_PRSTATUS yes, QEMU note no.
        let out = plan_notes(&[], &[cpu(0, 1), cpu(1, 2)], Some(&vmci), Arch::I386);
        let kinds: Vec<NoteKind> = out.iter().map(Note::kind).collect();
        assert_eq!(
            kinds,
            vec![NoteKind::PrStatus, NoteKind::PrStatus, NoteKind::VmcoreInfo]
        );
        assert_eq!(out[0].desc.len(), prstatus::SIZE_I386);
        assert_eq!(out[2].desc, b"OSRELEASE=5.10\n");
        // Control registers: QEMU notes too.
        let c = paging_cpu(0, 0x1000);
        let out = plan_notes(&[], std::slice::from_ref(&c), None, Arch::X86_64);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].desc.len(), prstatus::SIZE_X86_64);
        assert_eq!(out[1].kind(), NoteKind::QemuCpuState);
        let (back, _) = decode_cpus(&out, Arch::X86_64);
        assert_eq!(back[0].reg("cr3"), Some(0x1000));
        assert_eq!(back[0].reg("cr4"), Some(0x30));
        assert_eq!(back[0].reg("efer"), Some(0x500));
        // Nothing known: nothing written.
        assert!(plan_notes(&[], &[], None, Arch::X86_64).is_empty());
    }
}
