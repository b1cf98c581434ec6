//! `dumpconv batch`: many conversions at once, resumable, splittable across machines.
//!
//! ```no_run
//! use dumpconv::batch::{self, BatchSettings, NoObserver, PlanSettings};
//! use dumpconv::Registry;
//! let registry = Registry::builtin();
//! let specs = batch::plan::expand_inputs(&["dumps/".to_string()])?;
//! let settings = PlanSettings {
//!     out_dir: "out".into(),
//!     template: batch::plan::DEFAULT_TEMPLATE.into(),
//!     options: batch::options::parse_words("format=kdump compress=zstd").unwrap(),
//! };
//! let jobs = batch::plan::plan(specs, &settings, &registry)?;
//! let report = batch::run_batch(&registry, jobs, &BatchSettings::new("out"), &NoObserver)?;
//! println!("{}", report.table());
//! # Ok::<(), dumpconv_core::Error>(())
//! ```
//!
//! - [`plan`]: inputs (directories, patterns, manifests) → jobs, output names, shards.
//! - [`manifest`]: CSV and JSON-lines manifests.
//! - [`options`]: the per-job option vocabulary (`convert`'s flags as `key=value`).
//! - [`journal`]: what is finished, so a rerun skips it.
//! - [`run`]: the worker pool (thread budget, memory admission).
//! - [`verify`]: read outputs back and compare RAM digests.
//! - [`report`]: per-job results, the summary table, `report.json`.

pub mod glob;
pub mod journal;
pub mod manifest;
pub mod options;
pub mod plan;
pub mod report;
pub mod run;
pub mod verify;

pub use plan::{Job, PlanSettings, Shard};
pub use report::{BatchReport, JobResult, JobStatus, VerifyStatus};
pub use run::{run_batch, BatchObserver, BatchSettings, NoObserver};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
