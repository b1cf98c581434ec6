//! dumpconv-core: the model of a memory dump and the contracts every reader, walker and
//! writer follows. Nothing here knows an on-disk format.
//!
//! The flow (README.md's crate table names each piece): a reader in `dumpconv-formats`
//! opens an input into a [`Dump`]; an [`ArchWalker`] may turn each CPU's page tables into
//! a [`MappingList`]; the pieces are gathered into a [`DumpPlan`], which a [`DumpWriter`]
//! writes into a [`Sink`] while reporting to a [`Progress`].

pub mod arch;
pub mod cpu;
pub mod dump;
pub mod error;
pub mod mapping;
pub mod memory;
pub mod note;
pub mod numbers;
pub mod paging;
pub mod plugin;
pub mod progress;
pub mod ramscan;
pub mod sink;
pub mod view;
pub mod vmcoreinfo;
pub mod walker;
pub mod writer;
pub mod zero;

pub use arch::{Arch, ArchInfo};
pub use cpu::{CpuState, Registers};
pub use dump::Dump;
pub use error::{Error, ErrorClass, Result};
pub use mapping::{Mapping, MappingList};
pub use memory::{
    Backing, Extent, PhysRange, PhysicalMemory, Segment, SegmentMemory, SegmentSource,
};
pub use note::Note;
pub use paging::{AddressSpace, MmuDesc, Regime, VirtRange, WalkCache};
pub use progress::{NoProgress, Progress};
pub use sink::{FileSink, Sink, StreamSink};
pub use view::{build_view, ViewPolicy};
pub use vmcoreinfo::{LinearMap, VmcoreInfo, VmcoreInfoFile};
pub use walker::{ArchWalker, Translation, TranslationStep, WalkOptions, WalkStats};
pub use writer::{check_writer_options, DumpPlan, DumpWriter, PlanFilter};
pub use zero::is_zero;

/// The default page size (4 KiB), for architectures and dumps that do not say.
pub const PAGE_SIZE: u64 = 4096;
