//! From the user's inputs to the list of jobs: expand directories, patterns and
//! manifests, merge options, name the outputs, and pick one shard.
//!
//! The job list's order is the order of the inputs on the command line; within a
//! directory or a pattern, paths sorted by name; within a manifest, its line order.
//! That order is what `--shard` splits, so it must not depend on anything but the
//! inputs (not on the journal, not on which outputs exist).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use dumpconv_core::{DumpWriter, Error, Result};

use super::glob;
use super::manifest::{self, JobSpec};
use super::options::OptionMap;
use crate::compress::NamedCodec;
use crate::output::Output;
use crate::pipeline::{choose_writer, writer_receives};
use crate::registry::Registry;
use crate::schema::writer_options;

/// The default naming template: the input's name without its last extension, plus the
/// output format's extension.
pub const DEFAULT_TEMPLATE: &str = "{stem}.{ext}";

/// The output format when neither the command line, the manifest nor the output name
/// says: ELF, which crash, gdb and every reader of dumps open.
pub const DEFAULT_FORMAT: &str = "elf";

/// The journal's file name starts with this; directory inputs skip it.
pub const JOURNAL_PREFIX: &str = ".dumpconv-journal";

/// One conversion to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Position in the whole (unsharded) plan, from 0; the shard key.
    pub index: usize,
    pub input: PathBuf,
    /// The other files of a kdump split set whose first file is `input`.
    pub parts: Vec<PathBuf>,
    pub output: PathBuf,
    /// The command line's options overridden by the job's own.
    pub options: OptionMap,
    /// Output format (a writer's name).
    pub format: String,
    /// Where the job came from (`manifest.csv:3`, or the input argument).
    pub origin: String,
}

/// How outputs are named.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub out_dir: PathBuf,
    /// Output name relative to `out_dir`; placeholders `{stem}` (input name without its
    /// last extension), `{name}` (input name), `{ext}` (output format's extension),
    /// `{format}`, `{parent}` (input's directory name), `{index}` (job number).
    pub template: String,
    /// Options from the command line, for every job.
    pub options: OptionMap,
}

/// Turn command-line inputs into job specs: a manifest (`.csv`, `.jsonl`, `.ndjson`),
/// a directory (its regular files, not recursive, hidden files skipped), a pattern, or
/// a single dump.
pub fn expand_inputs(inputs: &[String]) -> Result<Vec<JobSpec>> {
    let mut specs = Vec::new();
    for arg in inputs {
        let path = Path::new(arg);
        let from = |p: PathBuf| JobSpec {
            input: p,
            parts: Vec::new(),
            output: None,
            options: OptionMap::new(),
            origin: arg.clone(),
        };
        if path.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
                let entry = entry.map_err(|e| Error::io(path, e))?;
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let p = entry.path();
                if p.is_file() {
                    files.push(p);
                }
            }
            files.sort();
            specs.extend(files.into_iter().map(from));
        } else if manifest::is_manifest(path) && !path.is_dir() {
            specs.extend(manifest::read(path)?);
        } else if !path.exists() && glob::is_pattern(arg) {
            let found = glob::expand(arg)?;
            if found.is_empty() {
                return Err(Error::invalid(format!("{arg}: no file matches")));
            }
            specs.extend(found.into_iter().filter(|p| p.is_file()).map(from));
        } else {
            // A single dump; a missing one fails as that job, not as the batch.
            specs.push(from(path.to_path_buf()));
        }
    }
    Ok(specs)
}

