//! One registry for every plugin, built in or (later) loaded at run time: writers by
//! name and output extension, walkers by architecture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dumpconv_core::{ArchWalker, DumpWriter, Error, Result};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    Library(PathBuf),
}

pub struct Registry {
    writers: Vec<(Arc<dyn DumpWriter>, Origin)>,
    walkers: Vec<(Arc<dyn ArchWalker>, Origin)>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// The plugins compiled into dumpconv.
    pub fn builtin() -> Self {
        Registry {
            writers: vec![
                (
                    Arc::new(dumpconv_elf::ElfWriter) as Arc<dyn DumpWriter>,
                    Origin::BuiltIn,
                ),
                (Arc::new(dumpconv_kdump::KdumpWriter), Origin::BuiltIn),
                (Arc::new(dumpconv_raw::RawWriter), Origin::BuiltIn),
                (Arc::new(dumpconv_lime::LimeWriter), Origin::BuiltIn),
                (Arc::new(dumpconv_lime::AvmlWriter), Origin::BuiltIn),
            ],
            walkers: vec![(
                Arc::new(dumpconv_x86::X86Walker) as Arc<dyn ArchWalker>,
                Origin::BuiltIn,
            )],
        }
    }

    pub fn writers(&self) -> impl Iterator<Item = (&Arc<dyn DumpWriter>, &Origin)> {
        self.writers.iter().map(|(w, o)| (w, o))
    }

    pub fn walkers(&self) -> impl Iterator<Item = (&Arc<dyn ArchWalker>, &Origin)> {
        self.walkers.iter().map(|(w, o)| (w, o))
    }

    pub fn writer_names(&self) -> Vec<String> {
        self.writers
            .iter()
            .map(|(w, _)| w.name().to_string())
            .collect()
    }

    pub fn writer(&self, name: &str) -> Result<Arc<dyn DumpWriter>> {
        self.writers
            .iter()
            .find(|(w, _)| w.name().eq_ignore_ascii_case(name))
            .map(|(w, _)| w.clone())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown output format {name:?} (known: {})",
                    self.writer_names().join(", ")
                ))
            })
    }

    /// The writer whose extension the output name ends with.
    pub fn writer_for_path(&self, path: &Path) -> Option<Arc<dyn DumpWriter>> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        self.writers
            .iter()
            .find(|(w, _)| w.extensions().iter().any(|e| *e == ext))
            .map(|(w, _)| w.clone())
    }

    /// The first walker that handles x86 (the only architecture so far).
    pub fn walker(&self) -> Result<Arc<dyn ArchWalker>> {
        self.walkers
            .first()
            .map(|(w, _)| w.clone())
            .ok_or_else(|| Error::invalid("no page-table walker is registered"))
    }

    /// Register a writer; a name clash with an existing writer is refused unless
    /// `replace`.
    pub fn add_writer(
        &mut self,
        writer: Arc<dyn DumpWriter>,
        origin: Origin,
        replace: bool,
    ) -> Result<()> {
        if let Some(i) = self
            .writers
            .iter()
            .position(|(w, _)| w.name().eq_ignore_ascii_case(writer.name()))
        {
            if !replace {
                return Err(Error::invalid(format!(
                    "a writer named {:?} already exists",
                    writer.name()
                )));
            }
            self.writers[i] = (writer, origin);
        } else {
            self.writers.push((writer, origin));
        }
        Ok(())
    }

    /// Register a walker; a clash with an existing walker's name is refused unless
    /// `replace`, in which case the new walker takes its place.
    pub fn add_walker(
        &mut self,
        walker: Arc<dyn ArchWalker>,
        origin: Origin,
        replace: bool,
    ) -> Result<()> {
        if let Some(i) = self
            .walkers
            .iter()
            .position(|(w, _)| w.name().eq_ignore_ascii_case(walker.name()))
        {
            if !replace {
                return Err(Error::invalid(format!(
                    "a walker named {:?} already exists",
                    walker.name()
                )));
            }
            self.walkers[i] = (walker, origin);
        } else {
            self.walkers.insert(0, (walker, origin));
        }
        Ok(())
    }
}
