//! The Linux VMCOREINFO note: `KEY=value` lines. The raw bytes are kept so the note
//! can be written back unchanged; the parsed lines serve look-ups.
//!
//! Value formats differ by key (docs/formats.md#vmcoreinfo): `SYMBOL(x)` and
//! `KERNELOFFSET` are hex without 0x, `NUMBER(x)`, `SIZE(x)`, `OFFSET(x)`, `LENGTH(x)` are
//! decimal (NUMBER may be negative), `NUMBER(VMALLOC_START)` is hex with 0x.

// Also here, because they are driven by VMCOREINFO alone:
// - `VmcoreInfo::kernel_image_phys`: the physical address of a kernel-image virtual
//   address (a `SYMBOL(..)` value) without a page walk, one rule per architecture;
// - `VmcoreInfo::read_kernel_utsname`: the kernel's `new_utsname` read from
//   `init_uts_ns`, as makedumpfile puts it in a kdump header;
// - `VmcoreInfo::linear_map`: where a 32-bit x86 kernel maps low memory (PAGE_OFFSET,
//   checked by reading `init_uts_ns` through it), for the ELF writer's `p_vaddr`;
// - `VmcoreInfoFile`: what a user's `--vmcoreinfo FILE` holds (KEY=value text, or the
//   `ADDR SIZE` of `/sys/kernel/vmcoreinfo` resolved against the dump's memory).

use std::path::Path;

use crate::error::{Error, Result};
use crate::memory::PhysicalMemory;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmcoreInfo {
    raw: Vec<u8>,
    entries: Vec<(String, String)>,
}

impl VmcoreInfo {
    /// Parse the note descriptor. Lines without '=' are ignored; the text may or may
    /// not end with NULs.
    pub fn parse(raw: &[u8]) -> VmcoreInfo {
        let text_end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = String::from_utf8_lossy(&raw[..text_end]);
        let entries = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        VmcoreInfo {
            raw: raw.to_vec(),
            entries,
        }
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The value of the first line with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `SYMBOL(name)` as an address.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        parse_hex(self.get(&format!("SYMBOL({name})"))?)
    }

    /// `NUMBER(name)`, decimal, possibly negative; falls back to hex with 0x (as the
    /// kernel prints VMALLOC_START and friends).
    pub fn number(&self, name: &str) -> Option<i64> {
        let v = self.get(&format!("NUMBER({name})"))?;
        if let Some(h) = v.strip_prefix("0x") {
            return u64::from_str_radix(h, 16).ok().map(|u| u as i64);
        }
        v.parse::<i64>().ok()
    }

    pub fn osrelease(&self) -> Option<&str> {
        self.get("OSRELEASE")
    }

    pub fn page_size(&self) -> Option<u64> {
        self.get("PAGESIZE")?.parse().ok()
    }

    /// x86_64 physical load offset of the kernel: `NUMBER(phys_base)` (decimal, as the
    /// kernel prints it; QEMU misreads it as hex).
    pub fn phys_base(&self) -> Option<u64> {
        self.number("phys_base").map(|v| v as u64)
    }

    /// KASLR virtual slide.
    pub fn kernel_offset(&self) -> Option<u64> {
        parse_hex(self.get("KERNELOFFSET")?)
    }

    /// AMD SME C-bit mask to clear from table entries.
    pub fn sme_mask(&self) -> Option<u64> {
        self.number("sme_mask").map(|v| v as u64)
    }

    pub fn pgtable_l5_enabled(&self) -> Option<bool> {
        self.number("pgtable_l5_enabled").map(|v| v != 0)
    }
}

/// ELF machine numbers the address rules know.
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
/// x86-64 `__START_KERNEL_map`: the kernel image is mapped here, `phys_base` above 0.
const X86_64_START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// 32-bit x86 `PAGE_OFFSET` choices (CONFIG_VMSPLIT_*), the default 3G/1G split first.
/// VMCOREINFO does not state it on x86, so callers check what they read there.
const I386_PAGE_OFFSETS: [u64; 5] = [
    0xc000_0000,
    0xb000_0000,
    0x8000_0000,
    0x7800_0000,
    0x4000_0000,
];

