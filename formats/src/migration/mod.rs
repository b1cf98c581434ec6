//! QEMU migration streams: what `migrate "exec:cat > FILE"`, `virsh save`, `virsh dump`
//! (without `--memory-only`) write. See docs/formats.md#qemu-migration-stream.
//!
//! The stream: `"QEVM"`, a big-endian u32 version (3), then sections, each starting with
//! a type byte: CONFIGURATION (0x07: the machine type), START (0x01) / FULL (0x04)
//! (section id u32, one-byte-length id string, instance u32, version u32, then the
//! state), PART (0x02) / END (0x03) (section id u32, then state), each followed by a
//! FOOTER (0x7e + the section id); EOF (0x00); and after EOF the VMDESCRIPTION (0x06,
//! u32 length, JSON describing every device section's fields). Everything is
//! big-endian.
//!
//! RAM is the `ram` section (version 4): records of a u64 whose low bits (below the
//! 4 KiB target page size) are flags and whose high bits are an offset in a RAM block;
//! MEM_SIZE (0x04: the total, then each block's name and length), ZERO (0x02: one fill
//! byte), PAGE (0x08: the page's bytes), CONTINUE (0x20: same block as the previous
//! record, else the block's name follows), EOS (0x10: end of this part). A page sent
//! again (a live migration's later iterations) replaces the earlier copy.
//!
//! Opening reads the stream once, front to back, and keeps an index of 8 bytes per
//! guest page (where the page's bytes are in the file, or "zero"): 0.2 % of the guest's
//! RAM, never the pages. Reads then go to the file. Device sections are walked through
//! the VMDESCRIPTION ([`vmdesc`]); the `cpu` sections give the vCPUs' registers and the
//! `vmcoreinfo` device the guest-physical address of the kernel's VMCOREINFO note.

mod cpu;
mod cursor;
pub mod layout;
pub mod libvirt;
pub mod mapped_ram;
pub mod vmdesc;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use dumpconv_core::memory::read_in_pieces;
use dumpconv_core::{Backing, Dump, Error, PhysRange, PhysicalMemory, Result};
use serde_json::Value;

use crate::input::Input;
use crate::options::OpenOptions;
use cursor::Cursor;

pub(crate) const FMT: &str = "QEMU migration stream";

pub const MAGIC: &[u8; 4] = b"QEVM";
pub const VERSION: u32 = 3;

// Section types.
pub const EOF: u8 = 0x00;
pub const SECTION_START: u8 = 0x01;
pub const SECTION_PART: u8 = 0x02;
pub const SECTION_END: u8 = 0x03;
pub const SECTION_FULL: u8 = 0x04;
pub const SUBSECTION: u8 = 0x05;
pub const VMDESCRIPTION: u8 = 0x06;
pub const CONFIGURATION: u8 = 0x07;
pub const COMMAND: u8 = 0x08;
pub const FOOTER: u8 = 0x7e;
/// The COMMAND section's command that QEMU >= 9.1 sends before the device state.
pub const CMD_SWITCHOVER_START: u64 = 11;

// RAM record flags.
pub const RAM_ZERO: u64 = 0x02;
pub const RAM_MEM_SIZE: u64 = 0x04;
pub const RAM_PAGE: u64 = 0x08;
pub const RAM_EOS: u64 = 0x10;
pub const RAM_CONTINUE: u64 = 0x20;
pub const RAM_XBZRLE: u64 = 0x40;
pub const RAM_HOOK: u64 = 0x80;
pub const RAM_COMPRESS_PAGE: u64 = 0x100;
pub const RAM_MULTIFD_FLUSH: u64 = 0x200;

/// The version of the `ram` section this reader knows.
pub const RAM_VERSION: u32 = 4;
/// Target page size of x86 and of arm64 `virt` with 4 KiB pages.
pub const PAGE: u64 = 4096;

/// Index entry: page not sent.
const MISSING: u64 = 0;
/// Index entry: zero page.
const ZERO: u64 = 1;

