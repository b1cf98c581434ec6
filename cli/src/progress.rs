//! A progress bar on stderr (indicatif), hidden when stderr is not a terminal or with
//! `--quiet`. Warnings always go to stderr.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use dumpconv::batch::{BatchObserver, Job, JobResult};
use dumpconv_core::Progress;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct BarProgress {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl BarProgress {
    pub fn new(quiet: bool) -> Self {
        BarProgress {
            bar: Mutex::new(None),
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for BarProgress {
    fn start(&self, what: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg:>10} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        if let Ok(mut b) = self.bar.lock() {
            if let Some(old) = b.replace(bar) {
                old.finish_and_clear();
            }
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(bar) = b.as_ref() {
                bar.inc(n);
            }
        }
    }

    fn warn(&self, msg: &str) {
        match self.bar.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            Some(bar) => bar.println(format!("dumpconv: warning: {msg}")),
            None => eprintln!("dumpconv: warning: {msg}"),
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        }
    }
}

/// Bars for `dumpconv batch`: one overall bar (jobs done of those to run, RAM bytes
/// written) and one line per running job. Hidden like [`BarProgress`].
pub struct BatchBars {
    multi: Option<MultiProgress>,
    overall: OnceLock<ProgressBar>,
    bytes: AtomicU64,
}

impl BatchBars {
    pub fn new(quiet: bool) -> Self {
        let enabled = !quiet && std::io::stderr().is_terminal();
        BatchBars {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            overall: OnceLock::new(),
            bytes: AtomicU64::new(0),
        }
    }

    fn add_bytes(&self, n: u64) {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(o) = self.overall.get() {
            o.set_message(format!("{} written", HumanBytes(total)));
        }
    }
}

impl BatchObserver for BatchBars {
    fn begin(&self, to_run: usize, _skipped: usize) {
        if let Some(multi) = &self.multi {
            let bar = multi.add(ProgressBar::new(to_run as u64));
            let style = ProgressStyle::with_template(
                "batch [{bar:32}] {pos}/{len} jobs, {msg}, {elapsed_precise}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message("0 B written");
            let _ = self.overall.set(bar);
        }
    }

    fn job_started(&self, job: &Job) -> Box<dyn Progress + '_> {
        let name = job
            .input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(multi) = &self.multi else {
            return Box::new(JobBar {
                batch: self,
                bar: None,
                name,
                verifying: Default::default(),
            });
        };
        let bar = multi.add(ProgressBar::new(0));
        let style = ProgressStyle::with_template(
            "  {prefix:<28!} {msg:>10} [{bar:24}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.clone());
        Box::new(JobBar {
            batch: self,
            bar: Some(bar),
            name,
            verifying: Default::default(),
        })
    }

    fn job_finished(&self, job: &Job, result: &JobResult) {
        if let Some(o) = self.overall.get() {
            o.inc(1);
            if let Some(e) = &result.error {
                o.println(format!(
                    "dumpconv: batch: {} failed: {e}",
                    job.input.display()
                ));
            }
        }
    }
}

impl BatchBars {
    pub fn finish(&self) {
        if let Some(o) = self.overall.get() {
            o.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

/// One job's line.
/// The stage name `--verify` reports (dumpconv::batch::verify).
const VERIFYING: &str = dumpconv::batch::verify::STAGE;

struct JobBar<'a> {
    batch: &'a BatchBars,
    bar: Option<ProgressBar>,
    name: String,
    /// The job is reading its output back (`--verify`): its bytes are not RAM written,
    /// so they move the job's bar but not the batch's "written" total.
    verifying: std::sync::atomic::AtomicBool,
}

impl Progress for JobBar<'_> {
    fn start(&self, what: &str, total: u64) {
        self.verifying
            .store(what == VERIFYING, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(0);
            b.set_message(what.to_string());
        }
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if !self.verifying.load(std::sync::atomic::Ordering::Relaxed) {
            self.batch.add_bytes(n);
        }
    }

    fn warn(&self, msg: &str) {
        let line = format!("dumpconv: warning: {}: {msg}", self.name);
        match (&self.batch.multi, self.bar.is_some()) {
            (Some(m), true) => {
                let _ = m.println(line);
            }
            _ => eprintln!("{line}"),
        }
    }

    fn finish(&self) {}
}

impl Drop for JobBar<'_> {
    fn drop(&mut self) {
        if let (Some(m), Some(b)) = (&self.batch.multi, self.bar.take()) {
            b.finish_and_clear();
            m.remove(&b);
        }
    }
}
