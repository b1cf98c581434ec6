//! The error type the library crates share. Every variant that comes from input data
//! names the file (when there is one) and the byte offset (when there is one), and every
//! variant belongs to one [`ErrorClass`], which decides the command's exit code: bad
//! input, bad usage, output failure, plugin misbehaviour, or a broken internal invariant
//! (a bug in dumpconv). A crate with failures of its own defines its own error type
//! (`dumpconv_formats::bytes::ShortRead`: a field past the end of a record, which knows
//! the offset but not the file) and turns it into one of these variants where the file
//! is known.

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
    /// A compressor failed while producing the output (zlib, zstd, snappy, lzo...).
    #[error("{codec} compressor failed: {msg}")]
    Encode { codec: &'static str, msg: String },
    /// An invariant of dumpconv's own code does not hold: a bug, not the user's input or
    /// options. The message says which invariant.
    #[error("internal error (a bug in dumpconv, please report it): {0}")]
    Internal(String),
}

/// What kind of failure an [`Error`] is, and so the command's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The input cannot be read or does not follow its format (exit code 1).
    Input,
    /// The request cannot be carried out: options, arguments, unsupported input (2).
    Usage,
    /// The output could not be produced: writing, syncing, compressing it (3).
    Output,
    /// A plugin misbehaved or could not be loaded (4).
    Plugin,
    /// A broken internal invariant: a bug in dumpconv (5).
    Internal,
}

impl ErrorClass {
    /// The exit code `dumpconv` ends with for this class (documented in `--help` and
    /// README.md).
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Input => 1,
            ErrorClass::Usage => 2,
            ErrorClass::Output => 3,
            ErrorClass::Plugin => 4,
            ErrorClass::Internal => 5,
        }
    }
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

    /// A broken invariant of dumpconv's own code.
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// A compressor's failure while producing the output.
    pub fn encode(codec: &'static str, msg: impl fmt::Display) -> Self {
        Error::Encode {
            codec,
            msg: msg.to_string(),
        }
    }

    /// Which kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Io { .. }
            | Error::Format { .. }
            | Error::UnknownFormat { .. }
            | Error::Hole { .. }
            | Error::PageUnavailable { .. }
            | Error::Walk { .. } => ErrorClass::Input,
            Error::Invalid(_) | Error::Unsupported(_) => ErrorClass::Usage,
            Error::Output { .. } | Error::Encode { .. } => ErrorClass::Output,
            Error::Plugin { .. } => ErrorClass::Plugin,
            Error::Internal(_) => ErrorClass::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_exit_codes() {
        let cases = [
            (Error::format(None, 0u64, "x", "bad"), 1),
            (Error::Hole { paddr: 0 }, 1),
            (Error::invalid("bad option"), 2),
            (Error::Unsupported("arm".into()), 2),
            (
                Error::Output {
                    path: "o".into(),
                    offset: 0,
                    source: io::Error::other("full"),
                },
                3,
            ),
            (Error::encode("zstd", "out of memory"), 3),
            (
                Error::Plugin {
                    path: "p.so".into(),
                    msg: "panicked".into(),
                },
                4,
            ),
            (Error::internal("a piece made no progress"), 5),
        ];
        for (e, code) in cases {
            assert_eq!(e.class().exit_code(), code, "{e}");
        }
        assert!(Error::internal("x").to_string().contains("bug in dumpconv"));
    }
}
