//! Progress reporting: writers report bytes done; the CLI draws a bar, a library user
//! may log or ignore it.

pub trait Progress: Send + Sync {
    /// A new phase with `total` units of work (bytes unless said otherwise).
    fn start(&self, _what: &str, _total: u64) {}
    /// `n` more units done.
    fn advance(&self, _n: u64) {}
    /// Something the user should know that is not an error.
    fn warn(&self, _msg: &str) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
