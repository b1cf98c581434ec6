//! Every reference to the format notes can be followed with the repository alone: no
//! source or document cites notes kept outside it (`FORMATS.md`, `PEERS.md`,
//! `DESIGN.md`), and every `docs/formats.md#anchor` names an anchor that exists there.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Source and documentation files of the repository (not build output, not git).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if !name.starts_with('.') && name != "target" {
                files(&p, out);
            }
        } else if [".rs", ".md", ".c", ".h", ".sh", ".py", ".toml"]
            .iter()
            .any(|x| name.ends_with(x))
        {
            out.push(p);
        }
    }
}

#[test]
fn format_references_resolve_inside_the_repository() {
    let root = repo();
    let doc = std::fs::read_to_string(root.join("docs/formats.md")).unwrap();
    let anchors: Vec<&str> = doc
        .split("<a id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(anchors.len() > 20, "docs/formats.md has anchors");
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut bad = Vec::new();
    for f in &all {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        if rel == "tests/tests/docs_references.rs" {
            continue;
        }
        for outside in ["FORMATS.md", "PEERS.md", "DESIGN.md"] {
            if text.contains(outside) {
                bad.push(format!(
                    "{rel}: cites {outside}, which is not in the repository"
                ));
            }
        }
        for (i, _) in text.match_indices("docs/formats.md#") {
            let anchor: String = text[i + "docs/formats.md#".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !anchors.contains(&anchor.as_str()) {
                bad.push(format!(
                    "{rel}: docs/formats.md#{anchor} has no such anchor"
                ));
            }
        }
    }
    for (i, _) in doc.match_indices("](#") {
        let anchor: String = doc[i + 3..].chars().take_while(|c| *c != ')').collect();
        if !anchors.contains(&anchor.as_str()) {
            bad.push(format!(
                "docs/formats.md: link to #{anchor} has no such anchor"
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