/// Name every job's output and merge its options. Two jobs writing the same output are
/// a usage error.
pub fn plan(specs: Vec<JobSpec>, settings: &PlanSettings, registry: &Registry) -> Result<Vec<Job>> {
    let mut jobs = Vec::with_capacity(specs.len());
    let mut seen: HashMap<PathBuf, String> = HashMap::new();
    for (index, spec) in specs.into_iter().enumerate() {
        let mut options = settings.options.clone();
        options.extend(spec.options.clone());
        let at = |msg: String| Error::invalid(format!("{}: {msg}", spec.origin));
        // As `convert -o` chooses (`x.raw.zst` is a raw image compressed whole, a bare
        // `x.zst` raw too, an unknown extension an error); without an output name, elf.
        let format = options.get("format").map(String::as_str);
        let writer = match (format, &spec.output) {
            (None, None) => registry.writer(DEFAULT_FORMAT),
            (format, Some(out)) => choose_writer(registry, &Output::Path(out.clone()), format),
            (format, None) => choose_writer(registry, &Output::Stdout, format),
        }
        .map_err(|e| at(e.to_string()))?;
        // A writer option the writer does not take fails the plan, as it fails `convert`.
        writer_receives(writer.as_ref(), &writer_options(&options))
            .map_err(|e| at(e.to_string()))?;
        let format = writer.name().to_string();
        let rel = match &spec.output {
            Some(o) => o.clone(),
            None => {
                let ext = default_extension(writer.as_ref(), &options);
                PathBuf::from(
                    render(&settings.template, &spec.input, &ext, &format, index).map_err(at)?,
                )
            }
        };
        let output = settings.out_dir.join(&rel);
        if let Some(first) = seen.insert(output.clone(), spec.origin.clone()) {
            return Err(Error::invalid(format!(
                "{} and {} both write {} (give explicit outputs or a --name template with {{parent}} or {{index}})",
                first,
                spec.origin,
                output.display()
            )));
        }
        options.insert("format".into(), format.clone());
        jobs.push(Job {
            index,
            input: spec.input,
            parts: spec.parts,
            output,
            options,
            format,
            origin: spec.origin,
        });
    }
    Ok(jobs)
}

/// `{ext}`: the format's first extension, followed by `.zst` or `.lz4` when the whole
/// output is compressed (`compress=zstd|lz4` for a format that does not compress
/// itself), so a batch names its outputs as `convert` requires them to be named
/// (`ram.raw.zst`; `convert -o ram.raw --compress zstd` is refused). kdump compresses
/// its pages and keeps `.kdump`.
pub fn default_extension(writer: &dyn DumpWriter, options: &OptionMap) -> String {
    let ext = writer
        .extensions()
        .first()
        .copied()
        .unwrap_or(writer.name())
        .to_string();
    if writer.compresses_itself() {
        return ext;
    }
    match options
        .get("compress")
        .and_then(|v| NamedCodec::from_option(v))
    {
        Some(Some(codec)) => format!("{ext}.{}", codec.extension()),
        _ => ext,
    }
}

