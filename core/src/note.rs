//! ELF notes as the model keeps them: name, type, descriptor bytes, unchanged.

/// Well-known note types.
pub const NT_PRSTATUS: u32 = 1;
/// VMCOREINFO notes have type 0.
pub const NT_VMCOREINFO: u32 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Name without the terminating NUL ("CORE", "QEMU", "VMCOREINFO").
    pub name: Vec<u8>,
    pub n_type: u32,
    pub desc: Vec<u8>,
}

/// The kind of a note, as dumpconv orders them in output (NT_PRSTATUS, QEMU CPU state,
/// VMCOREINFO, then anything else in input order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NoteKind {
    PrStatus,
    QemuCpuState,
    VmcoreInfo,
    Other,
}

impl Note {
    pub fn new(name: &str, n_type: u32, desc: Vec<u8>) -> Self {
        Note {
            name: name.as_bytes().to_vec(),
            n_type,
            desc,
        }
    }

    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    pub fn kind(&self) -> NoteKind {
        match (&self.name[..], self.n_type) {
            (b"CORE", NT_PRSTATUS) => NoteKind::PrStatus,
            (b"QEMU", _) => NoteKind::QemuCpuState,
            (b"VMCOREINFO", NT_VMCOREINFO) => NoteKind::VmcoreInfo,
            _ => NoteKind::Other,
        }
    }
}
