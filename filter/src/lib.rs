//! dumpconv-filter: makedumpfile-style page filtering, written from the kernel's own
//! definitions. Each RAM page frame of a Linux dump is classified from the kernel's
//! `struct page` array, located and decoded through VMCOREINFO alone
//! ([`layout::PageLayout`], [`memmap`]) and read through kernel virtual memory
//! ([`kmem::KernelMemory`]: whatever translates kernel addresses, a walker and a CPU in
//! practice). [`classify::classify`] gives every page a kind; a [`level::DumpLevel`]
//! picks the classes to leave out. Zero pages are decided from contents
//! ([`zero::zero_pages`]). docs/filtering.md describes the rules.

pub mod classify;
pub mod kmem;
pub mod layout;
pub mod level;
pub mod memmap;
pub mod zero;

pub use classify::{classify, ClassStats, Classification, Garbage, KindRun, PageKind, Unknown};
pub use kmem::{KernelMemory, WalkerMemory};
pub use layout::{MemoryModel, PageLayout};
pub use level::{Class, DumpLevel};
