//! What a batch did, per job: the summary table and `--report report.json`.

use std::path::{Path, PathBuf};

use dumpconv_core::{Error, Result};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Converted (and verified, with `--verify`) in this run.
    Ok,
    /// Finished by an earlier run (journal), not redone.
    Skipped,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Ok => "ok",
            JobStatus::Skipped => "skipped",
            JobStatus::Failed => "failed",
        }
    }
}

/// `--verify`'s verdict on one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyStatus {
    Verified,
    Mismatch,
    /// The output (or input) could not be read back.
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobResult {
    pub index: usize,
    pub input: PathBuf,
    pub output: PathBuf,
    pub origin: String,
    pub format: String,
    pub status: JobStatus,
    pub seconds: f64,
    /// Input file size.
    pub bytes_in: u64,
    /// Output file size (0 when there is none).
    pub bytes_out: u64,
    /// RAM bytes written.
    pub memory_bytes: u64,
    /// BLAKE3 of the output file, hex (what `b3sum` prints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Page filtering: the dump level applied and the pages left out per class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterSummary>,
}

/// A job's page filtering, for the JSON report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterSummary {
    pub dump_level: u8,
    /// Pages left out per class (zero pages of a kdump are stored once instead and
    /// not counted here).
    pub excluded_pages: std::collections::BTreeMap<String, u64>,
    /// RAM pages kept because they could not be classified.
    pub unclassified_pages: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub total: usize,
    pub ok: usize,
    pub skipped: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchReport {
    pub out_dir: PathBuf,
    /// `K/N` when the run was one shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub jobs_in_parallel: usize,
    pub wall_seconds: f64,
    pub counts: Counts,
    pub jobs: Vec<JobResult>,
}

impl BatchReport {
    pub fn new(
        out_dir: &Path,
        shard: Option<String>,
        parallel: usize,
        mut jobs: Vec<JobResult>,
        wall: f64,
    ) -> Self {
        jobs.sort_by_key(|j| j.index);
        let mut counts = Counts {
            total: jobs.len(),
            ..Counts::default()
        };
        for j in &jobs {
            match j.status {
                JobStatus::Ok => counts.ok += 1,
                JobStatus::Skipped => counts.skipped += 1,
                JobStatus::Failed => counts.failed += 1,
            }
        }
        BatchReport {
            out_dir: out_dir.to_path_buf(),
            shard,
            jobs_in_parallel: parallel,
            wall_seconds: wall,
            counts,
            jobs,
        }
    }

    /// True if no job failed.
    pub fn success(&self) -> bool {
        self.counts.failed == 0
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::internal(format!("report: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::Output {
            path: path.to_path_buf(),
            offset: 0,
            source: e,
        })
    }

    /// The summary table: one row per job, then the totals.
    pub fn table(&self) -> String {
        const MIB: f64 = (1 << 20) as f64;
        let rows: Vec<[String; 6]> = self
            .jobs
            .iter()
            .map(|j| {
                let status = match j.verify {
                    Some(VerifyStatus::Verified) => format!("{} verified", j.status.as_str()),
                    Some(VerifyStatus::Mismatch) => format!("{} MISMATCH", j.status.as_str()),
                    _ => j.status.as_str().to_string(),
                };
                [
                    j.input.display().to_string(),
                    status,
                    format!("{:.2}", j.seconds),
                    format!("{:.1}", j.bytes_in as f64 / MIB),
                    format!("{:.1}", j.bytes_out as f64 / MIB),
                    j.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let head = ["input", "status", "seconds", "in MiB", "out MiB", "error"];
        let mut width = head.map(str::len);
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r.iter()).take(5) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            format!(
                "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                w0 = width[0],
                w1 = width[1],
                w2 = width[2],
                w3 = width[3],
                w4 = width[4],
            )
            .trim_end()
            .to_string()
        };
        let mut out = line(head) + "\n";
        for r in &rows {
            out += &(line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]) + "\n");
        }
        let c = &self.counts;
        out += &format!(
            "{} jobs: {} ok, {} skipped, {} failed in {:.2} s ({} at a time)\n",
            c.total, c.ok, c.skipped, c.failed, self.wall_seconds, self.jobs_in_parallel
        );
        out
    }
}
