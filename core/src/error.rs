//! One error type for the library crates. Every variant that comes from input data names
//! the file (when there is one) and the byte offset (when there is one).

use std::fmt;
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in an input a problem was found: a file and, optionally, an offset in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub path: Option<PathBuf>,
    pub offset: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.offset) {
            (Some(p), Some(o)) => write!(f, "{}: at offset {o:#x}: ", p.display()),
            (Some(p), None) => write!(f, "{}: ", p.display()),
            (None, Some(o)) => write!(f, "at offset {o:#x}: "),
            (None, None) => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error while reading an input.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The input's bytes do not follow its format (truncated, lying header, ...).
    #[error("{location}{format}: {msg}")]
    Format {
        location: Location,
        format: &'static str,
        msg: String,
    },
    /// No reader recognised the input.
    #[error("{}: unknown format ({msg})", path.display())]
    UnknownFormat { path: PathBuf, msg: String },
    /// A physical read touched an address that is not RAM in this dump.
    #[error("physical address {paddr:#x} is not in the dump's RAM")]
    Hole { paddr: u64 },
    /// A physical page exists in the dump's RAM map but its contents were not saved
    /// (excluded by a filter, or lost in an incomplete dump).
    #[error("physical page {paddr:#x} is {why}")]
    PageUnavailable { paddr: u64, why: &'static str },
    /// A page-table walk could not proceed.
    #[error("cpu {cpu}: page-table walk: {msg}")]
    Walk { cpu: u32, msg: String },
    /// Writing the output failed.
    #[error("{}: at offset {offset:#x}: {source}", path.display())]
    Output {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// A plugin misbehaved or was refused.
    #[error("plugin {}: {msg}", path.display())]
    Plugin { path: PathBuf, msg: String },
    /// The request cannot be carried out with this input (options, missing state, ...).
    #[error("{0}")]
    Invalid(String),
    /// Valid input that this build does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    /// A format error with a file and an offset.
    pub fn format(
        path: impl Into<Option<PathBuf>>,
        offset: impl Into<Option<u64>>,
        format: &'static str,
        msg: impl Into<String>,
    ) -> Self {
        Error::Format {
            location: Location {
                path: path.into(),
                offset: offset.into(),
            },
            format,
            msg: msg.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}
