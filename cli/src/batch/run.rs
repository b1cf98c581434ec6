//! Running a planned batch: journal decisions, a pool of workers with a thread budget
//! and memory admission, one result per job. A failing (or panicking) job never stops
//! the others.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use dumpconv_core::{Error, NoProgress, Progress, Result};

use super::journal::{Decision, Event, Journal, Stamp};
use super::options::{self, OptionMap};
use super::plan::{Job, Shard};
use super::report::{BatchReport, JobResult, JobStatus, VerifyStatus};
use super::verify;
use crate::output::Output;
use crate::pipeline::{convert_with, convert_with_digest};
use crate::registry::Registry;

const MIB: u64 = 1 << 20;

/// Test hook: when set, the output whose path contains this text gets one byte
/// flipped between writing and `--verify`, so the mismatch path can be tested through
/// the real binary. Never set it otherwise.
pub const CORRUPT_BEFORE_VERIFY_ENV: &str = "DUMPCONV_TEST_CORRUPT_BEFORE_VERIFY";

/// How to run a batch.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    pub out_dir: PathBuf,
    /// Conversions at once.
    pub jobs: usize,
    /// Cores to share among the jobs' compression threads.
    pub cores: usize,
    /// Start a job only when the memory estimates of the running ones plus its own fit
    /// (a job larger than the whole budget still runs, alone).
    pub max_memory: Option<u64>,
    /// Read every output back and compare its RAM with the input's.
    pub verify: bool,
    /// Replace outputs that exist and are not in the journal.
    pub force: bool,
    /// Skip a journaled job only if its output's BLAKE3 still matches.
    pub rehash: bool,
    /// Record each output's BLAKE3 in the journal and the report (taken while the
    /// output is written; a kdump output is read back once, see docs/batch.md).
    pub hash: bool,
    pub shard: Option<Shard>,
}

impl BatchSettings {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        let cores = dumpconv_core::numbers::default_threads();
        BatchSettings {
            out_dir: out_dir.into(),
            jobs: cores,
            cores,
            max_memory: None,
            verify: false,
            force: false,
            rehash: false,
            hash: true,
            shard: None,
        }
    }
}

/// Hears what a batch does (the command line draws bars from it).
pub trait BatchObserver: Sync {
    /// The batch starts `to_run` conversions; `skipped` were finished before.
    fn begin(&self, _to_run: usize, _skipped: usize) {}
    /// Progress sink for one conversion.
    fn job_started(&self, _job: &Job) -> Box<dyn Progress + '_> {
        Box::new(NoProgress)
    }
    fn job_finished(&self, _job: &Job, _result: &JobResult) {}
}

/// Observes nothing.
pub struct NoObserver;
impl BatchObserver for NoObserver {}

/// What the batch decided for each job before running any, for `--list`.
pub fn decisions(jobs: &[Job], settings: &BatchSettings) -> Result<Vec<Decision>> {
    let journal = Journal::open(&settings.out_dir, settings.shard)?;
    Ok(jobs
        .iter()
        .map(|j| {
            journal.decide(
                j,
                &options::job_hash(&j.options, &j.parts),
                settings.force,
                settings.rehash,
            )
        })
        .collect())
}

/// The compression threads each job gets: the cores shared by the jobs that run at
/// once, at least one.
pub fn threads_per_job(cores: usize, parallel: usize) -> usize {
    (cores / parallel.max(1)).max(1)
}

/// Upper estimate of one conversion's memory (see docs/batch.md): fixed buffers (1 MiB
/// sink buffer, 4 MiB copy chunk, reader state) plus, for kdump, 4 batches of 2 MiB in
/// and out per compression thread and the two bitmaps; for `paging`, the mapping list
/// at worst one 32-byte run per 4 KiB page; for `--verify`, one 4 MiB read buffer.
/// RAM is taken as the input's size (a compressed input is larger in RAM).
pub fn estimate_memory(job: &Job, threads: usize, input_size: u64, verify: bool) -> u64 {
    let mut bytes = 16 * MIB;
    if job.format == "kdump" {
        bytes += threads as u64 * 16 * MIB + input_size / 4096 / 4;
    }
    if job
        .options
        .get("paging")
        .and_then(|v| options::parse_bool(v))
        == Some(true)
    {
        bytes += input_size / 128;
    }
    if verify {
        bytes += 8 * MIB;
    }
    bytes
}

struct Pending {
    job: Job,
    options: OptionMap,
    options_hash: String,
    replace: bool,
    estimate: u64,
}

