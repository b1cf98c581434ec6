//! Finding, checking and loading plugin libraries.
//!
//! Before a library is opened (which runs its initialisers), its file is read
//! statically with `object`: it must be a shared library for this machine exporting
//! `dumpconv_plugin_entry` and `dumpconv_plugin_abi`, and the latter's value, read from
//! its section's bytes, must be this dumpconv's ABI major. Only then is it opened
//! (`RTLD_NOW | RTLD_LOCAL`), its entry called and the descriptor checked
//! ([`wrap_descriptor`]). Libraries are never unloaded: their handles are leaked on
//! purpose, since unloading a library whose TLS destructors or statics are still
//! referenced crashes the host (the reason plugin systems built on libloading leak their
//! libraries).

#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use object::{Object, ObjectKind, ObjectSection, ObjectSymbol};

use super::abi;
use super::host::{wrap_descriptor, LoadedPlugin};
use crate::error::{Error, Result};

/// Larger files are not plugins (and would be read whole for the static check).
const MAX_LIBRARY_SIZE: u64 = 1 << 30;

fn plugin_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::Plugin {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The architecture shared libraries must have to load into this process.
fn host_architecture() -> Option<object::Architecture> {
    use object::Architecture as A;
    if cfg!(target_arch = "x86_64") {
        Some(A::X86_64)
    } else if cfg!(target_arch = "x86") {
        Some(A::I386)
    } else if cfg!(target_arch = "aarch64") {
        Some(A::Aarch64)
    } else {
        None
    }
}

/// What the static check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The value of `dumpconv_plugin_abi`.
    pub abi_major: u32,
}

/// Check a library without running any of its code: shared library, this machine's
/// architecture, both symbols exported, `dumpconv_plugin_abi` equal to
/// [`abi::DUMPCONV_ABI_MAJOR`].
pub fn probe(path: &Path) -> Result<Probe> {
    let meta = std::fs::metadata(path).map_err(|e| plugin_error(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(plugin_error(path, "not a regular file"));
    }
    if meta.len() > MAX_LIBRARY_SIZE {
        return Err(plugin_error(
            path,
            format!("{} bytes is too large for a plugin", meta.len()),
        ));
    }
    let data = std::fs::read(path).map_err(|e| plugin_error(path, e.to_string()))?;
    let file = object::File::parse(&*data)
        .map_err(|e| plugin_error(path, format!("not a shared library ({e})")))?;
    if file.kind() != ObjectKind::Dynamic {
        return Err(plugin_error(
            path,
            format!("not a shared library (object kind {:?})", file.kind()),
        ));
    }
    let arch = file.architecture();
    if host_architecture() != Some(arch) || file.is_64() != cfg!(target_pointer_width = "64") {
        return Err(plugin_error(
            path,
            format!(
                "built for {arch:?} ({}-bit), not for this machine ({})",
                if file.is_64() { 64 } else { 32 },
                std::env::consts::ARCH
            ),
        ));
    }
    let find = |name: &str| {
        file.dynamic_symbols()
            .find(|s| s.name() == Ok(name) && s.is_definition())
    };
    if find(abi::DUMPCONV_ENTRY_SYMBOL).is_none() {
        return Err(plugin_error(
            path,
            format!(
                "does not export {} (not a dumpconv plugin?)",
                abi::DUMPCONV_ENTRY_SYMBOL
            ),
        ));
    }
    let sym = find(abi::DUMPCONV_ABI_SYMBOL).ok_or_else(|| {
        plugin_error(
            path,
            format!(
                "does not export {} (built without the dumpconv SDK or header?)",
                abi::DUMPCONV_ABI_SYMBOL
            ),
        )
    })?;
    if sym.size() != 0 && sym.size() != 4 {
        return Err(plugin_error(
            path,
            format!(
                "{} is {} bytes, not a uint32_t",
                abi::DUMPCONV_ABI_SYMBOL,
                sym.size()
            ),
        ));
    }
    let abi_major = symbol_u32(&file, &sym).ok_or_else(|| {
        plugin_error(
            path,
            format!(
                "cannot read the value of {} from the file (is it const and initialised?)",
                abi::DUMPCONV_ABI_SYMBOL
            ),
        )
    })?;
    if !super::host::SUPPORTED_ABI.contains(&abi_major) {
        return Err(plugin_error(
            path,
            format!(
                "plugin ABI major version {abi_major}, this dumpconv speaks {} and {} \
                 (rebuild the plugin against this dumpconv's dumpconv_plugin.h or SDK)",
                abi::v1::DUMPCONV_ABI_MAJOR,
                abi::DUMPCONV_ABI_MAJOR
            ),
        ));
    }
    Ok(Probe { abi_major })
}

/// The 4 bytes a data symbol holds in the file, in the file's byte order.
fn symbol_u32<'d>(file: &object::File<'d>, sym: &object::Symbol<'d, '_>) -> Option<u32> {
    let section = file.section_by_index(sym.section_index()?).ok()?;
    let off = sym.address().checked_sub(section.address())?;
    // A .bss symbol has no bytes in the file: data() is empty and the lookup fails.
    let data = section.data().ok()?;
    let start = usize::try_from(off).ok()?;
    let b: [u8; 4] = data.get(start..start.checked_add(4)?)?.try_into().ok()?;
    Some(if file.is_little_endian() {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    })
}

