//! Manifests: one job per line, as CSV (`input,output,options`) or JSON lines
//! (`{"input": ..., "output": ..., "options": ...}`).
//!
//! - Blank lines and lines starting with `#` are ignored; a CSV file may start with the
//!   header `input,output,options`.
//! - `output` may be empty: the naming template then gives the name. A relative output
//!   is relative to `--out-dir`.
//! - A relative input (and a relative file named by an option) is relative to the
//!   manifest's directory, so a manifest travels with its dumps.
//! - `input` may name the files of a kdump split set (`makedumpfile --split`): in CSV
//!   separated by `|` (`part1|part2|part3`), in JSON lines as an array of strings.
//! - `options` is `key=value` words in CSV (`format=kdump compress=zstd paging`), a
//!   string of such words or a JSON object in JSON lines; see [`super::options`].
//!
//! Every error names the manifest and the line.

use std::path::{Path, PathBuf};

use dumpconv_core::{Error, Result};
use serde_json::Value;

use super::options::{self, OptionMap};

/// One job as the user described it, before naming and sharding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub input: PathBuf,
    /// The other files of a kdump split set whose first file is `input`.
    pub parts: Vec<PathBuf>,
    /// Explicit output (relative to the out dir unless absolute); None: the template.
    pub output: Option<PathBuf>,
    /// Options of this job only (they override the command line's).
    pub options: OptionMap,
    /// Where the job came from, for messages: `manifest.csv:3`, or the input argument.
    pub origin: String,
}

/// True if `path` names a manifest (by its extension).
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("csv" | "jsonl" | "ndjson")
    )
}

/// Read a manifest file; the format follows the extension (`.csv`, else JSON lines).
pub fn read(path: &Path) -> Result<Vec<JobSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let csv = path.extension().and_then(|e| e.to_str()) == Some("csv");
    parse(&text, &path.display().to_string(), &dir, csv)
}

/// Parse manifest text. `name` is used in messages, `dir` resolves relative paths.
pub fn parse(text: &str, name: &str, dir: &Path, csv: bool) -> Result<Vec<JobSpec>> {
    let mut jobs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let origin = format!("{name}:{no}");
        let err = |msg: String| Error::invalid(format!("{origin}: {msg}"));
        let (input, output, mut opts) = if csv {
            let fields = split_csv(trimmed).map_err(err)?;
            if jobs.is_empty() && fields[0].eq_ignore_ascii_case("input") {
                continue; // the header
            }
            if fields.len() > 3 {
                return Err(err(format!(
                    "{} fields; expected input,output,options (quote a field that holds a comma)",
                    fields.len()
                )));
            }
            let get = |k: usize| {
                fields
                    .get(k)
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            let opts = options::parse_words(&get(2)).map_err(err)?;
            let inputs = get(0).split('|').map(|s| s.trim().to_string()).collect();
            (inputs, get(1), opts)
        } else {
            parse_json_line(trimmed).map_err(err)?
        };
        if input.iter().all(String::is_empty) {
            return Err(err("no input".into()));
        }
        if input.iter().any(String::is_empty) {
            return Err(err("an empty name in a split set's inputs".into()));
        }
        options::resolve_files(&mut opts, dir);
        let mut paths = input.into_iter().map(|i| {
            let p = PathBuf::from(i);
            if p.is_relative() {
                dir.join(p)
            } else {
                p
            }
        });
        let Some(first) = paths.next() else {
            return Err(err("no input".into()));
        };
        jobs.push(JobSpec {
            input: first,
            parts: paths.collect(),
            output: (!output.is_empty()).then(|| PathBuf::from(output)),
            options: opts,
            origin,
        });
    }
    Ok(jobs)
}

/// A line's inputs (one, or the files of a split set), output and options.
type Line = (Vec<String>, String, OptionMap);

fn parse_json_line(line: &str) -> std::result::Result<Line, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err(
            "expected a JSON object {\"input\": ..., \"output\": ..., \"options\": ...}".into(),
        );
    };
    let mut input = Vec::new();
    let mut output = String::new();
    let mut opts = OptionMap::new();
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("input", Value::String(s)) => input = vec![s],
            ("input", Value::Array(a)) if !a.is_empty() => {
                input = a
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        other => Err(format!("\"input\" array holds {other}, not a file name")),
                    })
                    .collect::<std::result::Result<_, _>>()?;
            }
            ("output", Value::String(s)) => output = s,
            ("output", Value::Null) => {}
            ("options", Value::String(s)) => opts = options::parse_words(&s)?,
            ("options", Value::Object(o)) => {
                for (ok, ov) in o {
                    let value = match ov {
                        Value::String(s) => s,
                        Value::Bool(b) => (if b { "1" } else { "0" }).to_string(),
                        Value::Number(n) => n.to_string(),
                        other => {
                            return Err(format!(
                                "option {ok:?}: {other} is not a string, number or boolean"
                            ))
                        }
                    };
                    options::insert(&mut opts, &ok, value)?;
                }
            }
            ("options", Value::Null) => {}
            ("input" | "output" | "options", other) => {
                return Err(format!("{k:?} has the wrong type ({other})"))
            }
            (other, _) => {
                return Err(format!(
                    "unknown field {other:?} (expected input, output, options)"
                ))
            }
        }
    }
    Ok((input, output, opts))
}