/// 32-bit x86 `__VMALLOC_RESERVE` default (128 MiB): low memory, mapped linearly at
/// PAGE_OFFSET, ends this far below the top of the 4 GiB address space at most.
const I386_VMALLOC_RESERVE: u64 = 128 << 20;

/// A kernel's linear map of low physical memory: physical `p` in `[0, phys_end)` is at
/// virtual `virt_base + p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearMap {
    pub virt_base: u64,
    pub phys_end: u64,
}

impl LinearMap {
    /// The virtual address of physical `[paddr, paddr + len)` if all of it is mapped.
    pub fn virt_of(&self, paddr: u64, len: u64) -> Option<u64> {
        let end = paddr.checked_add(len)?;
        (end <= self.phys_end).then(|| self.virt_base.checked_add(paddr))?
    }
}

/// Length of one `new_utsname` field (`__NEW_UTS_LEN + 1`).
pub const UTS_FIELD_LEN: usize = 65;
/// `struct new_utsname`: sysname, nodename, release, version, machine, domainname.
pub type KernelUtsname = [[u8; UTS_FIELD_LEN]; 6];
/// How far into `struct uts_namespace` `name` is looked for when VMCOREINFO has no
/// `OFFSET(uts_namespace.name)` (old kernels put a `struct kref` first; 6.1 puts `name`
/// first and states the offset).
const UTS_NAME_SEARCH: usize = 64;

impl VmcoreInfo {
    /// Decimal `OFFSET(name)`.
    pub fn offset(&self, name: &str) -> Option<u64> {
        self.get(&format!("OFFSET({name})"))?.parse().ok()
    }

