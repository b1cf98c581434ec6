//! Device state through the stream's own description of it.
//!
//! Device sections carry no length: a device's bytes are its fields, back to back,
//! big-endian, followed by optional subsections (`0x05`, a one-byte-length name, a
//! version, the subsection's fields). What the fields are and how long each one is,
//! QEMU writes at the very end of the stream, after the EOF marker: the VMDESCRIPTION
//! JSON, one entry per device section in stream order, each with `fields` (`name`,
//! `type`, `size` in bytes as written, `array_len` for arrays, `struct` for nested
//! states, nested `fields` for `tmp` fields) and `subsections`. Walking a section with
//! its entry both skips it exactly and names every field, so registers are read by name
//! (`env.regs[0]`, `env.segs[1].base`, `env.cr[3]`), not at offsets that change with
//! QEMU versions and CPU features.

use dumpconv_core::Result;
use serde_json::Value;

use super::cursor::Cursor;

/// Deepest nesting of structs and subsections followed (QEMU's own are 3 deep).
const MAX_DEPTH: usize = 16;
/// Largest element count of one array field.
const MAX_ARRAY: u64 = 1 << 24;
/// Most fields and elements visited in one section (QEMU's largest, an x86 `cpu`, has
/// a few hundred): a description of nested empty arrays cannot make the walk endless.
const MAX_VISITS: u64 = 1 << 24;
/// Most fields and elements that take no bytes (size 0, empty structs) walked in one
/// stream. Every other visit reads at least one byte, so the walk's time is bounded by
/// the file's size plus this: 500 device sections of 51 KB, each described as 2^24
/// elements of size 0, took minutes (issue #17) when only each section's visits were
/// bounded.
const MAX_FREE_VISITS: u64 = 1 << 18;
/// Most fields recorded for one section (the rest are skipped).
const MAX_RECORDED: usize = 1 << 16;

/// Fields read while walking: (name, big-endian value) for fields of 1 to 8 bytes.
pub type Fields = Vec<(String, u64)>;

/// Walk the state `desc` describes at the cursor; with `out`, record every field of 1
/// to 8 bytes under its dotted name (prefixed by `prefix`).
pub fn walk(
    cur: &mut Cursor,
    desc: &Value,
    prefix: &str,
    out: &mut Option<&mut Fields>,
    depth: usize,
) -> Result<()> {
    let mut visits = 0u64;
    walk_in(cur, desc, prefix, out, depth, &mut visits)
}

fn walk_in(
    cur: &mut Cursor,
    desc: &Value,
    prefix: &str,
    out: &mut Option<&mut Fields>,
    depth: usize,
    visits: &mut u64,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(cur.err_at(
            cur.pos,
            format!("the VMDESCRIPTION nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    let empty = Vec::new();
    let fields = desc
        .get("fields")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for f in fields {
        let name = f.get("name").and_then(Value::as_str).unwrap_or("?");
        let size = f.get("size").and_then(Value::as_u64);
        let array = f.get("array_len").and_then(Value::as_u64);
        let n = array.unwrap_or(1);
        if n > MAX_ARRAY {
            return Err(cur.err_at(
                cur.pos,
                format!("VMDESCRIPTION field {prefix}{name} has {n} elements"),
            ));
        }
        let nested = f
            .get("struct")
            .filter(|s| s.is_object())
            .or_else(|| f.get("fields").map(|_| f));
        for i in 0..n {
            *visits += 1;
            if *visits > MAX_VISITS {
                return Err(cur.err_at(
                    cur.pos,
                    format!("the VMDESCRIPTION describes more than {MAX_VISITS} fields"),
                ));
            }
            if cur.free_visits > MAX_FREE_VISITS {
                return Err(cur.err_at(
                    cur.pos,
                    format!(
                        "the VMDESCRIPTION describes more than {MAX_FREE_VISITS} fields or \
                         elements that take no bytes (at field {prefix}{name})"
                    ),
                ));
            }
            let before = cur.pos;
            let el = if array.is_some() {
                format!("{prefix}{name}[{i}]")
            } else {
                format!("{prefix}{name}")
            };
            if let Some(s) = nested {
                walk_in(cur, s, &format!("{el}."), out, depth + 1, visits)?;
                if cur.pos == before {
                    cur.free_visits += 1;
                }
                continue;
            }
            let size = size.ok_or_else(|| {
                cur.err_at(
                    cur.pos,
                    format!("VMDESCRIPTION field {el} has no size: cannot be skipped"),
                )
            })?;
            match out {
                Some(o) if (1..=8).contains(&size) && o.len() < MAX_RECORDED => {
                    let v = cur.be_uint(size as usize)?;
                    o.push((el, v));
                }
                _ => cur.skip(size)?,
            }
            if size == 0 {
                cur.free_visits += 1;
            }
        }
    }
    subsections(cur, desc, prefix, out, depth, visits)
}

/// The subsections present after a state's fields: each is `0x05`, its name, its
/// version, then its fields. One whose name is not this state's belongs to an outer
/// state and ends the list (as QEMU's loader decides it).
fn subsections(
    cur: &mut Cursor,
    desc: &Value,
    prefix: &str,
    out: &mut Option<&mut Fields>,
    depth: usize,
    visits: &mut u64,
) -> Result<()> {
    let own = desc.get("vmsd_name").and_then(Value::as_str).unwrap_or("");
    let empty = Vec::new();
    let subs = desc
        .get("subsections")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    loop {
        let head = cur.peek(2 + 255)?;
        if head.first() != Some(&super::SUBSECTION) || head.len() < 2 {
            return Ok(());
        }
        let len = head[1] as usize;
        let Some(name) = head.get(2..2 + len) else {
            return Ok(());
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let Some(sub) = subs
            .iter()
            .find(|s| s.get("vmsd_name").and_then(Value::as_str) == Some(name.as_str()))
        else {
            if !own.is_empty() && name.starts_with(&format!("{own}/")) {
                return Err(cur.err_at(
                    cur.pos,
                    format!("subsection {name:?} is not in the VMDESCRIPTION of {own:?}"),
                ));
            }
            return Ok(());
        };
        let at = cur.pos;
        cur.skip(2 + len as u64)?;
        let _version = cur.be_u32()?;
        walk_in(cur, sub, prefix, out, depth + 1, visits).map_err(|e| {
            if matches!(e, dumpconv_core::Error::Format { .. }) {
                e
            } else {
                cur.err_at(at, format!("subsection {name:?}: {e}"))
            }
        })?;
    }
}

/// Find the VMDESCRIPTION at the end of the stream: `0x06`, a big-endian u32 length,
/// and that many bytes of JSON running exactly to the end of the file, right after the
/// EOF marker (`0x00`). Looks at the last `window` bytes; None when it is not there.
pub fn find(tail: &[u8], tail_at: u64, file_len: u64) -> Option<(u64, Value)> {
    let n = tail.len();
    let mut p = n.checked_sub(5)?;
    loop {
        if tail[p] == super::VMDESCRIPTION && p >= 1 && tail[p - 1] == super::EOF {
            let len = u32::from_be_bytes([tail[p + 1], tail[p + 2], tail[p + 3], tail[p + 4]]);
            let start = tail_at + p as u64 + 5;
            if start + u64::from(len) == file_len && tail.get(p + 5) == Some(&b'{') {
                if let Ok(v) = serde_json::from_slice::<Value>(&tail[p + 5..]) {
                    return Some((tail_at + p as u64, v));
                }
            }
        }
        p = p.checked_sub(1)?;
    }
}
