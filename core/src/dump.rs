//! An opened input: its memory, CPUs, notes and VMCOREINFO.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cpu::{Arch, CpuState};
use crate::memory::PhysicalMemory;
use crate::note::Note;
use crate::vmcoreinfo::VmcoreInfo;

pub struct Dump {
    /// The input file (the first one, for multi-file inputs).
    pub path: PathBuf,
    /// Short format name: "raw", "elf", "kdump", ...
    pub format: &'static str,
    /// Format details for `dumpconv info` (class, producer, header fields...).
    pub details: Vec<(String, String)>,
    /// None when the input does not say (raw images).
    pub arch: Option<Arch>,
    pub memory: Arc<dyn PhysicalMemory>,
    pub cpus: Vec<CpuState>,
    /// Notes exactly as found in the input, in input order.
    pub notes: Vec<Note>,
    pub vmcoreinfo: Option<VmcoreInfo>,
}

impl std::fmt::Debug for Dump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dump")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("arch", &self.arch)
            .field("ranges", &self.memory.ranges())
            .field("cpus", &self.cpus.len())
            .field("notes", &self.notes.len())
            .finish()
    }
}
