//! The batch journal: what was finished, so a rerun skips it.
//!
//! One JSON line per event in `OUT_DIR/.dumpconv-journal.jsonl` (a shard writes its own
//! `.dumpconv-journal.shard-K-of-N.jsonl`, so the processes of a job array sharing one
//! directory never append to the same file). A rerun reads every journal file of the
//! directory.
//!
//! - `start` is appended before a conversion begins, `done` after its output was renamed
//!   into place (and verified, with `--verify`). An output whose latest record is
//!   `start` was being made by us when the process died: it is redone, and the file at
//!   its name (complete or not: the crash may have fallen between the rename and the
//!   `done` line) is replaced. An output with no record at all is someone else's file:
//!   the job fails rather than overwrite it, unless `--force`.
//! - A job is skipped when its output's latest record is `done` for the same input
//!   (canonical path, size, mtime) and the same options (their hash, thread count aside), and the
//!   output file still has the recorded size and mtime. The BLAKE3 of the output is
//!   recorded too; `--rehash` checks it instead of the mtime (it reads every output).
//! - Lines are versioned (`v`). Version 2 records the output's BLAKE3 (`blake3`);
//!   version 1 lines (no `v`) recorded a SHA-256 (`sha256`), which is not read: such a
//!   record's hash is unknown. It still skips on size and mtime, and `--rehash` redoes
//!   the job, as for a record written with `--no-hash`.
//! - A line that does not parse (a torn last line after a crash) is ignored.
//! - A run holds an exclusive advisory lock (`flock`) on the journal file it appends to
//!   for as long as it runs ([`Journal::lock`]), taken before the journals are read, so
//!   the same shard (or two unsharded runs) started twice into one directory cannot
//!   both convert a job: the second fails at once. Different shards lock different
//!   files and run side by side.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dumpconv_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::plan::{Job, Shard, JOURNAL_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Start,
    Done,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Line format version: [`JOURNAL_VERSION`]; 1 when absent (SHA-256 era).
    #[serde(default = "version_1")]
    pub v: u32,
    pub event: Event,
    /// Output path, relative to the out dir when inside it.
    pub output: String,
    pub input: String,
    pub input_size: u64,
    pub input_mtime_ns: i128,
    pub options_hash: String,
    #[serde(default)]
    pub output_size: u64,
    #[serde(default)]
    pub output_mtime_ns: i128,
    /// BLAKE3 of the output, hex; empty when unknown (`--no-hash`, version 1 lines).
    #[serde(default)]
    pub blake3: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// When the line was written (ns since the epoch); the latest record wins.
    pub time_ns: i128,
}

/// The version of the lines this build writes.
pub const JOURNAL_VERSION: u32 = 2;

fn version_1() -> u32 {
    1
}

/// Size and modification time of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
}

impl Stamp {
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        m.is_file().then(|| Stamp {
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

/// What to do with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Finished by an earlier run: its `done` record.
    Skip(Box<Record>),
    /// Convert; `replace` when a file at the output's name may be replaced.
    Run { replace: bool },
    /// The output exists and is not ours.
    Refuse(String),
}

pub struct Journal {
    out_dir: PathBuf,
    path: PathBuf,
    file: Mutex<Option<File>>,
    latest: HashMap<String, Record>,
    /// Lines that did not parse, reported once.
    pub ignored_lines: usize,
}

/// The journal file a run appends to.
pub fn file_name(shard: Option<Shard>) -> String {
    match shard {
        None => format!("{JOURNAL_PREFIX}.jsonl"),
        Some(s) => format!("{JOURNAL_PREFIX}.shard-{}-of-{}.jsonl", s.index, s.count),
    }
}

/// The input as the journal names it: its canonical path, so the same file reached
/// through another working directory or a `..` is recognised.
fn input_name(input: &Path) -> String {
    std::fs::canonicalize(input)
        .unwrap_or_else(|_| input.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl Journal {
    /// Read every journal in `out_dir` (which need not exist yet). The file to append
    /// to is created on the first record.
    pub fn open(out_dir: &Path, shard: Option<Shard>) -> Result<Journal> {
        let mut j = Journal {
            out_dir: out_dir.to_path_buf(),
            path: out_dir.join(file_name(shard)),
            file: Mutex::new(None),
            latest: HashMap::new(),
            ignored_lines: 0,
        };
        let Ok(entries) = std::fs::read_dir(out_dir) else {
            return Ok(j);
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(JOURNAL_PREFIX) && n.ends_with(".jsonl"))
            })
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str::<Record>(line) {
                    Ok(r) => {
                        let newer = j
                            .latest
                            .get(&r.output)
                            .is_none_or(|old| old.time_ns <= r.time_ns);
                        if newer {
                            j.latest.insert(r.output.clone(), r);
                        }
                    }
                    Err(_) => j.ignored_lines += 1,
                }
            }
        }
        Ok(j)
    }

