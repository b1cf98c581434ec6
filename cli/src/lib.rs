//! The dumpconv library: everything the `dumpconv` binary does, without clap or
//! indicatif, so a program can convert a dump with a few calls:
//!
//! ```no_run
//! use dumpconv::{convert, ConvertOptions, Output};
//! use dumpconv_core::NoProgress;
//! let opts = ConvertOptions { format: Some("elf".into()), ..ConvertOptions::default() };
//! convert("in.raw".as_ref(), &Output::Path("out.elf".into()), &opts, &NoProgress)?;
//! # Ok::<(), dumpconv_core::Error>(())
//! ```

pub mod batch;
pub mod compress;
pub mod digest;
pub mod filter;
pub mod numbers;
pub mod output;
pub mod pipeline;
pub mod registry;
pub mod roots;
pub mod schema;
pub mod split;

pub use output::Output;
pub use pipeline::{build_plan, convert, open_input, ConvertOptions, ConvertReport, PagingOptions};
pub use registry::Registry;
