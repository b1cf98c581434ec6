//! Parsing of the numbers users type; the parser lives in `dumpconv_core::numbers` so
//! the library can read sizes from the environment (`$DUMPCONV_MAX_SPILL`) too.

pub use dumpconv_core::numbers::parse_u64;