    /// Where a kernel-image virtual address (a `SYMBOL(..)` value: text, data, bss) is in
    /// physical memory, without a page walk. Keyed on the ELF machine (`e_machine`) so it
    /// does not depend on how the caller names architectures. Candidates, most likely
    /// first; empty when no rule applies. The caller checks what it reads there.
    ///
    /// - x86_64: `vaddr - __START_KERNEL_map (0xffffffff80000000) + NUMBER(phys_base)`.
    ///   `KERNELOFFSET` (KASLR) is already inside the SYMBOL values.
    /// - i386: `vaddr - PAGE_OFFSET`, the kernel image lying in the direct map:
    ///   `NUMBER(PAGE_OFFSET)` when VMCOREINFO has it, else 0xC0000000 (Debian's 686
    ///   kernels), then the other VMSPLIT values.
    /// - aarch64: `vaddr - NUMBER(kimage_voffset)`.
    pub fn kernel_image_phys(&self, e_machine: u16, vaddr: u64) -> Vec<u64> {
        match e_machine {
            EM_X86_64 if vaddr >= X86_64_START_KERNEL_MAP => {
                let phys_base = self.number("phys_base").unwrap_or(0);
                vec![(vaddr - X86_64_START_KERNEL_MAP).wrapping_add(phys_base as u64)]
            }
            EM_386 => {
                let stated = self.number("PAGE_OFFSET").map(|v| v as u64);
                let mut out: Vec<u64> = Vec::new();
                for po in stated.into_iter().chain(I386_PAGE_OFFSETS) {
                    if vaddr >= po && !out.contains(&(vaddr - po)) {
                        out.push(vaddr - po);
                    }
                }
                out
            }
            EM_AARCH64 => self
                .number("kimage_voffset")
                .map(|off| vaddr.wrapping_sub(off as u64))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The kernel's `new_utsname` (what `uname` prints), read from `init_uts_ns` in
    /// `mem`: `SYMBOL(init_uts_ns)` translated by [`Self::kernel_image_phys`], `name` at
    /// `OFFSET(uts_namespace.name)` when stated, else found in the first 64 bytes of the
    /// struct. Accepted only if sysname is "Linux", every field is NUL-terminated
    /// printable text and release equals `OSRELEASE`. Bytes after each field's NUL are
    /// zeroed. The error says why not, for a warning.
    pub fn read_kernel_utsname(
        &self,
        e_machine: u16,
        mem: &dyn PhysicalMemory,
    ) -> std::result::Result<KernelUtsname, String> {
        self.find_kernel_utsname(e_machine, mem).map(|(u, _)| u)
    }

    /// Where low memory is linearly mapped, as `/proc/vmcore` states it in its PT_LOADs'
    /// `p_vaddr` (readers such as makedumpfile find the kernel through it). Only for
    /// 32-bit x86 (`e_machine` EM_386), whose kernel image lies in that map: PAGE_OFFSET
    /// is the [`Self::kernel_image_phys`] candidate through which `init_uts_ns` reads as
    /// the kernel's utsname (so a wrong VMSPLIT guess is never taken); low memory ends at
    /// `4 GiB - PAGE_OFFSET - 128 MiB` (the default vmalloc reserve, the bound
    /// `/proc/vmcore` uses too). None for other machines or when the check fails.
    pub fn linear_map(&self, e_machine: u16, mem: &dyn PhysicalMemory) -> Option<LinearMap> {
        if e_machine != EM_386 {
            return None;
        }
        let sym = self.symbol("init_uts_ns")?;
        let (_, phys) = self.find_kernel_utsname(e_machine, mem).ok()?;
        let virt_base = sym.checked_sub(phys)?;
        let phys_end = (1u64 << 32)
            .checked_sub(virt_base)?
            .checked_sub(I386_VMALLOC_RESERVE)?;
        Some(LinearMap {
            virt_base,
            phys_end,
        })
    }

    /// [`Self::read_kernel_utsname`] and the physical address of `init_uts_ns` it used.
    fn find_kernel_utsname(
        &self,
        e_machine: u16,
        mem: &dyn PhysicalMemory,
    ) -> std::result::Result<(KernelUtsname, u64), String> {
        let sym = self
            .symbol("init_uts_ns")
            .ok_or("VMCOREINFO has no SYMBOL(init_uts_ns)")?;
        let candidates = self.kernel_image_phys(e_machine, sym);
        if candidates.is_empty() {
            return Err(format!(
                "no rule to find kernel address {sym:#x} in physical memory for ELF machine \
                 {e_machine}"
            ));
        }
        let stated = self
            .offset("uts_namespace.name")
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o <= 4096);
        let size = UTS_FIELD_LEN * 6;
        let mut why = String::new();
        for base in candidates {
            let span = stated.unwrap_or(UTS_NAME_SEARCH) + size;
            let mut buf = vec![0u8; span];
            if let Err(e) = mem.read_at(base, &mut buf) {
                if why.is_empty() {
                    why = format!("init_uts_ns at {sym:#x} (physical {base:#x}): {e}");
                }
                continue;
            }
            let offsets: Vec<usize> = match stated {
                Some(o) => vec![o],
                None => (0..=UTS_NAME_SEARCH).step_by(4).collect(),
            };
            for off in offsets {
                if let Some(u) = utsname_from(&buf[off..off + size], self.osrelease()) {
                    return Ok((u, base));
                }
            }
            if why.is_empty() {
                why = format!(
                    "init_uts_ns at {sym:#x} (physical {base:#x}) does not hold a utsname \
                     with sysname \"Linux\" and release {:?}",
                    self.osrelease().unwrap_or("")
                );
            }
        }
        // The reason for the most likely address (the first).
        Err(why)
    }
}

/// The six fields if `b` (390 bytes) looks like the kernel's `new_utsname`.
fn utsname_from(b: &[u8], release: Option<&str>) -> Option<KernelUtsname> {
    let mut out = [[0u8; UTS_FIELD_LEN]; 6];
    for (i, field) in b.chunks_exact(UTS_FIELD_LEN).enumerate() {
        let end = field.iter().position(|&c| c == 0)?;
        if !field[..end].iter().all(|c| (0x20..0x7f).contains(c)) {
            return None;
        }
        out.get_mut(i)?[..end].copy_from_slice(&field[..end]);
    }
    let text = |i: usize| {
        let f = &out[i];
        let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
        &f[..end]
    };
    let release_ok = match release {
        Some(r) => text(2) == r.as_bytes(),
        None => !text(2).is_empty(),
    };
    (text(0) == b"Linux" && release_ok && !text(4).is_empty()).then_some(out)
}

/// The most a `--vmcoreinfo` note read from memory may be (VMCOREINFO_NOTE_SIZE is a
/// page plus a few bytes; 64 KiB pages on some arm64 kernels).
const MAX_NOTE_READ: u64 = 1 << 20;

/// What a user's `--vmcoreinfo FILE` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmcoreInfoFile {
    /// VMCOREINFO text (KEY=value lines with at least `OSRELEASE=`), or a whole
    /// VMCOREINFO ELF note (its descriptor is taken).
    Text(VmcoreInfo),
    /// `/sys/kernel/vmcoreinfo` of the dumped machine: "ADDR SIZE", both hex, the
    /// physical address and size of the kernel's VMCOREINFO ELF note. The note is read
    /// from the dump's memory ([`VmcoreInfoFile::resolve`]).
    Address { paddr: u64, size: u64 },
}