    /// [`Journal::open`] for a run: create `out_dir` and this run's journal file, and
    /// take an exclusive, non-blocking lock on that file first, held until the journal
    /// is dropped (the end of the run; the kernel drops it if the process dies). Another
    /// process holding it (the same shard, or another unsharded run, into the same
    /// directory) is a usage error naming the directory. A file system that cannot lock
    /// is an output error: running unlocked would bring back the double conversion.
    pub fn lock(out_dir: &Path, shard: Option<Shard>) -> Result<Journal> {
        let path = out_dir.join(file_name(shard));
        let err = |e| Error::Output {
            path: path.clone(),
            offset: 0,
            source: e,
        };
        std::fs::create_dir_all(out_dir).map_err(|e| Error::Output {
            path: out_dir.to_path_buf(),
            offset: 0,
            source: e,
        })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::invalid(format!(
                    "{}: another dumpconv batch is running there (it holds the lock on {}: \
                     the same {} into the same directory); wait for it to finish or use \
                     another --out-dir",
                    out_dir.display(),
                    file_name(shard),
                    match shard {
                        Some(s) => format!("--shard {s}"),
                        None => "unsharded batch".to_string(),
                    }
                )))
            }
            Err(TryLockError::Error(e)) => {
                return Err(err(std::io::Error::new(
                    e.kind(),
                    format!("cannot lock the batch journal: {e}"),
                )))
            }
        }
        let mut j = Journal::open(out_dir, shard)?;
        j.file = Mutex::new(Some(file));
        Ok(j)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal's name for an output.
    pub fn key(&self, output: &Path) -> String {
        output
            .strip_prefix(&self.out_dir)
            .unwrap_or(output)
            .to_string_lossy()
            .into_owned()
    }

    /// Decide whether `job` must run. `rehash`: compare the output's BLAKE3 with the
    /// journal's instead of its mtime.
    pub fn decide(&self, job: &Job, options_hash: &str, force: bool, rehash: bool) -> Decision {
        let key = self.key(&job.output);
        let record = self.latest.get(&key);
        let Some(out) = Stamp::of(&job.output) else {
            return Decision::Run { replace: force };
        };
        let Some(record) = record else {
            return if force {
                Decision::Run { replace: true }
            } else {
                Decision::Refuse(format!(
                    "{}: already exists and is not in the batch journal (use --force to replace it)",
                    job.output.display()
                ))
            };
        };
        let input = Stamp::of(&job.input);
        let same_input = record.input == input_name(&job.input)
            && input.is_some_and(|s| {
                s.size == record.input_size && s.mtime_ns == record.input_mtime_ns
            });
        let same_output = out.size == record.output_size
            && if rehash {
                // An entry with no known hash (--no-hash, a version 1 line) cannot be
                // checked: redo it.
                !record.blake3.is_empty()
                    && crate::digest::file_blake3(&job.output).is_ok_and(|h| h == record.blake3)
            } else {
                out.mtime_ns == record.output_mtime_ns
            };
        if record.event == Event::Done
            && same_input
            && record.options_hash == options_hash
            && same_output
        {
            Decision::Skip(Box::new(record.clone()))
        } else {
            Decision::Run { replace: true }
        }
    }

    /// A record for `job` (output fields empty).
    pub fn record(&self, event: Event, job: &Job, options_hash: &str) -> Record {
        let input = Stamp::of(&job.input);
        Record {
            v: JOURNAL_VERSION,
            event,
            output: self.key(&job.output),
            input: input_name(&job.input),
            input_size: input.map_or(0, |s| s.size),
            input_mtime_ns: input.map_or(0, |s| s.mtime_ns),
            options_hash: options_hash.to_string(),
            output_size: 0,
            output_mtime_ns: 0,
            blake3: String::new(),
            verified: None,
            time_ns: now_ns(),
        }
    }

    /// Append one record and flush it to disk.
    pub fn append(&self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record)
            .map_err(|e| Error::internal(format!("journal record: {e}")))?;
        line.push('\n');
        let err = |e| Error::Output {
            path: self.path.clone(),
            offset: 0,
            source: e,
        };
        let mut guard = self
            .file
            .lock()
            .map_err(|_| Error::internal("journal lock poisoned"))?;
        if guard.is_none() {
            std::fs::create_dir_all(&self.out_dir).map_err(err)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(err)?;
            *guard = Some(f);
        }
        if let Some(f) = guard.as_mut() {
            // One write per line: O_APPEND keeps lines whole.
            f.write_all(line.as_bytes()).map_err(err)?;
            f.sync_data().map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &Path) -> Job {
        Job {
            index: 0,
            input: dir.join("in.raw"),
            parts: Vec::new(),
            output: dir.join("out/in.elf"),
            options: Default::default(),
            format: "elf".into(),
            origin: "test".into(),
        }
    }

    /// A `done` line for `job`'s current files, as an earlier build wrote it: no `v`,
    /// a `sha256` field.
    fn version_1_line(j: &Job, journal: &Journal) -> String {
        let input = Stamp::of(&j.input).unwrap();
        let out = Stamp::of(&j.output).unwrap();
        serde_json::json!({
            "event": "done",
            "output": journal.key(&j.output),
            "input": input_name(&j.input),
            "input_size": input.size,
            "input_mtime_ns": input.mtime_ns,
            "options_hash": "h",
            "output_size": out.size,
            "output_mtime_ns": out.mtime_ns,
            "sha256": "00".repeat(32),
            "time_ns": 1,
        })
        .to_string()
    }

    #[test]
    fn a_version_1_record_skips_on_size_and_mtime_but_its_hash_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(dir.path());
        let out_dir = dir.path().join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::write(&j.input, [1u8; 4096]).unwrap();
        std::fs::write(&j.output, b"output bytes").unwrap();
        let empty = Journal::open(&out_dir, None).unwrap();
        let line = version_1_line(&j, &empty);
        std::fs::write(out_dir.join(file_name(None)), format!("{line}\n")).unwrap();

        let journal = Journal::open(&out_dir, None).unwrap();
        assert_eq!(journal.ignored_lines, 0);
        match journal.decide(&j, "h", false, false) {
            Decision::Skip(r) => {
                assert_eq!(r.v, 1);
                assert_eq!(r.blake3, "");
            }
            d => panic!("expected a skip, got {d:?}"),
        }
        // --rehash cannot check an unknown hash: the job is redone.
        assert_eq!(
            journal.decide(&j, "h", false, true),
            Decision::Run { replace: true }
        );
    }

    #[test]
    fn rehash_compares_the_outputs_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(dir.path());
        let out_dir = dir.path().join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::write(&j.input, [1u8; 4096]).unwrap();
        std::fs::write(&j.output, b"output bytes").unwrap();
        let journal = Journal::open(&out_dir, None).unwrap();
        let out = Stamp::of(&j.output).unwrap();
        let mut rec = journal.record(Event::Done, &j, "h");
        rec.output_size = out.size;
        rec.output_mtime_ns = out.mtime_ns;
        rec.blake3 = blake3::hash(b"output bytes").to_hex().to_string();
        journal.append(&rec).unwrap();

        let journal = Journal::open(&out_dir, None).unwrap();
        assert!(matches!(
            journal.decide(&j, "h", false, true),
            Decision::Skip(r) if r.v == JOURNAL_VERSION
        ));
        // Same size, other bytes, mtime put back: only the hash tells.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&j.output)
            .unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"O", 0).unwrap();
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(out.mtime_ns as u64);
        f.set_modified(mtime).unwrap();
        drop(f);
        assert!(matches!(
            journal.decide(&j, "h", false, false),
            Decision::Skip(_)
        ));
        assert_eq!(
            journal.decide(&j, "h", false, true),
            Decision::Run { replace: true }
        );
    }
}
