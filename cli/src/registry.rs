//! One registry for every plugin, built in or loaded at run time: writers by name and
//! output extension, walkers by architecture (and mode name). Nothing here names an
//! architecture: walkers say which they handle.
//!
//! A loaded plugin whose name is a built-in's is refused unless overriding is allowed;
//! an overriding walker then comes first, so it is chosen for every mode it handles.
//! Two loaded plugins with one name: the first one loaded wins, the second is refused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dumpconv_core::plugin::{loader, LoadedPlugin, PluginKind};
use dumpconv_core::{Arch, ArchWalker, CpuState, DumpWriter, Error, Result, VmcoreInfo};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    /// A shared library, with the plugin ABI major version it was loaded with.
    Library {
        path: PathBuf,
        abi_major: u32,
    },
}

impl Origin {
    /// "built-in" or the library's path.
    pub fn describe(&self) -> String {
        match self {
            Origin::BuiltIn => "built-in".to_string(),
            Origin::Library { path, .. } => path.display().to_string(),
        }
    }
}

/// A walker or writer the registry knows, for `dumpconv plugins`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: PluginKind,
    pub name: String,
    pub version: String,
    pub description: String,
    pub origin: Origin,
    /// Walkers: the paging modes handled, by name.
    pub modes: Vec<String>,
    /// Walkers: the architectures handled, by name.
    pub arches: Vec<String>,
}

/// A library found by a directory scan that could not be used (a warning, not an
/// error: it is skipped).
#[derive(Debug, Clone)]
pub struct Failed {
    pub path: PathBuf,
    pub error: String,
}

struct Registered<T: ?Sized> {
    plugin: Arc<T>,
    origin: Origin,
    version: String,
    description: String,
}

pub struct Registry {
    writers: Vec<Registered<dyn DumpWriter>>,
    walkers: Vec<Registered<dyn ArchWalker>>,
    /// Walker mode lists as the plugins gave them (names), by walker name.
    walker_modes: Vec<(String, Vec<String>)>,
    failed: Vec<Failed>,
    /// Canonical paths of the libraries loaded, so a library is never loaded twice.
    loaded: HashSet<PathBuf>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The walkers compiled into dumpconv, with their descriptions: one line per
/// architecture crate.
fn builtin_walkers() -> Vec<(Arc<dyn ArchWalker>, &'static str)> {
    vec![
        (
            Arc::new(dumpconv_x86::X86Walker),
            "x86 page tables: 32-bit (PSE, PSE-36), PAE, 4-level, 5-level",
        ),
        (
            Arc::new(dumpconv_aarch64::Aarch64Walker),
            dumpconv_aarch64::DESCRIPTION,
        ),
    ]
}

fn builtin<T: ?Sized>(plugin: Arc<T>, description: &str) -> Registered<T> {
    Registered {
        plugin,
        origin: Origin::BuiltIn,
        version: VERSION.to_string(),
        description: description.to_string(),
    }
}

impl Registry {
    /// The plugins compiled into dumpconv.
    pub fn builtin() -> Self {
        let writers: Vec<Arc<dyn DumpWriter>> = vec![
            Arc::new(dumpconv_elf::ElfWriter),
            Arc::new(dumpconv_kdump::KdumpWriter),
            Arc::new(dumpconv_raw::RawWriter),
            Arc::new(dumpconv_lime::LimeWriter),
            Arc::new(dumpconv_lime::AvmlWriter),
        ];
        Registry {
            writers: writers
                .into_iter()
                .map(|w| {
                    let d = w.description().to_string();
                    builtin(w, &d)
                })
                .collect(),
            walkers: builtin_walkers()
                .into_iter()
                .map(|(w, d)| builtin(w, d))
                .collect(),
            walker_modes: Vec::new(),
            failed: Vec::new(),
            loaded: HashSet::new(),
        }
    }

    /// The built-ins plus plugin libraries: `explicit` ones (`--plugin`, whose failure is
    /// an error) first, then every `*.so` of `dirs` (whose failure is recorded in
    /// [`Registry::failed`] and returned as a warning). `allow_override` lets a plugin
    /// replace a built-in of the same name.
    pub fn with_plugins(
        explicit: &[PathBuf],
        dirs: &[PathBuf],
        allow_override: bool,
    ) -> Result<(Registry, Vec<String>)> {
        let mut r = Registry::builtin();
        let mut warnings = Vec::new();
        for p in explicit {
            r.load(p, allow_override)?;
        }
        for d in dirs {
            let found = match loader::scan_dir(d) {
                Ok(f) => f,
                Err(e) => {
                    warnings.push(format!("{e}; skipped"));
                    continue;
                }
            };
            for p in found {
                if let Err(e) = r.load(&p, allow_override) {
                    warnings.push(format!("{e}; skipped"));
                    r.failed.push(Failed {
                        path: p,
                        error: e.to_string(),
                    });
                }
            }
        }
        Ok((r, warnings))
    }

