//! Content detection: which reader opens a file, decided by its bytes, never its name.
//!
//! Every format with a signature is one [`Probe`] in [`PROBES`]; adding a format (kdump,
//! flattened, LiME, a compressed wrapper) is one line there. Raw images have no
//! signature, so they are the fallback, and only when the size looks like a memory
//! image (a whole number of pages): a random file must not be "converted" silently.

use std::path::{Path, PathBuf};

use dumpconv_core::{Dump, Error, Result, PAGE_SIZE};

use crate::input::Input;
pub use crate::options::OpenOptions;

/// One detectable format.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Format name, as `--input-format` takes it and [`Dump::format`] reports it.
    pub name: &'static str,
    /// True if the first bytes (up to [`crate::input::HEAD_LEN`], fewer for a short
    /// file) and the file length look like this format. Must be cheap and must not
    /// panic on any input.
    pub matches: fn(head: &[u8], file_len: u64) -> bool,
    /// Open the file as this format.
    pub open: fn(&Path, &OpenOptions) -> Result<Dump>,
}

/// The probes, tried in order; the first match wins. Put more specific signatures
/// before more general ones (a compressed wrapper before anything it may contain).
pub static PROBES: &[Probe] = &[
    Probe {
        name: "elf",
        matches: crate::elf::read::probe,
        open: crate::elf::read::open,
    },
    Probe {
        name: "kdump",
        matches: crate::kdump::reader::probe_head,
        open: crate::kdump::reader::open,
    },
    Probe {
        name: "lime",
        matches: crate::lime::probe,
        open: crate::lime::open,
    },
    Probe {
        name: "avml",
        matches: crate::avml::probe,
        open: crate::avml::open,
    },
    Probe {
        name: "libvirt-save",
        matches: crate::migration::libvirt::probe,
        open: crate::migration::libvirt::open,
    },
    Probe {
        name: "qcow2-savevm",
        matches: crate::qcow2::probe,
        open: crate::qcow2::open,
    },
    Probe {
        name: "qemu-migration",
        matches: crate::migration::probe,
        open: crate::migration::open,
    },
];

/// The formats besides raw that take a RAM map (`--ram-map`): VM save files, whose
/// machine type may have no known RAM layout.
const RAM_MAP_FORMATS: &[&str] = &["libvirt-save", "qcow2-savevm", "qemu-migration"];

/// Name of the raw format, which has no probe.
pub const RAW: &str = "raw";

/// How a format was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedBy {
    /// A probe recognised the content.
    Signature,
    /// `input_format` or a RAM map said so.
    Forced,
    /// No signature, but the size is a non-zero multiple of the page size.
    RawBySize,
}

/// The outcome of detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub path: PathBuf,
    /// Format name ("elf", "raw", ...).
    pub format: &'static str,
    pub file_len: u64,
    pub by: DetectedBy,
}

/// Names of all formats `input_format` accepts.
pub fn format_names() -> Vec<&'static str> {
    let mut v = vec![RAW];
    v.extend(PROBES.iter().map(|p| p.name));
    v
}

/// Detect the format of `path` from its content.
pub fn detect(path: &Path) -> Result<Detected> {
    detect_with(path, &OpenOptions::default()).map(|(d, _)| d)
}

/// Detect (or take the forced format) and open `path`. `-` (standard input) and named
/// pipes are read as streams, and compressed files decompressed, into a temporary file
/// first ([`crate::wrapped`]).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Dump> {
    if crate::wrapped::is_stream(path) {
        return crate::wrapped::open_stream(path, opts);
    }
    let (det, open) = detect_with(path, opts)?;
    if let Some(want) = &opts.snapshot {
        if det.format != "qcow2-savevm" {
            return Err(Error::invalid(format!(
                "--snapshot {want:?}: {} is a {} input, not a qcow2 image (only qcow2 \
                 images hold savevm snapshots)",
                path.display(),
                det.format
            )));
        }
    }
    open(path, opts)
}

/// A reader's open function.
pub type OpenFn = fn(&Path, &OpenOptions) -> Result<Dump>;