/// True if the file starts with the migration stream magic.
pub fn probe(head: &[u8], _file_len: u64) -> bool {
    head.starts_with(MAGIC)
}

/// A RAM block of the stream.
#[derive(Debug)]
struct Block {
    name: String,
    len: u64,
    /// Per page: [`MISSING`], [`ZERO`], or the file offset of its bytes.
    pages: Vec<u64>,
}

/// A section as its START/FULL header introduced it.
#[derive(Debug, Clone)]
struct SectionInfo {
    id: u32,
    name: String,
    instance: u32,
    version: u32,
}

/// What one pass over the stream found.
struct Parsed {
    machine: Option<String>,
    blocks: Vec<Block>,
    /// Device sections walked: (name, instance, fields read) for `cpu` and `vmcoreinfo`.
    devices: Vec<(String, u32, vmdesc::Fields)>,
    /// Every device section name (VGA detection, `info`).
    device_names: Vec<String>,
    warnings: Vec<String>,
    vmdesc_at: Option<u64>,
    target_page_bits: Option<u32>,
    /// The configuration lists the `mapped-ram` capability ([`mapped_ram`]).
    mapped_ram: bool,
}

fn section_label(s: &SectionInfo) -> String {
    format!(
        "section {} {:?} (instance {}, version {})",
        s.id, s.name, s.instance, s.version
    )
}

/// Open a migration stream.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Dump> {
    let input = Input::open(path)?;
    open_input(&input, 0, opts)
}