    /// Load one library and register its plugin. Loading a library already loaded (same
    /// file by canonical path) does nothing.
    pub fn load(&mut self, path: &Path, allow_override: bool) -> Result<()> {
        let canonical = std::fs::canonicalize(path).map_err(|e| Error::Plugin {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        if self.loaded.contains(&canonical) {
            return Ok(());
        }
        let plugin = loader::load(path)?;
        self.add_plugin(plugin, allow_override)?;
        self.loaded.insert(canonical);
        Ok(())
    }

    /// Register a plugin wrapped by the loader (or built in-process).
    pub fn add_plugin(&mut self, plugin: LoadedPlugin, allow_override: bool) -> Result<()> {
        let info = plugin.info().clone();
        let origin = Origin::Library {
            path: info.path.clone(),
            abi_major: info.abi_major,
        };
        let clash = |existing: &Origin| -> Option<Error> {
            let what = info.kind.name();
            match existing {
                Origin::BuiltIn if allow_override => None,
                Origin::BuiltIn => Some(format!(
                    "{what} {:?} clashes with the built-in {what} of that name; give \
                     --plugin-override to replace the built-in",
                    info.name
                )),
                Origin::Library { path, .. } => Some(format!(
                    "{what} {:?} is already provided by {}",
                    info.name,
                    path.display()
                )),
            }
            .map(|msg| Error::Plugin {
                path: info.path.clone(),
                msg,
            })
        };
        let same = |n: &str| n.eq_ignore_ascii_case(&info.name);
        match plugin {
            LoadedPlugin::Walker(w) => {
                let modes = w.listed_modes();
                let reg = Registered {
                    plugin: w as Arc<dyn ArchWalker>,
                    origin,
                    version: info.version.clone(),
                    description: info.description.clone(),
                };
                if let Some(i) = self.walkers.iter().position(|e| same(e.plugin.name())) {
                    if let Some(e) = clash(&self.walkers[i].origin) {
                        return Err(e);
                    }
                    // An overriding walker comes first: it is chosen for its modes.
                    self.walkers.remove(i);
                    self.walkers.insert(0, reg);
                } else {
                    self.walkers.push(reg);
                }
                self.walker_modes.retain(|(n, _)| !same(n));
                self.walker_modes.push((info.name.clone(), modes));
            }
            LoadedPlugin::Writer(w) => {
                let reg = Registered {
                    plugin: w as Arc<dyn DumpWriter>,
                    origin,
                    version: info.version.clone(),
                    description: info.description.clone(),
                };
                if let Some(i) = self.writers.iter().position(|e| same(e.plugin.name())) {
                    if let Some(e) = clash(&self.writers[i].origin) {
                        return Err(e);
                    }
                    self.writers[i] = reg;
                } else {
                    self.writers.push(reg);
                }
            }
        }
        Ok(())
    }

    /// Libraries found by directory scans that could not be used.
    pub fn failed(&self) -> &[Failed] {
        &self.failed
    }

    /// Every walker and writer, walkers first, in selection order.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for w in &self.walkers {
            let name = w.plugin.name().to_string();
            let modes = self
                .walker_modes
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| w.plugin.modes().iter().map(|m| m.to_string()).collect());
            let arches = w.plugin.arches().iter().map(|a| a.to_string()).collect();
            out.push(Entry {
                kind: PluginKind::Walker,
                name,
                version: w.version.clone(),
                description: w.description.clone(),
                origin: w.origin.clone(),
                modes,
                arches,
            });
        }
        for w in &self.writers {
            out.push(Entry {
                kind: PluginKind::Writer,
                name: w.plugin.name().to_string(),
                version: w.version.clone(),
                description: w.description.clone(),
                origin: w.origin.clone(),
                modes: Vec::new(),
                arches: Vec::new(),
            });
        }
        out
    }

    pub fn writer_names(&self) -> Vec<String> {
        self.writers
            .iter()
            .map(|w| w.plugin.name().to_string())
            .collect()
    }