struct Admission {
    next: usize,
    memory_in_use: u64,
    running: usize,
}

/// Run `jobs` (already sharded) into `settings.out_dir`.
pub fn run_batch(
    registry: &Registry,
    jobs: Vec<Job>,
    settings: &BatchSettings,
    observer: &dyn BatchObserver,
) -> Result<BatchReport> {
    let start = Instant::now();
    // Locked before the journals are read: a second run of this shard into this
    // directory must not decide from a journal the first is still writing.
    let journal = Journal::lock(&settings.out_dir, settings.shard)?;
    let mut results = Vec::new();
    let mut pending = Vec::new();
    for job in jobs {
        let hash = options::job_hash(&job.options, &job.parts);
        match journal.decide(&job, &hash, settings.force, settings.rehash) {
            Decision::Skip(record) => {
                results.push(JobResult {
                    bytes_in: Stamp::of(&job.input).map_or(0, |s| s.size),
                    bytes_out: record.output_size,
                    blake3: (!record.blake3.is_empty()).then(|| record.blake3.clone()),
                    verify: record.verified.map(|v| {
                        if v {
                            VerifyStatus::Verified
                        } else {
                            VerifyStatus::Mismatch
                        }
                    }),
                    ..result(&job, JobStatus::Skipped)
                });
            }
            Decision::Refuse(msg) => results.push(JobResult {
                error: Some(msg),
                ..result(&job, JobStatus::Failed)
            }),
            Decision::Run { replace } => pending.push(Pending {
                options: job.options.clone(),
                options_hash: hash,
                replace,
                estimate: 0,
                job,
            }),
        }
    }
    let parallel = settings.jobs.max(1).min(pending.len().max(1));
    let threads = threads_per_job(settings.cores, parallel);
    for p in &mut pending {
        if p.job.format == "kdump" && !p.options.contains_key("threads") {
            p.options.insert("threads".into(), threads.to_string());
        }
        let t = p
            .options
            .get("threads")
            .and_then(|v| v.parse().ok())
            .unwrap_or(threads);
        let size = Stamp::of(&p.job.input).map_or(0, |s| s.size);
        p.estimate = estimate_memory(&p.job, t, size, settings.verify);
    }
    observer.begin(pending.len(), results.len());

    let admission = Mutex::new(Admission {
        next: 0,
        memory_in_use: 0,
        running: 0,
    });
    let wake = Condvar::new();
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                let Some(p) = admit(&admission, &wake, &pending, settings.max_memory) else {
                    return;
                };
                let r = run_one(registry, p, &journal, settings, observer);
                observer.job_finished(&p.job, &r);
                if let Ok(mut d) = done.lock() {
                    d.push(r);
                }
                if let Ok(mut a) = admission.lock() {
                    a.memory_in_use -= p.estimate;
                    a.running -= 1;
                }
                wake.notify_all();
            });
        }
    });
    results.extend(done.into_inner().unwrap_or_default());
    Ok(BatchReport::new(
        &settings.out_dir,
        settings.shard.map(|s| s.to_string()),
        parallel,
        results,
        start.elapsed().as_secs_f64(),
    ))
}

/// Take the next job in plan order once its memory estimate fits.
fn admit<'a>(
    admission: &Mutex<Admission>,
    wake: &Condvar,
    pending: &'a [Pending],
    max_memory: Option<u64>,
) -> Option<&'a Pending> {
    let mut a = admission.lock().ok()?;
    loop {
        let p = pending.get(a.next)?;
        let fits = match max_memory {
            None => true,
            Some(max) => a.running == 0 || a.memory_in_use + p.estimate <= max,
        };
        if fits {
            a.next += 1;
            a.running += 1;
            a.memory_in_use += p.estimate;
            return Some(p);
        }
        a = wake.wait(a).ok()?;
    }
}

fn result(job: &Job, status: JobStatus) -> JobResult {
    JobResult {
        index: job.index,
        input: job.input.clone(),
        output: job.output.clone(),
        origin: job.origin.clone(),
        format: job.format.clone(),
        status,
        seconds: 0.0,
        bytes_in: 0,
        bytes_out: 0,
        memory_bytes: 0,
        blake3: None,
        verify: None,
        error: None,
        warnings: Vec::new(),
        filter: None,
    }
}

/// An error message that names the input.
fn describe(e: &Error, input: &Path) -> String {
    let msg = e.to_string();
    let name = input.display().to_string();
    if msg.contains(&name) {
        msg
    } else {
        format!("{name}: {msg}")
    }
}