/// Check, open and wrap one library. Every failure is an [`Error::Plugin`] naming it.
pub fn load(path: &Path) -> Result<LoadedPlugin> {
    probe(path)?;
    use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: opening a library runs its initialisers; the user asked for this library
    // (command line, plugin directory) and the static check above found a dumpconv
    // plugin for this machine. RTLD_NOW makes missing symbols fail here, not later.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| plugin_error(path, format!("cannot be loaded: {e}")))?;
    let entry: abi::EntryFn = {
        // SAFETY: the symbol has the type dumpconv_entry_fn by the ABI's contract; it is
        // copied out as a plain function pointer, valid as long as the library, which
        // is never unloaded (below).
        let sym: Symbol<abi::EntryFn> =
            unsafe { lib.get(abi::DUMPCONV_ENTRY_SYMBOL.as_bytes()) }
                .map_err(|e| plugin_error(path, format!("no entry function: {e}")))?;
        *sym
    };
    // Never unload: see the module comment.
    std::mem::forget(lib);
    // SAFETY: calling the entry function the ABI defines; it takes no arguments.
    let desc = unsafe { entry() };
    // SAFETY: the descriptor is static in a library that is never unloaded.
    unsafe { wrap_descriptor(path, desc) }
}

/// The directories scanned for plugins, in order: every entry of
/// `$DUMPCONV_PLUGIN_PATH` (colon-separated), then the per-user directory
/// `$XDG_DATA_HOME/dumpconv/plugins` (default `~/.local/share/dumpconv/plugins`).
/// Arguments are the variables' values, so that callers and tests choose the
/// environment.
pub fn plugin_dirs(
    plugin_path: Option<&OsStr>,
    xdg_data_home: Option<&OsStr>,
    home: Option<&OsStr>,
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = plugin_path
        .map(|p| {
            std::env::split_paths(p)
                .filter(|d| !d.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    // The XDG spec ignores relative values.
    let data_home = xdg_data_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| Path::new(h).join(".local/share")));
    if let Some(d) = data_home {
        dirs.push(d.join("dumpconv/plugins"));
    }
    dirs
}

/// [`plugin_dirs`] from this process's environment.
pub fn plugin_dirs_from_env() -> Vec<PathBuf> {
    plugin_dirs(
        std::env::var_os("DUMPCONV_PLUGIN_PATH").as_deref(),
        std::env::var_os("XDG_DATA_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

/// The `*.so` files of a directory, sorted by name. A directory that does not exist
/// holds none; one that cannot be read is an error.
pub fn scan_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(plugin_error(dir, format!("cannot list directory: {e}"))),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| plugin_error(dir, format!("cannot list directory: {e}")))?;
        let p = e.path();
        if p.extension() == Some(OsStr::new("so")) && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_follow_env_then_xdg() {
        let d = plugin_dirs(
            Some(OsStr::new("/a::/b")),
            Some(OsStr::new("/x")),
            Some(OsStr::new("/h")),
        );
        assert_eq!(
            d,
            [
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/x/dumpconv/plugins")
            ]
        );
        let d = plugin_dirs(None, Some(OsStr::new("rel")), Some(OsStr::new("/h")));
        assert_eq!(d, [PathBuf::from("/h/.local/share/dumpconv/plugins")]);
        assert!(plugin_dirs(None, None, None).is_empty());
    }

    #[test]
    fn scan_finds_only_so_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.so", "a.so", "c.txt", "d.so.1"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("e.so")).unwrap();
        let found = scan_dir(dir.path()).unwrap();
        assert_eq!(found, [dir.path().join("a.so"), dir.path().join("b.so")]);
        assert!(scan_dir(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn probe_refuses_what_is_not_a_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.so");
        std::fs::write(&text, b"hello").unwrap();
        let e = probe(&text).unwrap_err().to_string();
        assert!(
            e.contains("text.so") && e.contains("not a shared library"),
            "{e}"
        );
        // The test executable is an ELF file but not a shared library with our symbols.
        let exe = std::env::current_exe().unwrap();
        let e = probe(&exe).unwrap_err().to_string();
        assert!(
            e.contains("not a shared library") || e.contains("does not export"),
            "{e}"
        );
        let e = load(&dir.path().join("none.so")).unwrap_err();
        assert!(matches!(e, Error::Plugin { .. }), "{e}");
    }
}
