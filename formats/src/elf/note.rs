//! The ELF note blob: a sequence of `Nhdr { namesz, descsz, type }`, name, desc, each
//! of name and desc padded to 4 bytes (core files use 4-byte alignment in both ELF
//! classes; the header is three u32 in both).

use dumpconv_core::{Error, Note, Result};

const NHDR: usize = 12;

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parse a note blob. `base` is the blob's file offset, used in error messages.
/// Zero padding after the last note is accepted.
pub fn parse_notes(blob: &[u8], path: &std::path::Path, base: u64) -> Result<Vec<Note>> {
    let mut notes = Vec::new();
    let mut off = 0usize;
    while off < blob.len() {
        let at = base + off as u64;
        let rest = &blob[off..];
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let err = |msg: String| Error::format(path.to_path_buf(), at, "ELF note", msg);
        if rest.len() < NHDR {
            return Err(err(format!(
                "{} bytes left, too few for a note header",
                rest.len()
            )));
        }
        let u = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let (namesz, descsz, n_type) = (u(0) as usize, u(4) as usize, u(8));
        let name_end = NHDR
            .checked_add(namesz)
            .filter(|&e| e <= rest.len())
            .ok_or_else(|| err(format!("name size {namesz} runs past the end of the notes")))?;
        let desc_start = NHDR + pad4(namesz);
        let desc_end = desc_start
            .checked_add(descsz)
            .filter(|&e| e <= rest.len())
            .ok_or_else(|| {
                err(format!(
                    "descriptor size {descsz} runs past the end of the notes ({} bytes)",
                    blob.len()
                ))
            })?;
        let mut name = rest[NHDR..name_end].to_vec();
        while name.last() == Some(&0) {
            name.pop();
        }
        notes.push(Note {
            name,
            n_type,
            desc: rest[desc_start..desc_end].to_vec(),
        });
        if pad4(desc_end) > rest.len() {
            // The blob ends inside the padding of its last note: its size (p_filesz,
            // size_note) is not what the notes add up to.
            return Err(err(format!(
                "the notes end {} byte(s) into the padding of this note (name size \
                 {namesz}, descriptor size {descsz}, each padded to 4 bytes): the note \
                 area's size does not match its notes",
                rest.len() - desc_end
            )));
        }
        off += pad4(desc_end);
    }
    Ok(notes)
}

/// Encoded size of one note.
pub fn note_size(n: &Note) -> usize {
    NHDR + pad4(n.name.len() + 1) + pad4(n.desc.len())
}

/// Encode notes into a blob (name NUL-terminated, 4-byte padding).
pub fn encode_notes(notes: &[Note]) -> Vec<u8> {
    let mut out = Vec::with_capacity(notes.iter().map(note_size).sum());
    for n in notes {
        let namesz = n.name.len() + 1;
        out.extend_from_slice(&(namesz as u32).to_le_bytes());
        out.extend_from_slice(&(n.desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&n.n_type.to_le_bytes());
        out.extend_from_slice(&n.name);
        out.resize(out.len() + pad4(namesz) - n.name.len(), 0);
        out.extend_from_slice(&n.desc);
        out.resize(out.len() + pad4(n.desc.len()) - n.desc.len(), 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn round_trip() {
        let notes = vec![
            Note::new("CORE", 1, vec![1; 336]),
            Note::new("QEMU", 0, vec![2; 0x1b0]),
            Note::new("VMCOREINFO", 0, b"OSRELEASE=6.1\n".to_vec()),
        ];
        let blob = encode_notes(&notes);
        assert_eq!(blob.len(), notes.iter().map(note_size).sum::<usize>());
        assert_eq!(parse_notes(&blob, Path::new("x"), 0).unwrap(), notes);
    }

    #[test]
    fn overflowing_sizes_are_errors_with_offsets() {
        let mut blob = encode_notes(&[Note::new("CORE", 1, vec![0; 8])]);
        blob[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = parse_notes(&blob, Path::new("f.elf"), 0x100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.elf") && e.contains("0x100"), "{e}");
        blob[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_notes(&blob, Path::new("f"), 0).is_err());
    }
}
