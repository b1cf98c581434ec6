//! Shell-style patterns for batch inputs (`dumps/*.elf`, `guest-?/ram.raw`), for
//! manifests and job specs that run without a shell: `*` (any run of characters except
//! `/`), `?` (one character), `[abc]`, `[a-z]`, `[!a]`. Names starting with `.` match
//! only a pattern that starts with `.`, as in a shell. Results are sorted.

use std::path::{Path, PathBuf};

use dumpconv_core::{Error, Result};

/// True if `s` holds a wildcard.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The existing paths that match `pattern`, sorted.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>> {
    let absolute = pattern.starts_with('/');
    let mut current = vec![if absolute {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            if !is_pattern(part) {
                let p = base.join(part);
                if p.exists() {
                    next.push(p);
                }
                continue;
            }
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if matches(part.as_bytes(), name.as_bytes()) {
                    next.push(base.join(name));
                }
            }
        }
        current = next;
    }
    current.sort();
    Ok(current)
}

/// Match one path component against one pattern component.
pub fn matches(pat: &[u8], name: &[u8]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|i| matches(&pat[1..], &name[i..])),
        Some(b'?') => !name.is_empty() && matches(&pat[1..], &name[1..]),
        Some(b'[') => match (class(&pat[1..]), name.first()) {
            (Some((set, negated, rest)), Some(&c)) => {
                in_class(set, c) != negated && matches(rest, &name[1..])
            }
            // An unclosed `[` is a literal.
            (None, Some(&b'[')) => matches(&pat[1..], &name[1..]),
            _ => false,
        },
        Some(&c) => name.first() == Some(&c) && matches(&pat[1..], &name[1..]),
    }
}

/// Split `abc]rest` (after the `[`) into the set, whether it is negated, and the rest.
fn class(p: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let (negated, p) = match p.first() {
        Some(b'!' | b'^') => (true, &p[1..]),
        _ => (false, p),
    };
    // A `]` right after `[` (or `[!`) is a member, not the end.
    let end = p.iter().skip(1).position(|&c| c == b']')? + 1;
    Some((&p[..end], negated, &p[end + 1..]))
}

fn in_class(set: &[u8], c: u8) -> bool {
    let mut i = 0;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == b'-' {
            if set[i] <= c && c <= set[i + 2] {
                return true;
            }
            i += 3;
        } else {
            if set[i] == c {
                return true;
            }
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        matches(p.as_bytes(), n.as_bytes())
    }

    #[test]
    fn patterns() {
        assert!(m("*.elf", "a.elf"));
        assert!(m("*.elf", ".elf"));
        assert!(!m("*.elf", "a.elf.x"));
        assert!(m("ram-?.raw", "ram-0.raw"));
        assert!(!m("ram-?.raw", "ram-10.raw"));
        assert!(m("g[0-9]", "g7"));
        assert!(!m("g[!0-9]", "g7"));
        assert!(m("g[!0-9]", "gx"));
        assert!(m("[]]", "]"));
        assert!(m("a[b", "a[b"));
        assert!(m("*a*b*", "xxaybz"));
    }

    #[test]
    fn expands_in_directories() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b.elf", "a.elf", "c.raw", ".hidden.elf"] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/d.elf"), b"x").unwrap();
        let base = d.path().to_str().unwrap();
        let got = expand(&format!("{base}/*.elf")).unwrap();
        assert_eq!(got, vec![d.path().join("a.elf"), d.path().join("b.elf")]);
        let got = expand(&format!("{base}/*/*.elf")).unwrap();
        assert_eq!(got, vec![d.path().join("sub/d.elf")]);
        assert!(expand(&format!("{base}/*.none")).unwrap().is_empty());
    }
}