/// Open the stream that starts at `start` in `input` (after a libvirt header, say).
/// `opts.ram_map`, if given, places the RAM instead of the machine type's rule
/// ([`layout::place_declared`]).
pub fn open_input(input: &Input, start: u64, opts: &OpenOptions) -> Result<Dump> {
    let mut p = parse(input, start)?;
    let machine_name = p.machine.clone().ok_or_else(|| {
        Error::format(
            input.path.clone(),
            start + 8,
            FMT,
            "the stream has no CONFIGURATION section, so its machine type (and with it \
             where its RAM blocks are in guest-physical memory) is unknown",
        )
    })?;
    // (name, length) of each RAM block, in stream order: placement, `info`.
    let names: Vec<(String, u64)> = p.blocks.iter().map(|b| (b.name.clone(), b.len)).collect();
    // A VGA device cuts its window out of the machine's RAM (the rule, not a declared map).
    let vga = opts.ram_map.is_none()
        && p.device_names.iter().any(|n| {
            n.contains("VGA") || n.contains("vga") || n.contains("cirrus") || n.contains("qxl")
        });
    let placed = match (&opts.ram_map, layout::machine(&machine_name)) {
        (Some(map), _) => layout::place_declared(&names, map).map_err(|why| {
            Error::format(
                input.path.clone(),
                start + 8,
                FMT,
                format!(
                    "--ram-map for machine {machine_name:?}: {why} (the stream's blocks are {})",
                    block_list(&p.blocks)
                ),
            )
        })?,
        (None, None) => {
            return Err(Error::format(
                input.path.clone(),
                start + 8,
                FMT,
                format!(
                    "configuration section: machine type {machine_name:?} has no known RAM \
                     layout (known: pc-i440fx-*, pc-q35-*, virt-*); its RAM blocks are {}. \
                     Give the layout with --ram-map RANGES (the largest block laid across \
                     the guest-physical ranges in order, e.g. \
                     --ram-map 0-0xbfffffff,0x100000000-0x13fffffff), or convert the stream \
                     to raw with QEMU (load it with `-incoming \"exec:cat FILE\"` and run \
                     `dump-guest-memory`)",
                    block_list(&p.blocks)
                ),
            ))
        }
        (None, Some(mach)) => layout::place(mach, &names, vga).map_err(|want| {
            Error::format(
                input.path.clone(),
                start + 8,
                FMT,
                format!(
                    "machine {machine_name:?} keeps its RAM in block {want:?}, but the \
                         stream's blocks are {}",
                    block_list(&p.blocks)
                ),
            )
        })?,
    };
    // Every page of a placed piece must have been sent: never a silently short RAM.
    for pl in &placed {
        let b = &p.blocks[pl.block];
        let first = pl.block_offset / PAGE;
        let last = (pl.block_offset + pl.phys.len()).div_ceil(PAGE);
        if let Some(i) = (first..last).find(|&i| b.pages.get(i as usize) == Some(&MISSING)) {
            let missing = (first..last)
                .filter(|&i| b.pages.get(i as usize) == Some(&MISSING))
                .count();
            return Err(Error::format(
                input.path.clone(),
                None,
                FMT,
                format!(
                    "RAM block {:?}: {missing} page(s) never sent, the first at block \
                     offset {:#x} (guest-physical {:#x}): an incomplete stream",
                    b.name,
                    i * PAGE,
                    pl.phys.start + (i * PAGE - pl.block_offset.min(i * PAGE))
                ),
            ));
        }
    }
    let zero: u64 = placed
        .iter()
        .map(|pl| {
            let b = &p.blocks[pl.block];
            let first = (pl.block_offset / PAGE) as usize;
            let n = pl.phys.len().div_ceil(PAGE) as usize;
            b.pages
                .iter()
                .skip(first)
                .take(n)
                .filter(|&&e| e == ZERO)
                .count() as u64
                * PAGE
        })
        .sum();
    // the page index moves into the memory (no copy: it is 8 bytes per guest page)
    let memory = Arc::new(StreamMemory::new(input, &mut p.blocks, &placed));

    let mut warnings = p.warnings;
    let arm64 = |devices: &_, warnings: &mut Vec<String>| {
        let cpus = cpu::arm64_cpus(devices, warnings);
        // an AArch64 vCPU's state has 31 x registers; a 32-bit arm guest would not
        let arch = cpus
            .first()
            .filter(|c| c.regs.contains("x30"))
            .map(|_| dumpconv_core::Arch::AARCH64);
        (cpus, arch)
    };
    let (cpus, arch) = match layout::machine(&machine_name) {
        Some(layout::Machine::I440fx { .. } | layout::Machine::Q35 { .. }) => {
            cpu::x86_cpus(&p.devices, &mut warnings)
        }
        Some(layout::Machine::ArmVirt) => arm64(&p.devices, &mut warnings),
        // A machine type whose RAM the user declared: its vCPUs say what they are.
        // (An AArch64 vCPU is recognised by its x registers; anything else is decoded as
        // x86, whose reader warns of the fields it misses.)
        None => {
            let mut arm64_warnings = Vec::new();
            let a = arm64(&p.devices, &mut arm64_warnings);
            if a.1.is_some() {
                warnings.extend(arm64_warnings);
                a
            } else {
                cpu::x86_cpus(&p.devices, &mut warnings)
            }
        }
    };
    let vmcoreinfo = cpu::vmcoreinfo(&p.devices, memory.as_ref(), &mut warnings);

    let ram: u64 = memory.total_bytes();
    let mut details = vec![
        ("machine type".to_string(), machine_name.clone()),
        ("RAM blocks".into(), names_list(&names)),
        (
            "RAM placement".into(),
            placed
                .iter()
                .map(|pl| {
                    format!(
                        "{}+{:#x} at {:#x}-{:#x}",
                        names[pl.block].0,
                        pl.block_offset,
                        pl.phys.start,
                        pl.phys.end - 1
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "RAM".into(),
            format!(
                "{ram:#x} bytes, {} zero pages (holes in the stream)",
                zero / PAGE
            ),
        ),
        ("device sections".into(), p.device_names.len().to_string()),
        (
            "VMDESCRIPTION".into(),
            match p.vmdesc_at {
                Some(o) => format!("at {o:#x}"),
                None => "absent".into(),
            },
        ),
        ("vCPUs".into(), cpus.len().to_string()),
    ];
    if p.mapped_ram {
        details.push((
            "mapped-ram".into(),
            "yes: pages at fixed offsets, one bitmap per RAM block (QEMU >= 9 `migrate \
             file:` with the mapped-ram capability)"
                .into(),
        ));
    }
    if let Some(b) = p.target_page_bits {
        details.push(("target page bits".into(), b.to_string()));
    }
    if opts.ram_map.is_some() {
        details.push((
            "RAM layout".into(),
            "declared by --ram-map (the largest RAM block across the ranges in order)".into(),
        ));
    }
    if vga {
        details.push((
            "VGA window".into(),
            "0xa0000-0xbffff left out of pc.ram (a VGA device is present)".into(),
        ));
    }
    for w in warnings {
        details.push(("warning".into(), w));
    }
    Ok(Dump {
        path: input.path.clone(),
        format: "qemu-migration",
        details,
        arch,
        memory,
        cpus,
        notes: Vec::new(),
        vmcoreinfo,
    })
}

fn block_list(blocks: &[Block]) -> String {
    let names: Vec<(String, u64)> = blocks.iter().map(|b| (b.name.clone(), b.len)).collect();
    names_list(&names)
}

fn names_list(blocks: &[(String, u64)]) -> String {
    if blocks.is_empty() {
        return "(none: no MEM_SIZE record)".into();
    }
    blocks
        .iter()
        .map(|(n, l)| format!("{n} ({l:#x} bytes)"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse(input: &Input, start: u64) -> Result<Parsed> {
    let mut cur = Cursor::new(input, start);
    let magic = cur.bytes(4)?;
    if magic != MAGIC {
        return Err(cur.err_at(start, "no \"QEVM\" magic: not a QEMU migration stream"));
    }
    let version = cur.be_u32()?;
    if version != VERSION {
        return Err(cur.err_at(
            start + 4,
            format!(
                "stream version {version}; this reader knows version {VERSION} (QEMU 0.13 \
                 and later)"
            ),
        ));
    }
    let mut p = Parsed {
        machine: None,
        blocks: Vec::new(),
        devices: Vec::new(),
        device_names: Vec::new(),
        warnings: Vec::new(),
        vmdesc_at: None,
        target_page_bits: None,
        mapped_ram: false,
    };
    // By id: a stream of many short sections costs one look-up each, not a scan.
    let mut sections: HashMap<u32, SectionInfo> = HashMap::new();
    let mut vmdesc: Option<Option<(u64, Value)>> = None;
    let mut vmdesc_next = 0usize;
    let mut ram = RamState::default();
    loop {
        let at = cur.pos;
        cur.what = "section header".into();
        if cur.at_end() {
            return Err(cur.err_at(
                at,
                "the stream ends before its EOF marker (truncated file: an unfinished save?)",
            ));
        }
        let ty = cur.u8()?;
        match ty {
            EOF => break,
            CONFIGURATION => {
                cur.what = "configuration section".into();
                let len = cur.be_u32()?;
                if len > 255 {
                    return Err(cur.err_at(at + 1, format!("machine name of {len} bytes")));
                }
                let name = cur.bytes(len as usize)?;
                p.machine = Some(String::from_utf8_lossy(&name).into_owned());
                configuration_subsections(&mut cur, &mut p)?;
            }
            SECTION_START | SECTION_FULL => {
                let id = cur.be_u32()?;
                let name = cur.name8()?;
                let instance = cur.be_u32()?;
                let version = cur.be_u32()?;
                let s = SectionInfo {
                    id,
                    name,
                    instance,
                    version,
                };
                cur.what = section_label(&s);
                sections.insert(id, s.clone());
                if s.name == "ram" {
                    if s.version != RAM_VERSION {
                        return Err(cur.err_at(
                            at,
                            format!(
                                "unknown version {} of the ram section (this reader knows \
                                 version {RAM_VERSION})",
                                s.version
                            ),
                        ));
                    }
                    ram_records(&mut cur, &mut p, &mut ram)?;
                } else if ty == SECTION_START {
                    return Err(cur.err_at(
                        at,
                        format!(
                            "iterative section {:?} is not supported (only \"ram\"): the \
                             stream carries more than RAM and device state (block \
                             migration or dirty bitmaps?)",
                            s.name
                        ),
                    ));
                } else {
                    if vmdesc.is_none() {
                        vmdesc = Some(find_vmdesc(input)?);
                    }
                    let Some(Some((vat, desc))) = &vmdesc else {
                        p.warnings.push(format!(
                            "no VMDESCRIPTION at the end of the stream: device state from \
                             offset {at:#x} on is not read (no CPU registers, no VMCOREINFO)"
                        ));
                        return Ok(p);
                    };
                    p.vmdesc_at = Some(*vat);
                    let devs = desc.get("devices").and_then(Value::as_array);
                    let d = devs.and_then(|d| d.get(vmdesc_next));
                    let matches = d.is_some_and(|d| {
                        d.get("name").and_then(Value::as_str) == Some(s.name.as_str())
                            && d.get("instance_id").and_then(Value::as_u64)
                                == Some(u64::from(s.instance))
                    });
                    let Some(d) = d.filter(|_| matches) else {
                        return Err(cur.err_at(
                            at,
                            format!(
                                "device entry {vmdesc_next} of the VMDESCRIPTION (at {vat:#x}) \
                                 does not describe this section",
                            ),
                        ));
                    };
                    vmdesc_next += 1;
                    let want = s.name == "cpu" || s.name == "vmcoreinfo";
                    let mut fields = Vec::new();
                    {
                        let mut out = if want { Some(&mut fields) } else { None };
                        vmdesc::walk(&mut cur, d, "", &mut out, 0)?;
                    }
                    if want {
                        p.devices.push((s.name.clone(), s.instance, fields));
                    }
                    p.device_names.push(s.name.clone());
                }
                footer(&mut cur, id)?;
            }
            SECTION_PART | SECTION_END => {
                let id = cur.be_u32()?;
                let s = sections.get(&id).cloned().ok_or_else(|| {
                    cur.err_at(
                        at,
                        format!("section part for section {id}, which never started"),
                    )
                })?;
                cur.what = section_label(&s);
                if s.name != "ram" {
                    return Err(cur.err_at(
                        at,
                        format!("iterative section {:?} is not supported", s.name),
                    ));
                }
                ram_records(&mut cur, &mut p, &mut ram)?;
                footer(&mut cur, id)?;
            }
            VMDESCRIPTION => {
                return Err(cur.err_at(at, "VMDESCRIPTION before the EOF marker"));
            }
            COMMAND => {
                cur.what = "command section".into();
                let cmd = cur.be_uint(2)?;
                let len = cur.be_uint(2)?;
                // SWITCHOVER_START (QEMU >= 9.1): the source is about to send the device
                // state; nothing to do for a reader of a file
                if cmd == CMD_SWITCHOVER_START && len == 0 {
                    continue;
                }
                return Err(cur.err_at(
                    at,
                    format!(
                        "command {cmd} ({len} bytes): postcopy or a packaged stream; only \
                         precopy streams (a save to a file) are supported"
                    ),
                ));
            }
            FOOTER => return Err(cur.err_at(at, "a section footer outside any section")),
            t => {
                return Err(cur.err_at(at, format!("unknown section type {t:#04x}")));
            }
        }
    }
    if !ram.mem_size_seen {
        return Err(cur.err_at(
            cur.pos,
            "the stream has no RAM (no ram section with a MEM_SIZE record)",
        ));
    }
    Ok(p)
}

/// The configuration section's optional subsections (QEMU ≥ 2.12 adds some when they
/// differ from the defaults): `target-page-bits` (u32), `capabilities` (u32 count, then
/// one-byte-length names), `uuid` (16 bytes).
fn configuration_subsections(cur: &mut Cursor, p: &mut Parsed) -> Result<()> {
    loop {
        if cur.peek(1)?.first() != Some(&SUBSECTION) {
            return Ok(());
        }
        let at = cur.pos;
        cur.u8()?;
        let name = cur.name8()?;
        let _version = cur.be_u32()?;
        match name.as_str() {
            "configuration/target-page-bits" => {
                let bits = cur.be_u32()?;
                if bits != 12 {
                    return Err(cur.err_at(
                        at,
                        format!("target page size 2^{bits}: this reader knows 4 KiB target pages"),
                    ));
                }
                p.target_page_bits = Some(bits);
            }
            "configuration/capabilities" => {
                let n = cur.be_u32()?;
                for _ in 0..n {
                    let cap = cur.name8()?;
                    if cap == "mapped-ram" {
                        p.mapped_ram = true;
                        continue;
                    }
                    if matches!(cap.as_str(), "x-ignore-shared" | "postcopy-ram" | "multifd") {
                        return Err(cur.err_at(
                            at,
                            format!(
                                "migration capability {cap:?} changes the RAM records; \
                                 not supported (save without it)"
                            ),
                        ));
                    }
                }
            }
            "configuration/uuid" => cur.skip(16)?,
            _ => return Err(cur.err_at(at, format!("unknown configuration subsection {name:?}"))),
        }
    }
}

fn footer(cur: &mut Cursor, id: u32) -> Result<()> {
    if cur.peek(1)?.first() != Some(&FOOTER) {
        return Ok(()); // streams of old machine types have no footers
    }
    let at = cur.pos;
    cur.u8()?;
    let got = cur.be_u32()?;
    if got != id {
        return Err(cur.err_at(
            at,
            format!("section footer names section {got}, expected {id}: the section's data is not what its description says"),
        ));
    }
    Ok(())
}

#[derive(Default)]
struct RamState {
    mem_size_seen: bool,
    /// Pages of all blocks listed so far.
    pages: u64,
    /// Block of the previous page record (for CONTINUE).
    last: Option<usize>,
    /// Index in `Parsed::blocks` by name: page records name their block, and a
    /// MEM_SIZE record may list as many blocks as the file has 9-byte pieces.
    by_name: HashMap<String, usize>,
}

fn ram_records(cur: &mut Cursor, p: &mut Parsed, st: &mut RamState) -> Result<()> {
    loop {
        let at = cur.pos;
        let word = cur.be_u64()?;
        let flags = word & (PAGE - 1);
        let addr = word & !(PAGE - 1);
        let bad = flags & (RAM_XBZRLE | RAM_COMPRESS_PAGE | RAM_HOOK | RAM_MULTIFD_FLUSH | 0x1);
        if bad != 0 {
            let what = if flags & RAM_XBZRLE != 0 {
                "an XBZRLE-encoded page (a live migration's delta against an earlier copy)"
            } else if flags & RAM_COMPRESS_PAGE != 0 {
                "a zlib-compressed page (the `compress` migration capability)"
            } else if flags & RAM_HOOK != 0 {
                "an RDMA hook record"
            } else if flags & RAM_MULTIFD_FLUSH != 0 {
                "a multifd flush: a multifd migration without mapped-ram, whose pages \
                 travel in other channels, not in this file (with multifd, save with the \
                 mapped-ram capability to `migrate file:PATH`)"
            } else {
                "the obsolete FULL flag"
            };
            return Err(cur.err_at(
                at,
                format!(
                    "RAM record {word:#x} is {what}: not supported; save the guest to a \
                     file without that migration capability"
                ),
            ));
        }
        if flags & !(RAM_ZERO | RAM_MEM_SIZE | RAM_PAGE | RAM_EOS | RAM_CONTINUE) != 0 {
            return Err(cur.err_at(
                at,
                format!("RAM record {word:#x} has unknown flags {flags:#x}"),
            ));
        }
        if flags & RAM_MEM_SIZE != 0 {
            if st.mem_size_seen {
                return Err(cur.err_at(at, "a second MEM_SIZE record"));
            }
            st.mem_size_seen = true;
            let total = addr;
            let mut sum = 0u64;
            while sum < total {
                let bat = cur.pos;
                let name = cur.name8()?;
                let len = cur.be_u64()?;
                if len % PAGE != 0 || len == 0 {
                    return Err(cur.err_at(
                        bat,
                        format!("RAM block {name:?} has length {len:#x}, not a multiple of {PAGE}"),
                    ));
                }
                sum = sum
                    .checked_add(len)
                    .filter(|&s| s <= total)
                    .ok_or_else(|| {
                        cur.err_at(
                            bat,
                            format!(
                                "RAM block {name:?} ({len:#x} bytes) runs past the total \
                             {total:#x} of the MEM_SIZE record"
                            ),
                        )
                    })?;
                if st.by_name.contains_key(&name) {
                    return Err(cur.err_at(bat, format!("RAM block {name:?} listed twice")));
                }
                // The index is 8 bytes per page. Every page is sent at least once, in
                // a record of at least 9 bytes: blocks with more pages than the file
                // could send are a lie or a truncated stream, not an allocation.
                let pages = len / PAGE;
                st.pages = st.pages.saturating_add(pages);
                if st.pages > cur.input.len / 9 + 1 {
                    return Err(cur.err_at(
                        bat,
                        format!(
                            "RAM block {name:?} ({len:#x} bytes) brings the RAM to {:#x} \
                             pages, more than a {:#x}-byte stream can send (each page \
                             takes at least 9 bytes): truncated file, or a corrupt \
                             MEM_SIZE record",
                            st.pages, cur.input.len
                        ),
                    ));
                }
                let pages = if p.mapped_ram {
                    mapped_ram::block(cur, &name, len)?
                } else {
                    vec![MISSING; pages as usize]
                };
                st.by_name.insert(name.clone(), p.blocks.len());
                p.blocks.push(Block { name, len, pages });
            }
        }
        if flags & (RAM_ZERO | RAM_PAGE) != 0 {
            if p.mapped_ram {
                return Err(cur.err_at(
                    at,
                    "a page record in a mapped-ram file (its pages are at fixed offsets, \
                     given by each block's bitmap)",
                ));
            }
            if flags & RAM_ZERO != 0 && flags & RAM_PAGE != 0 {
                return Err(cur.err_at(at, "RAM record with both ZERO and PAGE"));
            }
            let bi = if flags & RAM_CONTINUE != 0 {
                st.last.ok_or_else(|| {
                    cur.err_at(at, "RAM record says CONTINUE, but no block came before")
                })?
            } else {
                let name = cur.name8()?;
                st.by_name.get(&name).copied().ok_or_else(|| {
                    cur.err_at(
                        at,
                        format!("RAM page of block {name:?}, which MEM_SIZE did not list"),
                    )
                })?
            };
            st.last = Some(bi);
            let b = &mut p.blocks[bi];
            let idx = (addr / PAGE) as usize;
            let Some(slot) = b.pages.get_mut(idx) else {
                return Err(cur.err_at(
                    at,
                    format!(
                        "RAM page at offset {addr:#x} of block {:?}, which is {:#x} bytes: \
                         outside its block",
                        b.name, b.len
                    ),
                ));
            };
            if flags & RAM_ZERO != 0 {
                let fill = cur.u8()?;
                if fill != 0 {
                    return Err(cur.err_at(
                        at,
                        format!("a ZERO page record with fill byte {fill:#04x} (not zero)"),
                    ));
                }
                *slot = ZERO;
            } else {
                *slot = cur.pos;
                cur.skip(PAGE)?;
            }
        }
        if flags & RAM_EOS != 0 {
            return Ok(());
        }
        if flags == 0 {
            return Err(cur.err_at(at, format!("RAM record {word:#x} has no flags")));
        }
    }
}

/// The VMDESCRIPTION from the end of the file (None when there is none).
fn find_vmdesc(input: &Input) -> Result<Option<(u64, Value)>> {
    // QEMU's own descriptions are ~100 KiB for a small guest: look at the last MiB
    // first, then further back, up to 64 MiB.
    for window in [1u64 << 20, 16 << 20, 64 << 20] {
        let n = input.len.min(window);
        let at = input.len - n;
        let tail = input.read_vec(at, n, FMT, "the end of the stream (VMDESCRIPTION)")?;
        if let Some(found) = vmdesc::find(&tail, at, input.len) {
            return Ok(Some(found));
        }
        if n == input.len {
            break;
        }
    }
    Ok(None)
}

/// The stream's RAM: placed blocks, read through the page index.
struct StreamMemory {
    path: std::path::PathBuf,
    file: Arc<File>,
    ranges: Vec<PhysRange>,
    /// (placement, that block's page index), sorted by address.
    pieces: Vec<(PhysRange, u64, Arc<Vec<u64>>)>,
}

impl StreamMemory {
    fn new(input: &Input, blocks: &mut [Block], placed: &[layout::Placement]) -> StreamMemory {
        let mut idx: Vec<Option<Arc<Vec<u64>>>> = vec![None; blocks.len()];
        let mut pieces = Vec::new();
        for pl in placed {
            let pages = idx[pl.block]
                .get_or_insert_with(|| Arc::new(std::mem::take(&mut blocks[pl.block].pages)))
                .clone();
            pieces.push((pl.phys, pl.block_offset, pages));
        }
        pieces.sort_by_key(|p| p.0.start);
        let ranges = dumpconv_core::memory::normalize_ranges(pieces.iter().map(|p| p.0).collect());
        StreamMemory {
            path: input.path.clone(),
            file: Arc::clone(&input.file),
            ranges,
            pieces,
        }
    }

    /// (piece, page entry, offset in page, bytes to the end of the page or piece).
    fn locate(&self, addr: u64) -> Option<(u64, u64, u64)> {
        let i = self.pieces.partition_point(|p| p.0.end <= addr);
        let (phys, boff, pages) = self.pieces.get(i).filter(|p| p.0.contains(addr))?;
        let off = boff + (addr - phys.start);
        let entry = *pages.get((off / PAGE) as usize)?;
        let in_page = off % PAGE;
        let n = (PAGE - in_page).min(phys.end - addr);
        Some((entry, in_page, n))
    }
}

impl PhysicalMemory for StreamMemory {
    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
        read_in_pieces(paddr, buf, |addr, out| {
            let (entry, in_page, n) = self.locate(addr).ok_or(Error::Hole { paddr: addr })?;
            let n = n.min(out.len() as u64) as usize;
            let out = &mut out[..n];
            match entry {
                MISSING => {
                    return Err(Error::PageUnavailable {
                        paddr: addr,
                        why: "not in the migration stream",
                    })
                }
                ZERO => out.fill(0),
                off => dumpconv_core::memory::read_file_at(
                    &self.file,
                    &self.path,
                    off + in_page,
                    out,
                    FMT,
                    || format!("the page of physical address {addr:#x}"),
                )?,
            }
            Ok(n)
        })
    }

    fn backing(&self, paddr: u64) -> Option<Backing<'_>> {
        let (entry, in_page, n) = self.locate(paddr)?;
        match entry {
            MISSING => None,
            ZERO => {
                // extend over following zero pages of the same piece
                let mut len = n;
                while let Some((ZERO, 0, m)) = self.locate(paddr + len) {
                    len += m;
                    if len >= 1 << 30 {
                        break;
                    }
                }
                Some(Backing::Zero { len })
            }
            off => Some(Backing::File {
                file: &self.file,
                offset: off + in_page,
                len: n,
            }),
        }
    }
}