impl VmcoreInfoFile {
    /// Read and check `path`. A file that is neither form is refused
    /// ([`Error::Invalid`]: bad input given on the command line, a usage error).
    pub fn read(path: &Path) -> Result<VmcoreInfoFile> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        VmcoreInfoFile::parse(&bytes, path)
    }

    /// Check the bytes of a `--vmcoreinfo` file (`path` names it in messages).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<VmcoreInfoFile> {
        if let Some((paddr, size)) = parse_addr_size(bytes) {
            if size == 0 || size > MAX_NOTE_READ {
                return Err(Error::invalid(format!(
                    "--vmcoreinfo {}: \"ADDR SIZE\" form (as in /sys/kernel/vmcoreinfo) with \
                     size {size:#x}: expected 1 to {MAX_NOTE_READ:#x} bytes",
                    path.display()
                )));
            }
            return Ok(VmcoreInfoFile::Address { paddr, size });
        }
        let desc = note_descriptor(bytes).unwrap_or(bytes);
        let v = VmcoreInfo::parse(desc);
        check_osrelease(&v).map_err(|why| {
            Error::invalid(format!(
                "--vmcoreinfo {}: {why}: not VMCOREINFO text (KEY=value lines as in the \
                 kernel's VMCOREINFO note, OSRELEASE= among them, as `makedumpfile -g FILE \
                 -x vmlinux` writes); a copy of /sys/kernel/vmcoreinfo (\"ADDR SIZE\") is \
                 also accepted",
                path.display()
            ))
        })?;
        Ok(VmcoreInfoFile::Text(v))
    }

    /// The VMCOREINFO this file gives for a dump whose memory is `mem` (`dump` names it
    /// in messages): the text itself, or the note read from memory at the address.
    pub fn resolve(&self, mem: &dyn PhysicalMemory, dump: &Path) -> Result<VmcoreInfo> {
        let (paddr, size) = match self {
            VmcoreInfoFile::Text(v) => return Ok(v.clone()),
            VmcoreInfoFile::Address { paddr, size } => (*paddr, *size),
        };
        let at = format!(
            "--vmcoreinfo gives the VMCOREINFO note at physical {paddr:#x} (+{size:#x}), but in {}",
            dump.display()
        );
        // The size is that of the kernel's buffer; the note may be shorter. Read what
        // RAM has, at least the note header.
        let mut len = size;
        while len > 12 && !mem.is_ram(paddr, len) {
            len = (len / 2).max(12);
        }
        let mut buf = vec![0u8; len as usize];
        mem.read_at(paddr, &mut buf)
            .map_err(|e| Error::invalid(format!("{at}: {e}")))?;
        let desc = note_descriptor(&buf).ok_or_else(|| {
            Error::invalid(format!(
                "{at}: no complete ELF note named VMCOREINFO starts there (is the file from \
                 the machine this dump was taken of?)"
            ))
        })?;
        let v = VmcoreInfo::parse(desc);
        check_osrelease(&v).map_err(|why| Error::invalid(format!("{at}: the note has {why}")))?;
        Ok(v)
    }
}

