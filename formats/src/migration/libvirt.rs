//! libvirt save files (`virsh save`, `virsh managedsave`, and `virsh dump` without
//! `--memory-only` when libvirt writes them): a header, the domain XML, then QEMU's
//! migration stream, possibly compressed (`save_image_format` in qemu.conf).
//!
//! Header (92 bytes, in the byte order of the host that wrote it; a version that only
//! makes sense byte-swapped says the file came from a host of the other order):
//! | off | field |
//! |---|---|
//! | 0 | magic, 16 bytes: `LibvirtQemudSave` (`LibvirtQemudPart` while the save is being written: an unfinished save) |
//! | 16 | version u32: 1 or 2 |
//! | 20 | data_len u32: bytes of XML (and, version 2, cookie) after the header, padding included |
//! | 24 | was_running u32 |
//! | 28 | compression u32: 0 none, 1 gzip, 2 bzip2, 3 xz, 4 lzop, 5 zstd |
//! | 32 | cookie offset u32 (version 2): where the cookie starts inside the data |
//! | 36 | 14 unused u32 |
//!
//! The XML is NUL-terminated; the stream starts at 92 + data_len.

use std::path::{Path, PathBuf};

use dumpconv_core::{Dump, Error, Result};

use crate::input::{Input, MAX_METADATA};
use crate::options::OpenOptions;
use crate::wrapped::Wrapper;

pub const SAVE_MAGIC: &[u8; 16] = b"LibvirtQemudSave";
pub const PART_MAGIC: &[u8; 16] = b"LibvirtQemudPart";
pub const HEADER_LEN: u64 = 92;
const FMT: &str = "libvirt save";

/// True if the file starts with a libvirt save header (finished or not).
pub fn probe(head: &[u8], _file_len: u64) -> bool {
    head.starts_with(SAVE_MAGIC) || head.starts_with(PART_MAGIC)
}

/// The decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub data_len: u32,
    pub was_running: u32,
    pub compression: u32,
    pub cookie_offset: u32,
    pub big_endian: bool,
}

fn codec_name(c: u32) -> &'static str {
    match c {
        0 => "none",
        1 => "gzip",
        2 => "bzip2",
        3 => "xz",
        4 => "lzop",
        5 => "zstd",
        _ => "unknown",
    }
}

/// Open a libvirt save file.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Dump> {
    let input = Input::open(path)?;
    let err = |off: u64, msg: String| Error::format(path.to_path_buf(), off, FMT, msg);
    let h = input.read_vec(0, HEADER_LEN, FMT, "the libvirt save header")?;
    if h.starts_with(PART_MAGIC) {
        return Err(err(
            0,
            "magic \"LibvirtQemudPart\": an unfinished libvirt save (libvirt writes this \
             magic first and replaces it with \"LibvirtQemudSave\" only once the save has \
             completed): the save failed, or is still being written"
                .into(),
        ));
    }
    let word = |o: usize, be: bool| {
        let b = [h[o], h[o + 1], h[o + 2], h[o + 3]];
        if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let le_version = word(16, false);
    let big_endian = !(1..=2).contains(&le_version) && (1..=2).contains(&word(16, true));
    let hdr = Header {
        version: word(16, big_endian),
        data_len: word(20, big_endian),
        was_running: word(24, big_endian),
        compression: word(28, big_endian),
        cookie_offset: word(32, big_endian),
        big_endian,
    };
    if !(1..=2).contains(&hdr.version) {
        return Err(err(
            16,
            format!("libvirt save header version {le_version:#x}; versions 1 and 2 are known"),
        ));
    }
    if u64::from(hdr.data_len) > MAX_METADATA {
        return Err(err(20, format!("domain XML of {:#x} bytes", hdr.data_len)));
    }
    let data = input.read_vec(HEADER_LEN, u64::from(hdr.data_len), FMT, "the domain XML")?;
    let xml_end = if hdr.version >= 2 && hdr.cookie_offset > 0 {
        (hdr.cookie_offset as usize).min(data.len())
    } else {
        data.len()
    };
    let xml = &data[..xml_end];
    let xml = xml.split(|&b| b == 0).next().unwrap_or(xml);
    let xml = String::from_utf8_lossy(xml).into_owned();
    let payload = HEADER_LEN + u64::from(hdr.data_len);
    let codec = codec_name(hdr.compression);
    let (mut dump, format) = match hdr.compression {
        0 => (
            super::open_input(&input, payload, opts)?,
            "libvirt+qemu-migration",
        ),
        1..=5 => {
            let w = match hdr.compression {
                1 => Wrapper::Gzip,
                2 => Wrapper::Bzip2,
                3 => Wrapper::Xz,
                4 => Wrapper::Lzop,
                _ => Wrapper::Zstd,
            };
            let shown = PathBuf::from(format!(
                "{} ({codec} decompressed, after the libvirt header)",
                path.display()
            ));
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(payload))
                .map_err(|e| Error::io(path, e))?;
            let r = std::io::BufReader::with_capacity(1 << 20, f);
            let mut dec = w.decoder(r).map_err(|e| Error::io(path, e))?;
            let spill = crate::wrapped::spill(
                &mut dec,
                &crate::wrapped::spill_dir(opts),
                &shown,
                Some(w),
                crate::wrapped::max_spill(opts)?,
            )?;
            let fd_path = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&spill.file)
            ));
            let inner = Input::open(&fd_path).and_then(|i| super::open_input(&i, 0, opts));
            drop(spill);
            let d = inner.map_err(|e| relabel(e, &fd_path, &shown))?;
            let name = match w {
                Wrapper::Gzip => "libvirt+gzip+qemu-migration",
                Wrapper::Bzip2 => "libvirt+bzip2+qemu-migration",
                Wrapper::Xz => "libvirt+xz+qemu-migration",
                Wrapper::Lzop => "libvirt+lzop+qemu-migration",
                _ => "libvirt+zstd+qemu-migration",
            };
            (d, name)
        }
        c => {
            return Err(err(
                28,
                format!("unknown compression {c} (libvirt knows 0..5)"),
            ))
        }
    };
    let name = xml
        .split("<name>")
        .nth(1)
        .and_then(|s| s.split("</name>").next())
        .unwrap_or("?")
        .to_string();
    let mut details = vec![
        (
            "libvirt header".to_string(),
            format!(
                "version {}, {}-endian, domain {name:?}, was running: {}, compression: \
                 {codec}, migration stream at {payload:#x}",
                hdr.version,
                if hdr.big_endian { "big" } else { "little" },
                hdr.was_running != 0
            ),
        ),
        ("domain XML".into(), xml.trim_end().to_string()),
    ];
    details.append(&mut dump.details);
    dump.details = details;
    dump.format = format;
    dump.path = path.to_path_buf();
    Ok(dump)
}

/// An error about the spilled copy, said of the original file.
fn relabel(e: Error, from: &Path, to: &Path) -> Error {
    match e {
        Error::Format {
            mut location,
            format,
            msg,
        } => {
            if location.path.as_deref() == Some(from) {
                location.path = Some(to.to_path_buf());
            }
            Error::Format {
                location,
                format,
                msg,
            }
        }
        Error::Io { path, source } if path == from => Error::Io {
            path: to.to_path_buf(),
            source,
        },
        other => other,
    }
}