/// Detection honouring the options; also returns the reader to open with.
pub fn detect_with(path: &Path, opts: &OpenOptions) -> Result<(Detected, OpenFn)> {
    if path.as_os_str() == "-" {
        return Err(Error::invalid(
            "standard input (-) can be opened, not probed: detecting its format reads it",
        ));
    }
    // Refuse directories, empty files, pipes first, whatever was forced: their errors
    // say more than any format's would.
    let input = Input::open(path)?;
    let found = |format, by, open| {
        Ok((
            Detected {
                path: path.to_path_buf(),
                format,
                file_len: input.len,
                by,
            },
            open,
        ))
    };
    // A compressed wrapper is undone first, whatever was forced: the forced format
    // and a RAM map apply to what is inside.
    let head = input.head()?;
    if let Some(w) = crate::wrapped::Wrapper::detect(&head) {
        return found(
            w.name(),
            DetectedBy::Signature,
            crate::wrapped::open as OpenFn,
        );
    }
    let forced = opts.input_format.as_deref().map(str::to_ascii_lowercase);
    if let Some(name) = forced.as_deref() {
        if name == RAW {
            return found(RAW, DetectedBy::Forced, crate::raw::open as OpenFn);
        }
        if opts.ram_map.is_some() && !RAM_MAP_FORMATS.contains(&name) {
            return Err(Error::invalid(format!(
                "a RAM map only applies to raw images and VM save files, not to input \
                 format {name:?}"
            )));
        }
        return match PROBES.iter().find(|p| p.name == name) {
            Some(p) => found(p.name, DetectedBy::Forced, p.open),
            None => Err(Error::invalid(format!(
                "unknown input format {name:?} (known: {})",
                format_names().join(", ")
            ))),
        };
    }
    if opts.ram_map.is_some() {
        // A RAM map declares a raw image's RAM, or places a VM save file's RAM for a
        // machine type with no known layout: every other format knows its own RAM.
        if let Some(p) = PROBES
            .iter()
            .filter(|p| RAM_MAP_FORMATS.contains(&p.name))
            .find(|p| (p.matches)(&head, input.len))
        {
            return found(p.name, DetectedBy::Signature, p.open);
        }
        return found(RAW, DetectedBy::Forced, crate::raw::open as OpenFn);
    }
    if let Some(p) = PROBES.iter().find(|p| (p.matches)(&head, input.len)) {
        return found(p.name, DetectedBy::Signature, p.open);
    }
    if input.len % PAGE_SIZE == 0 {
        return found(RAW, DetectedBy::RawBySize, crate::raw::open as OpenFn);
    }
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(Error::UnknownFormat {
        path: path.to_path_buf(),
        msg: format!(
            "no known signature (file starts with {}; formats tried: {}), and its size \
             {:#x} is not a multiple of {PAGE_SIZE} as a raw memory image's would be; \
             if it really is a raw image, use --input-format raw",
            shown.join(" "),
            PROBES.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
            input.len
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dumpconv_core::PhysRange;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn empty_file_is_an_error_naming_the_path() {
        let f = file(&[]);
        let p = f.path().display().to_string();
        let e = open(f.path(), &OpenOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&p) && e.contains("empty"), "{e}");
        // Forcing raw does not make an empty file a dump.
        let opts = OpenOptions {
            input_format: Some("raw".into()),
            ..OpenOptions::default()
        };
        assert!(open(f.path(), &opts).is_err());
    }

    #[test]
    fn directory_is_an_error_naming_the_path() {
        let d = tempfile::tempdir().unwrap();
        let e = open(d.path(), &OpenOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&d.path().display().to_string()) && e.contains("directory"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_is_an_error_naming_the_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope.elf");
        let e = detect(&p).unwrap_err().to_string();
        assert!(e.contains("nope.elf"), "{e}");
    }

    #[test]
    fn unknown_format_suggests_raw() {
        let f = file(b"hello, this is not a dump\n");
        let e = open(f.path(), &OpenOptions::default()).unwrap_err();
        assert!(matches!(e, Error::UnknownFormat { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("--input-format raw"), "{e}");
        // ...and forcing raw then works.
        let opts = OpenOptions {
            input_format: Some("RAW".into()),
            ..OpenOptions::default()
        };
        let d = open(f.path(), &opts).unwrap();
        assert_eq!(d.format, "raw");
        assert_eq!(d.memory.ranges(), &[PhysRange::new(0, 26)]);
    }

    #[test]
    fn page_multiple_without_signature_is_raw() {
        let f = file(&[0u8; 8192]);
        let d = detect(f.path()).unwrap();
        assert_eq!((d.format, d.by), ("raw", DetectedBy::RawBySize));
        assert_eq!(d.file_len, 8192);
    }

    #[test]
    fn name_does_not_matter_and_forcing_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.elf");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        assert_eq!(detect(&p).unwrap().format, "raw");
        let bad = OpenOptions {
            input_format: Some("vhd".into()),
            ..OpenOptions::default()
        };
        let e = open(&p, &bad).unwrap_err().to_string();
        assert!(e.contains("raw, elf"), "{e}");
        let conflicting = OpenOptions {
            input_format: Some("elf".into()),
            ram_map: Some(vec![PhysRange::new(0, 4096)]),
            ..OpenOptions::default()
        };
        assert!(open(&p, &conflicting).is_err());
        // A RAM map alone forces raw.
        let map = OpenOptions {
            ram_map: Some(vec![PhysRange::new(0, 4096)]),
            ..OpenOptions::default()
        };
        assert_eq!(detect_with(&p, &map).unwrap().0.by, DetectedBy::Forced);
    }
}