    pub fn writer(&self, name: &str) -> Result<Arc<dyn DumpWriter>> {
        self.writers
            .iter()
            .find(|w| w.plugin.name().eq_ignore_ascii_case(name))
            .map(|w| w.plugin.clone())
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
            .find(|w| {
                w.plugin
                    .extensions()
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(&ext))
            })
            .map(|w| w.plugin.clone())
    }

    /// The walkers that handle `arch`, in selection order (an overriding plugin before
    /// the built-in).
    fn walkers_for(&self, arch: Arch) -> impl Iterator<Item = &Registered<dyn ArchWalker>> {
        self.walkers
            .iter()
            .filter(move |w| w.plugin.arches().contains(&arch))
    }

    fn no_walker(&self, arch: Arch) -> Error {
        let known: Vec<String> = self
            .walkers
            .iter()
            .map(|w| {
                let arches: Vec<String> = w.plugin.arches().iter().map(|a| a.to_string()).collect();
                format!("{} for {}", w.plugin.name(), arches.join(", "))
            })
            .collect();
        Error::Unsupported(format!(
            "no page-table walker handles {arch} (walkers: {}; load one with --plugin)",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join("; ")
            }
        ))
    }

    /// The walker for `arch` and, if given, the mode named `mode` (a name or alias the
    /// walker accepts): the first that handles both.
    pub fn walker_for(
        &self,
        arch: Arch,
        mode: Option<&str>,
    ) -> Result<(Arc<dyn ArchWalker>, Origin)> {
        let mut any = false;
        for w in self.walkers_for(arch) {
            any = true;
            let ok = match mode {
                None => true,
                Some(m) => w
                    .plugin
                    .parse_mode(m)
                    .is_some_and(|c| w.plugin.modes().iter().any(|x| x.eq_ignore_ascii_case(&c))),
            };
            if ok {
                return Ok((w.plugin.clone(), w.origin.clone()));
            }
        }
        match mode {
            Some(m) if any => Err(Error::Unsupported(format!(
                "no page-table walker handles {m} paging on {arch}"
            ))),
            _ => Err(self.no_walker(arch)),
        }
    }

    /// The walker for a set of CPUs of architecture `arch` (a CPU's own `arch` wins):
    /// the first walker for that architecture that handles the mode of `preferred` (the
    /// CPU whose user half is kept) if it has paging on, else of the first CPU with
    /// paging on (a walker that cannot tell the mode handles it); else the first walker
    /// for the architecture.
    pub fn walker_for_cpus(
        &self,
        cpus: &[CpuState],
        preferred: Option<u32>,
        arch: Arch,
    ) -> Result<(Arc<dyn ArchWalker>, Origin)> {
        let arch = preferred
            .and_then(|i| cpus.iter().find(|c| c.index == i))
            .or(cpus.first())
            .and_then(|c| c.arch)
            .unwrap_or(arch);
        let mut first = None;
        for w in self.walkers_for(arch) {
            first.get_or_insert(w);
            let p = &w.plugin;
            let cpu = preferred
                .and_then(|i| cpus.iter().find(|c| c.index == i))
                .filter(|c| p.paging_enabled(c))
                .or_else(|| cpus.iter().find(|c| p.paging_enabled(c)));
            // A walker that cannot tell the mode (a plugin without cpu_info) takes
            // every paging CPU of its architecture.
            let handled = cpu.is_some_and(|c| {
                p.mode_of(c)
                    .is_none_or(|m| p.modes().iter().any(|x| x.eq_ignore_ascii_case(&m)))
            });
            if handled {
                return Ok((p.clone(), w.origin.clone()));
            }
        }
        first
            .map(|w| (w.plugin.clone(), w.origin.clone()))
            .ok_or_else(|| self.no_walker(arch))
    }

    /// Every mode name the walkers accept, for messages.
    pub fn mode_names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for w in &self.walkers {
            for m in w.plugin.modes() {
                if !v.iter().any(|x| x == m) {
                    v.push(m.to_string());
                }
            }
        }
        v
    }

    /// A CPU state from a page-table root and a mode name (`--cr3 ADDR --paging-mode
    /// NAME`): built by the first walker that knows the mode (for `arch` when given) and
    /// can build it. A walker plugin without `cpu_from_root` (ABI 1, or an ABI-2 table
    /// without it) gives way to the next walker, and at last to the built-in walker of
    /// that mode even when a plugin overrides it (the registers are the built-in's, as
    /// before plugins could build CPUs).
    pub fn cpu_from_root(&self, arch: Option<Arch>, mode: &str, root: u64) -> Result<CpuState> {
        let mut unsupported = None;
        let builtins = builtin_walkers();
        let candidates = self
            .walkers
            .iter()
            .map(|w| &w.plugin)
            .chain(builtins.iter().map(|(w, _)| w));
        for (i, p) in candidates.enumerate() {
            if i >= self.walkers.len() && unsupported.is_none() {
                // The built-ins are only the fallback for a walker that cannot build.
                break;
            }
            if arch.is_some_and(|a| !p.arches().contains(&a)) {
                continue;
            }
            let Some(canonical) = p.parse_mode(mode) else {
                continue;
            };
            let Some(&a) = arch.as_ref().or(p.arches().first()) else {
                continue;
            };
            match p.cpu_from_root(a, &canonical, root) {
                Err(e @ Error::Unsupported(_)) => {
                    unsupported.get_or_insert(e);
                }
                r => return r,
            }
        }
        if let Some(e) = unsupported {
            return Err(e);
        }
        Err(Error::invalid(format!(
            "unknown paging mode {mode:?}{} (known: {})",
            arch.map(|a| format!(" for {a}")).unwrap_or_default(),
            self.mode_names().join(", ")
        )))
    }

    /// The architecture a VMCOREINFO belongs to, as the first walker that recognises it
    /// says (inputs that do not say their architecture).
    pub fn arch_from_vmcoreinfo(&self, v: &VmcoreInfo) -> Option<Arch> {
        self.walkers
            .iter()
            .find_map(|w| w.plugin.arch_from_vmcoreinfo(v))
    }

    /// The last-resort root scan ([`ArchWalker::scan_roots`]) of the walkers: for
    /// `arch` when given, else for every architecture a walker handles. The first
    /// answer wins.
    pub fn scan_roots(
        &self,
        arch: Option<Arch>,
        mem: &dyn dumpconv_core::PhysicalMemory,
        banners: &[u64],
        max_tables: usize,
    ) -> Result<Option<(CpuState, String)>> {
        for w in &self.walkers {
            for &a in w.plugin.arches() {
                if arch.is_some_and(|x| x != a) {
                    continue;
                }
                if let Some(found) = w
                    .plugin
                    .scan_roots(a, mem, banners, max_tables)?
                    .into_iter()
                    .next()
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// The kernel's own page-table root from VMCOREINFO, by the first walker for `arch`
    /// that finds one, with the walker's name. A walker plugin whose answer is malformed
    /// is an error.
    pub fn roots_from_vmcoreinfo(
        &self,
        arch: Arch,
        v: &VmcoreInfo,
    ) -> Result<Option<(CpuState, String)>> {
        for w in self.walkers_for(arch) {
            if let Some(c) = w.plugin.try_roots_from_vmcoreinfo(arch, v)? {
                return Ok(Some((c, w.plugin.name().to_string())));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_listed_and_chosen() {
        let r = Registry::builtin();
        let e = r.entries();
        assert!(e.iter().any(|e| e.kind == PluginKind::Walker
            && e.name == "x86"
            && e.origin == Origin::BuiltIn));
        assert_eq!(r.writer_names(), ["elf", "kdump", "raw", "lime", "avml"]);
        let (w, o) = r.walker_for(Arch::I386, Some("pae")).unwrap();
        assert_eq!((w.name(), o), ("x86", Origin::BuiltIn));
        assert!(r.walker_for(Arch::X86_64, Some("off")).is_err());
        assert!(r.walker_for(Arch::X86_64, Some("sv39")).is_err());
        let e = r
            .walker_for(Arch::from_elf(4242, true), None)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("no page-table walker handles em4242/64"),
            "{e}"
        );
        // --cr3/--paging-mode by name, aliases included.
        let c = r.cpu_from_root(None, "la57", 0x1000).unwrap();
        assert_eq!(c.reg("cr3"), Some(0x1000));
        let (w, _) = r
            .walker_for_cpus(std::slice::from_ref(&c), None, Arch::X86_64)
            .unwrap();
        assert_eq!(w.mode_of(&c).as_deref(), Some("5level"));
        assert!(r.cpu_from_root(None, "sv48", 0).is_err());
    }

    #[test]
    fn explicit_plugin_that_fails_is_an_error_scanned_one_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.so");
        std::fs::write(&bad, b"not elf").unwrap();
        let e = Registry::with_plugins(std::slice::from_ref(&bad), &[], false)
            .err()
            .unwrap();
        assert!(matches!(e, Error::Plugin { .. }) && e.to_string().contains("bad.so"));
        let (r, warnings) =
            Registry::with_plugins(&[], &[dir.path().to_path_buf()], false).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("bad.so"));
        assert_eq!(r.failed().len(), 1);
        assert_eq!(r.failed()[0].path, bad);
    }
}
