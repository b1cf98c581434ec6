//! How to open an input: the options every reader takes. A module of its own so that the
//! readers and [`crate::detect`] (which calls the readers) both depend on it, not on each
//! other.

use std::path::PathBuf;

use dumpconv_core::PhysRange;

/// How to open an input.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Force a format by name ("raw", "elf", or any probe's name) instead of detecting
    /// it. Case-insensitive.
    pub input_format: Option<String>,
    /// RAM ranges of a raw image (`--ram-map`); giving one implies raw.
    pub ram_map: Option<Vec<PhysRange>>,
    /// Directory for the temporary copy of a compressed or streamed input (see
    /// [`crate::wrapped`]); default `$DUMPCONV_SPILL_DIR`, else `$TMPDIR`.
    pub spill_dir: Option<PathBuf>,
    /// Largest decompressed size a compressed or streamed input may have (holes
    /// included), else `$DUMPCONV_MAX_SPILL`, else no limit: a stream that grows past it
    /// fails as soon as it does. A guard against decompression bombs, whose all-zero
    /// pages cost no disk but minutes of CPU (see [`crate::wrapped`]).
    pub max_spill: Option<u64>,
    /// The `savevm` snapshot of a qcow2 image to read, by ID or name (`--snapshot`);
    /// default: the only one with VM state, else the newest (see [`crate::qcow2`]).
    pub snapshot: Option<String>,
}