/// Fill a naming template.
pub fn render(
    template: &str,
    input: &Path,
    ext: &str,
    format: &str,
    index: usize,
) -> std::result::Result<String, String> {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = input
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = input
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("naming template {template:?}: unclosed {{"))?;
        let key = &rest[open + 1..open + close];
        match key {
            "stem" => out.push_str(&stem),
            "name" => out.push_str(&name),
            "ext" => out.push_str(ext),
            "format" => out.push_str(format),
            "parent" => out.push_str(&parent),
            "index" => out.push_str(&index.to_string()),
            other => {
                return Err(format!(
                    "naming template {template:?}: unknown placeholder {{{other}}} \
                     (known: stem, name, ext, format, parent, index)"
                ))
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    if out.is_empty() || out.ends_with('/') {
        return Err(format!(
            "naming template {template:?} gives no file name for {}",
            input.display()
        ));
    }
    Ok(out)
}

/// One part of a job array: `K/N` takes the jobs whose index is K modulo N (K from 0,
/// as Kubernetes' `JOB_COMPLETION_INDEX` and a Slurm `--array=0-(N-1)` give it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("--shard {s:?}: expected K/N with 0 <= K < N (K counts from 0)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Round robin over the plan's order: shards differ in size by at most one job,
    /// and the split depends only on the job list.
    pub fn owns(&self, job: &Job) -> bool {
        job.index % self.count as usize == self.index as usize
    }

    pub fn select(&self, jobs: Vec<Job>) -> Vec<Job> {
        jobs.into_iter().filter(|j| self.owns(j)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(input: &str, opts: &str) -> JobSpec {
        JobSpec {
            input: input.into(),
            parts: Vec::new(),
            output: None,
            options: super::super::options::parse_words(opts).unwrap(),
            origin: input.into(),
        }
    }

    fn settings(opts: &str) -> PlanSettings {
        PlanSettings {
            out_dir: "/out".into(),
            template: DEFAULT_TEMPLATE.into(),
            options: super::super::options::parse_words(opts).unwrap(),
        }
    }

    #[test]
    fn names_and_options() {
        let r = Registry::builtin();
        let jobs = plan(
            vec![
                spec("/in/a.elf", ""),
                spec("/in/b.raw", "format=kdump compress=zstd"),
            ],
            &settings("format=raw compress=zlib"),
            &r,
        )
        .unwrap();
        assert_eq!(jobs[0].output, PathBuf::from("/out/a.raw"));
        assert_eq!(jobs[0].format, "raw");
        assert_eq!(jobs[1].output, PathBuf::from("/out/b.kdump"));
        assert_eq!(jobs[1].options["compress"], "zstd");
        assert_eq!(jobs[1].index, 1);
    }

    #[test]
    fn whole_output_compression_names_the_output_as_convert_does() {
        let r = Registry::builtin();
        let jobs = plan(
            vec![
                spec("/in/a.elf", ""),
                spec("/in/b.elf", "format=elf compress=lz4"),
                spec("/in/c.elf", "format=kdump compress=zstd"),
                spec("/in/d.elf", "compress=none"),
                spec("/in/e.elf", "format=lime compress=ZSTD"),
            ],
            &settings("format=raw compress=zstd"),
            &r,
        )
        .unwrap();
        let names: Vec<_> = jobs.iter().map(|j| j.output.clone()).collect();
        assert_eq!(
            names,
            ["a.raw.zst", "b.elf.lz4", "c.kdump", "d.raw", "e.lime.zst"]
                .map(|n| PathBuf::from("/out").join(n))
        );
        // Every such name is one `convert` accepts for the job's options.
        for j in &jobs {
            let opts = super::super::options::build(&j.options).unwrap();
            let out = crate::Output::Path(j.output.clone());
            let choice = crate::pipeline::choose_output(&r, &out, &opts)
                .unwrap_or_else(|e| panic!("{}: {e}", j.output.display()));
            assert_eq!(choice.writer.name(), j.format);
        }
        // `{format}` stays the format's name.
        let mut s = settings("format=raw compress=zstd");
        s.template = "{stem}-{format}.{ext}".into();
        let jobs = plan(vec![spec("/in/a.elf", "")], &s, &r).unwrap();
        assert_eq!(jobs[0].output, PathBuf::from("/out/a-raw.raw.zst"));
    }

    #[test]
    fn explicit_compressed_outputs_take_the_inner_format() {
        let r = Registry::builtin();
        let mut a = spec("/in/a.elf", "");
        a.output = Some("a.raw.zst".into());
        let mut b = spec("/in/b.elf", "");
        b.output = Some("b.zst".into());
        let mut c = spec("/in/c.elf", "");
        c.output = Some("c.elf.lz4".into());
        let jobs = plan(vec![a, b, c], &settings(""), &r).unwrap();
        let formats: Vec<_> = jobs.iter().map(|j| j.format.as_str()).collect();
        assert_eq!(formats, ["raw", "raw", "elf"]);
    }

    #[test]
    fn duplicate_outputs_are_refused() {
        let r = Registry::builtin();
        let e = plan(
            vec![spec("/x/ram.raw", ""), spec("/y/ram.raw", "")],
            &settings(""),
            &r,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("both write /out/ram.elf"), "{e}");
        let mut s = settings("");
        s.template = "{parent}-{stem}.{ext}".into();
        let jobs = plan(vec![spec("/x/ram.raw", ""), spec("/y/ram.raw", "")], &s, &r).unwrap();
        assert_eq!(jobs[1].output, PathBuf::from("/out/y-ram.elf"));
    }

    #[test]
    fn templates() {
        let p = Path::new("/d/g1/ram.raw");
        assert_eq!(
            render("{name}.{ext}", p, "elf", "elf", 3).unwrap(),
            "ram.raw.elf"
        );
        assert_eq!(
            render("{index}/{stem}.{format}", p, "kdump", "kdump", 3).unwrap(),
            "3/ram.kdump"
        );
        assert!(render("{nope}", p, "elf", "elf", 0).is_err());
        assert!(render("{stem", p, "elf", "elf", 0).is_err());
    }

    #[test]
    fn shards_partition_the_plan() {
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        let r = Registry::builtin();
        let specs: Vec<_> = (0..10).map(|i| spec(&format!("/in/{i}.raw"), "")).collect();
        let jobs = plan(specs, &settings(""), &r).unwrap();
        let mut union: Vec<usize> = Vec::new();
        for k in 0..3 {
            let s: Shard = format!("{k}/3").parse().unwrap();
            let part = s.select(jobs.clone());
            assert!((3..=4).contains(&part.len()));
            union.extend(part.iter().map(|j| j.index));
        }
        union.sort();
        assert_eq!(union, (0..10).collect::<Vec<_>>());
    }
}