fn run_one(
    registry: &Registry,
    p: &Pending,
    journal: &Journal,
    settings: &BatchSettings,
    observer: &dyn BatchObserver,
) -> JobResult {
    let t = Instant::now();
    let job = &p.job;
    let mut r = result(job, JobStatus::Failed);
    r.bytes_in = Stamp::of(&job.input).map_or(0, |s| s.size);
    let progress = observer.job_started(job);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        convert_and_record(registry, p, journal, settings, progress.as_ref(), &mut r)
    }));
    progress.finish();
    match outcome {
        Ok(Ok(())) => r.status = JobStatus::Ok,
        Ok(Err(e)) => r.error = Some(describe(&e, &job.input)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            r.error = Some(format!(
                "{}: internal error (panic: {what}); please report it",
                job.input.display()
            ));
        }
    }
    r.seconds = t.elapsed().as_secs_f64();
    r
}

fn convert_and_record(
    registry: &Registry,
    p: &Pending,
    journal: &Journal,
    settings: &BatchSettings,
    progress: &dyn Progress,
    r: &mut JobResult,
) -> Result<()> {
    let job = &p.job;
    let mut opts = options::build(&p.options)?;
    opts.force = p.replace;
    opts.parts = job.parts.clone();
    journal.append(&journal.record(Event::Start, job, &p.options_hash))?;
    let output = Output::Path(job.output.clone());
    let convert = if settings.hash {
        convert_with_digest
    } else {
        convert_with
    };
    let report = convert(registry, &job.input, &output, &opts, progress)?;
    r.memory_bytes = report.memory_bytes;
    r.warnings = report.warnings;
    r.filter = report
        .filter
        .as_ref()
        .map(|f| super::report::FilterSummary {
            dump_level: f.applied,
            excluded_pages: f.excluded.iter().cloned().collect(),
            unclassified_pages: f.classes.as_ref().map_or(0, |c| c.unknown.values().sum()),
        });
    let mut verified = None;
    if settings.verify {
        corrupt_for_test(&job.output);
        // With a filter, the output holds only the pages kept: compare those.
        let kept = report.filter.as_ref().and_then(|f| f.kept.as_deref());
        let v = verify::verify(&job.input, &opts, &job.output, &job.format, kept, progress);
        let ok = matches!(&v, Ok(v) if v.matches());
        r.verify = Some(match &v {
            Ok(_) if ok => VerifyStatus::Verified,
            Ok(_) => VerifyStatus::Mismatch,
            Err(_) => VerifyStatus::Error,
        });
        if !ok {
            // A bad output must not stay where a finished one would be.
            let _ = std::fs::remove_file(&job.output);
            return Err(match v {
                Ok(v) => Error::invalid(format!(
                    "{}: --verify: the output's RAM differs from the input's \
                     (BLAKE3 {} against {} over {} bytes); output removed",
                    job.output.display(),
                    v.output_digest,
                    v.input_digest,
                    v.bytes
                )),
                Err(e) => Error::invalid(format!(
                    "{}: --verify: cannot read the output back: {e}; output removed",
                    job.output.display()
                )),
            });
        }
        verified = Some(true);
    }
    let hash = report.output_blake3.unwrap_or_default();
    let stamp = Stamp::of(&job.output).ok_or_else(|| {
        Error::invalid(format!("{}: vanished after writing", job.output.display()))
    })?;
    let mut rec = journal.record(Event::Done, job, &p.options_hash);
    rec.output_size = stamp.size;
    rec.output_mtime_ns = stamp.mtime_ns;
    rec.blake3 = hash.clone();
    rec.verified = verified;
    journal.append(&rec)?;
    r.bytes_out = stamp.size;
    r.blake3 = (!hash.is_empty()).then_some(hash);
    Ok(())
}

fn corrupt_for_test(output: &Path) {
    let Some(needle) = std::env::var_os(CORRUPT_BEFORE_VERIFY_ENV) else {
        return;
    };
    if !output
        .to_string_lossy()
        .contains(&*needle.to_string_lossy())
    {
        return;
    }
    use std::os::unix::fs::FileExt;
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(output)
    {
        let len = f.metadata().map_or(0, |m| m.len());
        let at = len / 2;
        let mut b = [0u8; 1];
        if f.read_exact_at(&mut b, at).is_ok() {
            b[0] ^= 0x5a;
            let _ = f.write_all_at(&b, at);
        }
    }
}
