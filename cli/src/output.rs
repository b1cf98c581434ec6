//! Output files are written to an unnamed file in the target's directory (`O_TMPFILE`;
//! else a named temporary file beside the target) and given their name only when
//! complete, so an interrupted, killed or failed conversion never leaves a file that
//! looks finished, nor a partial one. The input is never overwritten.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use dumpconv_core::{Error, FileSink, Result, Sink, StreamSink};

use crate::compress::{CompressedSink, StreamCodec};
use crate::digest::{file_blake3, HashingSink, HashingWriter};

/// Where the output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A file, created atomically.
    Path(PathBuf),
    /// Standard output (a forward-only stream).
    Stdout,
}

impl Output {
    /// `-` means standard output.
    pub fn parse(s: &str) -> Output {
        if s == "-" {
            Output::Stdout
        } else {
            Output::Path(PathBuf::from(s))
        }
    }

    pub fn display_name(&self) -> String {
        match self {
            Output::Path(p) => p.display().to_string(),
            Output::Stdout => "<stdout>".to_string(),
        }
    }
}

/// True if `a` and `b` name the same existing file (same device and inode).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Check an output path before any work is done.
pub fn check_output(output: &Output, inputs: &[&Path], force: bool) -> Result<()> {
    let Output::Path(path) = output else {
        return Ok(());
    };
    for input in inputs {
        if same_file(path, input) {
            return Err(Error::invalid(format!(
                "{}: output is the input file; refusing to overwrite it",
                path.display()
            )));
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.is_dir() {
            return Err(Error::invalid(format!(
                "{}: is a directory",
                path.display()
            )));
        }
        if !force {
            return Err(Error::invalid(format!(
                "{}: already exists (use --force to replace it)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Run `write` against a sink for `output`; on success the output is complete and in
/// place, on failure nothing is left behind. With `codec`, the writer's bytes are
/// compressed as one stream (the sink is then forward-only).
///
/// With `keep_partial`, a failed uncompressed file output is still moved into place:
/// the writer has marked it incomplete (kdump status 0x8), as makedumpfile does on a
/// full disk.
///
/// With `digest`, returns the BLAKE3 of the output's bytes (see [`crate::digest`]):
/// taken while writing when the writer only appends, else by reading the finished file
/// back. Without it, the sink is handed over unwrapped and nothing is hashed.
pub fn write_output(
    output: &Output,
    force: bool,
    keep_partial: bool,
    codec: Option<StreamCodec>,
    digest: bool,
    write: impl FnOnce(&mut dyn Sink) -> Result<()>,
) -> Result<Option<String>> {
    match output {
        Output::Stdout => {
            // `Stdout` (not its lock) because sinks must be `Send`; the BufWriter makes
            // the per-write locking negligible.
            let out = BufWriter::with_capacity(1 << 20, std::io::stdout());
            let (mut inner, hash) = match codec {
                None => {
                    let mut sink = StreamSink::new(out, "<stdout>");
                    // A stream cannot be patched, so the streamed digest is exact.
                    let hash = write_hashed(&mut sink, digest, write)?;
                    sink.finish()?;
                    (sink.into_inner(), hash)
                }
                Some(c) => {
                    let mut sink =
                        CompressedSink::new(c, HashingWriter::new(out, digest), "<stdout>")?;
                    write(&mut sink)?;
                    sink.finish()?;
                    sink.into_inner()?.into_parts()
                }
            };
            inner.flush().map_err(|e| Error::Output {
                path: "<stdout>".into(),
                offset: 0,
                source: e,
            })?;
            Ok(hash)
        }
        Output::Path(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "output".into());
            let tmp = TmpOutput::new(&dir, &name, keep_partial)?;
            let file: File = tmp.file().try_clone().map_err(|e| Error::Output {
                path: path.clone(),
                offset: 0,
                source: e,
            })?;
            let written = match codec {
                None => {
                    let mut sink = FileSink::new(file, path.clone());
                    write_hashed(&mut sink, digest, write)
                        .and_then(|hash| sink.finish().map(|()| hash))
                }
                // A partial compressed stream is of no use to anyone: never kept.
                Some(c) => {
                    let hash = write_compressed(c, file, path, digest, write)?;
                    tmp.persist(path, force)?;
                    return Ok(hash);
                }
            };
            let hash = match written {
                Ok(h) => h,
                Err(e) => {
                    if keep_partial {
                        // Best effort: the write error is what the user must see.
                        let _ = tmp.persist(path, force);
                    }
                    return Err(e);
                }
            };
            tmp.persist(path, force)?;
            match hash {
                // The writer patched earlier bytes: hash the finished file.
                None if digest => file_blake3(path).map(Some),
                h => Ok(h),
            }
        }
    }
}

/// The file an output is written to before it gets its name.
///
/// Preferably an unnamed file (`O_TMPFILE`) in the output's directory, linked to its
/// name only once complete: a process that is killed (even with SIGKILL), aborts or
/// runs out of disk leaves nothing behind, not even a `.dumpconv-partial` file
/// (issue #17). Where the file system cannot make unnamed files, and with
/// `--keep-partial` (whose point is a file to keep), a named temporary file beside the
/// target (`.NAME.XXXXXX.dumpconv-partial`), removed on failure.
enum TmpOutput {
    Unnamed { file: File, dir: PathBuf },
    Named(tempfile::NamedTempFile),
}

impl TmpOutput {
    fn new(dir: &Path, name: &str, keep_partial: bool) -> Result<TmpOutput> {
        if !keep_partial {
            use rustix::fs::{openat, Mode, OFlags, CWD};
            // 0666 less the umask, as any new file (and cp, makedumpfile) gets.
            if let Ok(fd) = openat(
                CWD,
                dir,
                OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            ) {
                return Ok(TmpOutput::Unnamed {
                    file: File::from(fd),
                    dir: dir.to_path_buf(),
                });
            }
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".dumpconv-partial")
            // tempfile creates 0600 files; an output should get the permissions any
            // new file gets (0666 less the umask), as cp and makedumpfile give it.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| Error::Output {
                path: dir.to_path_buf(),
                offset: 0,
                source: e,
            })?;
        Ok(TmpOutput::Named(tmp))
    }

    fn file(&self) -> &File {
        match self {
            TmpOutput::Unnamed { file, .. } => file,
            TmpOutput::Named(t) => t.as_file(),
        }
    }

    /// Give the complete file its name (replacing an existing file only with `force`).
    fn persist(self, path: &Path, force: bool) -> Result<()> {
        let err = |source: std::io::Error| Error::Output {
            path: path.to_path_buf(),
            offset: 0,
            source,
        };
        match self {
            TmpOutput::Named(tmp) => {
                let persisted = if force {
                    tmp.persist(path)
                } else {
                    tmp.persist_noclobber(path)
                };
                persisted.map_err(|e| err(e.error))?;
                Ok(())
            }
            TmpOutput::Unnamed { file, dir } => {
                use rustix::fs::{linkat, AtFlags, CWD};
                use std::os::fd::AsRawFd;
                let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
                let link = |to: &Path| {
                    linkat(CWD, fd_path.as_str(), CWD, to, AtFlags::SYMLINK_FOLLOW)
                        .map_err(std::io::Error::from)
                };
                if !force {
                    // linkat never replaces: the no-clobber rule for free.
                    return link(path).map_err(err);
                }
                // Link under a fresh name, then rename over the target (atomic).
                for n in 0..100u32 {
                    let side = dir.join(format!(
                        ".dumpconv-{}-{n}.dumpconv-link",
                        std::process::id()
                    ));
                    match link(&side) {
                        Ok(()) => {
                            return std::fs::rename(&side, path).map_err(|e| {
                                let _ = std::fs::remove_file(&side);
                                err(e)
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(err(e)),
                    }
                }
                Err(err(std::io::Error::other(
                    "no free temporary name to link the output under",
                )))
            }
        }
    }
}

/// Run `write` on `sink`, through a [`HashingSink`] when `digest`. Returns the streamed
/// digest, `None` when not asked or when the writer patched earlier bytes.
fn write_hashed(
    sink: &mut dyn Sink,
    digest: bool,
    write: impl FnOnce(&mut dyn Sink) -> Result<()>,
) -> Result<Option<String>> {
    if !digest {
        write(sink)?;
        return Ok(None);
    }
    let mut hashing = HashingSink::new(sink);
    write(&mut hashing)?;
    Ok(hashing.digest())
}

/// Compress the writer's output into `file` (the temporary file), synced to disk; with
/// `digest`, the BLAKE3 of the compressed bytes.
fn write_compressed(
    codec: StreamCodec,
    file: File,
    path: &Path,
    digest: bool,
    write: impl FnOnce(&mut dyn Sink) -> Result<()>,
) -> Result<Option<String>> {
    // Hash after the buffer, so BLAKE3 sees 1 MiB blocks rather than the encoder's
    // small writes.
    let out = BufWriter::with_capacity(1 << 20, HashingWriter::new(file, digest));
    let mut sink = CompressedSink::new(codec, out, path)?;
    write(&mut sink)?;
    sink.finish()?;
    let at = sink.position();
    let err = |source| Error::Output {
        path: path.to_path_buf(),
        offset: at,
        source,
    };
    let (file, hash) = sink
        .into_inner()?
        .into_inner()
        .map_err(|e| err(e.into_error()))?
        .into_parts();
    file.sync_data().map_err(err)?;
    Ok(hash)
}