fn check_osrelease(v: &VmcoreInfo) -> std::result::Result<(), &'static str> {
    match v.osrelease() {
        Some(r) if !r.is_empty() => Ok(()),
        Some(_) => Err("OSRELEASE= is empty"),
        None => Err("no OSRELEASE= line"),
    }
}

/// "ADDR SIZE" as `/sys/kernel/vmcoreinfo` prints it: two hex numbers, with or without
/// 0x, on one line.
fn parse_addr_size(bytes: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut words = text.split_ascii_whitespace();
    let (a, s) = (words.next()?, words.next()?);
    if words.next().is_some() || text.trim().lines().count() != 1 {
        return None;
    }
    let hex = |w: &str| {
        let w = w
            .strip_prefix("0x")
            .or_else(|| w.strip_prefix("0X"))
            .unwrap_or(w);
        (!w.is_empty() && w.len() <= 16 && w.bytes().all(|c| c.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(w, 16).ok())
            .flatten()
    };
    Some((hex(a)?, hex(s)?))
}

/// The descriptor of an ELF note named "VMCOREINFO" at the start of `b` (either byte
/// order), if the whole note fits in `b`.
fn note_descriptor(b: &[u8]) -> Option<&[u8]> {
    const NAME: &[u8] = b"VMCOREINFO";
    let hdr: [u8; 12] = b.get(..12)?.try_into().ok()?;
    for big in [false, true] {
        let word = |i: usize| {
            let w = [hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]];
            if big {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        let (namesz, descsz) = (word(0) as usize, word(4) as usize);
        if namesz != NAME.len() + 1 {
            continue;
        }
        let name = b.get(12..12 + namesz)?;
        if &name[..NAME.len()] != NAME || name[NAME.len()] != 0 {
            continue;
        }
        let start = 12 + namesz.next_multiple_of(4);
        return b.get(start..start.checked_add(descsz)?);
    }
    None
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_value_format() {
        let text =
            b"OSRELEASE=6.1.0-28-amd64\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a0a000\n\
NUMBER(phys_base)=-16777216\nKERNELOFFSET=1e00000\nNUMBER(sme_mask)=0\n\
NUMBER(pgtable_l5_enabled)=1\nNUMBER(VMALLOC_START)=0xffffc90000000000\nnoise\n\0\0";
        let v = VmcoreInfo::parse(text);
        assert_eq!(v.osrelease(), Some("6.1.0-28-amd64"));
        assert_eq!(v.page_size(), Some(4096));
        assert_eq!(v.symbol("init_top_pgt"), Some(0xffff_ffff_82a0_a000));
        assert_eq!(v.number("phys_base"), Some(-16777216));
        assert_eq!(v.kernel_offset(), Some(0x1e0_0000));
        assert_eq!(v.sme_mask(), Some(0));
        assert_eq!(v.pgtable_l5_enabled(), Some(true));
        assert_eq!(
            v.number("VMALLOC_START"),
            Some(0xffffc90000000000u64 as i64)
        );
        assert_eq!(v.raw(), &text[..]);
        assert_eq!(v.get("noise"), None);
    }

    use crate::memory::PhysRange;

    /// RAM `[0, len)` in a Vec.
    struct VecMem(Vec<u8>, Vec<PhysRange>);
    impl VecMem {
        fn new(len: usize) -> VecMem {
            VecMem(vec![0; len], vec![PhysRange::new(0, len as u64)])
        }
        fn put(&mut self, at: u64, b: &[u8]) {
            self.0[at as usize..at as usize + b.len()].copy_from_slice(b);
        }
    }
    impl PhysicalMemory for VecMem {
        fn ranges(&self) -> &[PhysRange] {
            &self.1
        }
        fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
            let end = paddr as usize + buf.len();
            if end > self.0.len() {
                return Err(Error::Hole { paddr });
            }
            buf.copy_from_slice(&self.0[paddr as usize..end]);
            Ok(())
        }
    }

    fn uts_bytes(fields: [&str; 6]) -> Vec<u8> {
        let mut b = vec![0u8; UTS_FIELD_LEN * 6];
        for (i, f) in fields.iter().enumerate() {
            b[i * UTS_FIELD_LEN..i * UTS_FIELD_LEN + f.len()].copy_from_slice(f.as_bytes());
        }
        b
    }

    const FIELDS: [&str; 6] = [
        "Linux",
        "guest",
        "6.1.0-57-amd64",
        "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)",
        "x86_64",
        "(none)",
    ];

    fn field(u: &KernelUtsname, i: usize) -> &str {
        let end = u[i].iter().position(|&c| c == 0).unwrap();
        std::str::from_utf8(&u[i][..end]).unwrap()
    }

    #[test]
    fn kernel_image_addresses_per_machine() {
        let v = VmcoreInfo::parse(b"NUMBER(phys_base)=-16777216\nKERNELOFFSET=1e00000\n");
        assert_eq!(
            v.kernel_image_phys(62, 0xffff_ffff_82bf_b000),
            vec![0x2bf_b000 - 0x100_0000]
        );
        // Not a kernel-image address on x86_64.
        assert!(v.kernel_image_phys(62, 0xffff_8880_0000_0000).is_empty());
        let v = VmcoreInfo::parse(b"NUMBER(phys_base)=0\n");
        let i386 = v.kernel_image_phys(3, 0xc1a0_0000);
        assert_eq!(i386[0], 0x01a0_0000);
        assert!(i386.contains(&(0xc1a0_0000 - 0x8000_0000)));
        let v = VmcoreInfo::parse(b"NUMBER(PAGE_OFFSET)=2147483648\n");
        assert_eq!(v.kernel_image_phys(3, 0xc1a0_0000)[0], 0x41a0_0000);
        let v = VmcoreInfo::parse(b"NUMBER(kimage_voffset)=0xffff800007e00000\n");
        assert_eq!(
            v.kernel_image_phys(183, 0xffff_8000_0a00_0000),
            vec![0x0220_0000]
        );
        assert!(v.kernel_image_phys(243, 0xffff_8000_0a00_0000).is_empty());
    }

    #[test]
    fn utsname_at_the_stated_offset_or_found() {
        // 6.1: OFFSET(uts_namespace.name)=0.
        let mut mem = VecMem::new(0x10_0000);
        mem.put(0x8_0000, &uts_bytes(FIELDS));
        let v = VmcoreInfo::parse(
            b"OSRELEASE=6.1.0-57-amd64\nSYMBOL(init_uts_ns)=ffffffff81080000\n\
OFFSET(uts_namespace.name)=0\nNUMBER(phys_base)=-16777216\n",
        );
        let u = v.read_kernel_utsname(62, &mem).unwrap();
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(field(&u, i), *f);
        }
        // Older kernels: a kref first, no OFFSET line: found by searching.
        let mut mem = VecMem::new(0x10_0000);
        mem.put(0x8_0000, &[1, 0, 0, 0]);
        mem.put(0x8_0004, &uts_bytes(FIELDS));
        let v = VmcoreInfo::parse(
            b"OSRELEASE=6.1.0-57-amd64\nSYMBOL(init_uts_ns)=c0080000\nNUMBER(phys_base)=0\n",
        );
        let u = v.read_kernel_utsname(3, &mem).unwrap();
        assert_eq!(field(&u, 3), FIELDS[3]);
        // The same read gives i386's linear map: init_uts_ns at c0080000 was found at
        // physical 0x80000, so PAGE_OFFSET is 0xc0000000; low memory ends 128 MiB
        // under the top of 4 GiB (896 MiB).
        let lm = v.linear_map(3, &mem).unwrap();
        assert_eq!(lm.virt_base, 0xc000_0000);
        assert_eq!(lm.phys_end, 896 << 20);
        assert_eq!(lm.virt_of(0x1000, 0x1000), Some(0xc000_1000));
        assert_eq!(lm.virt_of((896 << 20) - 0x1000, 0x2000), None);
        // Not for x86_64 (its physical ELF keeps p_vaddr = p_paddr, as QEMU's).
        assert_eq!(v.linear_map(62, &mem), None);
        // A release that differs from OSRELEASE is not taken.
        let v = VmcoreInfo::parse(b"OSRELEASE=5.10.0-9-686\nSYMBOL(init_uts_ns)=c0080000\n");
        let e = v.read_kernel_utsname(3, &mem).unwrap_err();
        assert!(e.contains("5.10.0-9-686"), "{e}");
        // Nothing verified, no linear map.
        assert_eq!(v.linear_map(3, &mem), None);
        // Outside RAM, no symbol, unknown machine: reasons, no panic.
        let v =
            VmcoreInfo::parse(b"OSRELEASE=6.1.0-57-amd64\nSYMBOL(init_uts_ns)=ffffffff90000000\n");
        assert!(v
            .read_kernel_utsname(62, &mem)
            .unwrap_err()
            .contains("physical"));
        let v = VmcoreInfo::parse(b"OSRELEASE=6.1.0-57-amd64\n");
        assert!(v
            .read_kernel_utsname(62, &mem)
            .unwrap_err()
            .contains("init_uts_ns"));
        let v = VmcoreInfo::parse(b"OSRELEASE=x\nSYMBOL(init_uts_ns)=c0080000\n");
        assert!(v
            .read_kernel_utsname(999, &mem)
            .unwrap_err()
            .contains("no rule"));
    }

    fn note(desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&11u32.to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&0u32.to_le_bytes());
        n.extend_from_slice(b"VMCOREINFO\0\0");
        n.extend_from_slice(desc);
        n
    }

    #[test]
    fn user_file_forms() {
        let p = Path::new("vi.txt");
        let text = b"OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\n";
        match VmcoreInfoFile::parse(text, p).unwrap() {
            VmcoreInfoFile::Text(v) => assert_eq!(v.osrelease(), Some("6.1.0-57-amd64")),
            other => panic!("{other:?}"),
        }
        // A whole note is accepted too.
        match VmcoreInfoFile::parse(&note(text), p).unwrap() {
            VmcoreInfoFile::Text(v) => assert_eq!(v.raw(), text),
            other => panic!("{other:?}"),
        }
        // /sys/kernel/vmcoreinfo, with and without 0x.
        for t in [
            "1f6e8000 1024\n",
            "0x000000001f6e8000 1024",
            "  1f6e8000\t1024 \n",
        ] {
            assert_eq!(
                VmcoreInfoFile::parse(t.as_bytes(), p).unwrap(),
                VmcoreInfoFile::Address {
                    paddr: 0x1f6e_8000,
                    size: 0x1024
                },
                "{t:?}"
            );
        }
        for bad in [
            &b"PAGESIZE=4096\n"[..],
            b"",
            b"OSRELEASE=\n",
            b"1f6e8000 1024 7\n",
            b"1f6e8000 0\n",
            b"hello world\n",
        ] {
            let e = VmcoreInfoFile::parse(bad, p).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("vi.txt"), "{e}");
        }
    }

    #[test]
    fn address_form_reads_the_note_from_memory() {
        let text = b"OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\n";
        let mut mem = VecMem::new(0x4000);
        mem.put(0x1000, &note(text));
        let dump = Path::new("ram.raw");
        // The size is the kernel's buffer, larger than the note; past RAM's end too.
        for size in [0x1024, 0x10_0000] {
            let f = VmcoreInfoFile::Address {
                paddr: 0x1000,
                size,
            };
            assert_eq!(f.resolve(&mem, dump).unwrap().raw(), text);
        }
        for (paddr, what) in [
            (0x2000, "no complete ELF note"),
            (0x8000, "not in the dump"),
        ] {
            let f = VmcoreInfoFile::Address {
                paddr,
                size: 0x1024,
            };
            let e = f.resolve(&mem, dump).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains(what) && msg.contains("ram.raw"), "{msg}");
        }
        // A note without OSRELEASE.
        mem.put(0x2000, &note(b"PAGESIZE=4096\n"));
        let f = VmcoreInfoFile::Address {
            paddr: 0x2000,
            size: 0x100,
        };
        assert!(f
            .resolve(&mem, dump)
            .unwrap_err()
            .to_string()
            .contains("OSRELEASE"));
    }
}