/// Split one CSV line: commas separate fields, a field in double quotes may hold commas
/// and `""` for a quote.
fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, '"') => return Err("a quote in the middle of an unquoted field".into()),
            (false, ',') => {
                fields.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err("text after a closing quote".into())
            }
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote (a field cannot span lines)".into());
    }
    fields.push(cur);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Result<Vec<JobSpec>> {
        parse(text, "m.csv", Path::new("/data"), true)
    }
    fn jsonl(text: &str) -> Result<Vec<JobSpec>> {
        parse(text, "m.jsonl", Path::new("/data"), false)
    }

    #[test]
    fn csv_lines() {
        let jobs = csv("input,output,options\n\
                        # a comment\n\
                        \n\
                        a.elf,,\n\
                        /abs/b.elf,b.kdump,format=kdump compress=zstd\n\
                        \"c,1.raw\",\"out \"\"c\"\".elf\",paging\n\
                        d.elf\n")
        .unwrap();
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[0].input, PathBuf::from("/data/a.elf"));
        assert_eq!(jobs[0].output, None);
        assert_eq!(jobs[0].origin, "m.csv:4");
        assert_eq!(jobs[1].input, PathBuf::from("/abs/b.elf"));
        assert_eq!(jobs[1].output, Some(PathBuf::from("b.kdump")));
        assert_eq!(jobs[1].options["compress"], "zstd");
        assert_eq!(jobs[2].input, PathBuf::from("/data/c,1.raw"));
        assert_eq!(jobs[2].output, Some(PathBuf::from("out \"c\".elf")));
        assert_eq!(jobs[2].options["paging"], "1");
        assert_eq!(jobs[3].input, PathBuf::from("/data/d.elf"));
    }

    #[test]
    fn csv_bad_lines_name_the_line() {
        let e = csv("a.elf,,\nb.elf,,colour=blue\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.csv:2: unknown option \"colour\""), "{e}");
        let e = csv("a.elf,x,y,z\n").unwrap_err().to_string();
        assert!(e.starts_with("m.csv:1: 4 fields"), "{e}");
        let e = csv("\n\n\"a.elf,,\n").unwrap_err().to_string();
        assert!(e.starts_with("m.csv:3: unterminated quote"), "{e}");
        let e = csv("a.elf,,\n,out.elf,\n").unwrap_err().to_string();
        assert!(e.starts_with("m.csv:2: no input"), "{e}");
        let e = csv("a.elf,,begin=0xzz\n").unwrap_err().to_string();
        assert!(e.starts_with("m.csv:1: begin"), "{e}");
    }

    #[test]
    fn jsonl_lines() {
        let jobs = jsonl(
            "{\"input\": \"a.elf\"}\n\
             # comment\n\
             {\"input\": \"b.elf\", \"output\": \"b.kdump\", \"options\": {\"format\": \"kdump\", \"level\": 3, \"paging\": true}}\n\
             {\"input\": \"c.elf\", \"output\": null, \"options\": \"format=raw\"}\n",
        )
        .unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0].input, PathBuf::from("/data/a.elf"));
        assert_eq!(jobs[1].options["level"], "3");
        assert_eq!(jobs[1].options["paging"], "1");
        assert_eq!(jobs[1].origin, "m.jsonl:3");
        assert_eq!(jobs[2].options["format"], "raw");
    }

    #[test]
    fn jsonl_bad_lines_name_the_line() {
        let e = jsonl("{\"input\": \"a\"}\n{\"input\": \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.jsonl:2: not JSON"), "{e}");
        let e = jsonl("[1]\n").unwrap_err().to_string();
        assert!(e.starts_with("m.jsonl:1: expected a JSON object"), "{e}");
        let e = jsonl("{\"input\": \"a\", \"ouput\": \"x\"}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field \"ouput\""), "{e}");
        let e = jsonl("{\"input\": 3}\n").unwrap_err().to_string();
        assert!(e.contains("\"input\" has the wrong type"), "{e}");
        let e = jsonl("{\"input\": \"a\", \"options\": {\"paging\": [1]}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a string, number or boolean"), "{e}");
        let e = jsonl("{\"output\": \"x\"}\n").unwrap_err().to_string();
        assert!(e.starts_with("m.jsonl:1: no input"), "{e}");
    }

    #[test]
    fn split_sets_list_their_parts() {
        let jobs = csv("s1|/abs/s2 | s3,out.elf,\n").unwrap();
        assert_eq!(jobs[0].input, PathBuf::from("/data/s1"));
        assert_eq!(
            jobs[0].parts,
            [PathBuf::from("/abs/s2"), PathBuf::from("/data/s3")]
        );
        let jobs = jsonl("{\"input\": [\"s1\", \"s2\"], \"output\": \"o.elf\"}\n").unwrap();
        assert_eq!(jobs[0].input, PathBuf::from("/data/s1"));
        assert_eq!(jobs[0].parts, [PathBuf::from("/data/s2")]);
        let e = csv("s1||s3,,\n").unwrap_err().to_string();
        assert!(e.contains("m.csv:1: an empty name"), "{e}");
        let e = jsonl("{\"input\": [\"s1\", 2]}\n").unwrap_err().to_string();
        assert!(e.contains("not a file name"), "{e}");
        let e = jsonl("{\"input\": []}\n").unwrap_err().to_string();
        assert!(e.contains("wrong type"), "{e}");
    }

    #[test]
    fn option_files_are_relative_to_the_manifest() {
        let jobs = csv("a.raw,,cpu-state=state.json vmcoreinfo=/abs/vi.txt\n").unwrap();
        assert_eq!(jobs[0].options["cpu-state"], "/data/state.json");
        assert_eq!(jobs[0].options["vmcoreinfo"], "/abs/vi.txt");
    }
}
