//! Where a machine type puts its RAM blocks in guest-physical memory.
//!
//! A migration stream names RAM blocks (`pc.ram`, `mach-virt.ram`, ROMs such as
//! `pc.bios`) and their lengths, never their guest-physical addresses: those follow from
//! the machine type the configuration section names. The rules, per machine type, as
//! QEMU's board code sets them up (with the default `max-ram-below-4g`; a machine started
//! with another value, or with memory devices such as `pc-dimm`, needs its RAM map given
//! by hand):
//!
//! | machine | block | placement |
//! |---|---|---|
//! | `pc-i440fx-*` (`pc`) | `pc.ram` | RAM below 3.5 GiB all at 0; 3.5 GiB or more: the first 3 GiB at 0, the rest at 4 GiB (machine types before 2.0: the first 3.5 GiB) |
//! | `pc-q35-*` (`q35`) | `pc.ram` | RAM below 2.75 GiB all at 0; 2.75 GiB or more: the first 2 GiB at 0, the rest at 4 GiB (machine types before 2.0: 2.75 GiB) |
//! | `virt-*` (arm64) | `mach-virt.ram` | all at 1 GiB (0x4000_0000) |
//!
//! Other blocks (firmware ROMs, option ROMs, ACPI tables in `/rom@etc/...`) are not RAM
//! and are not placed. On x86, when the stream holds a VGA device's state, the legacy
//! VGA window 0xa0000–0xbffff is MMIO in front of `pc.ram`: those 128 KiB of `pc.ram`
//! are left out, as QEMU's own `dump-guest-memory` leaves them out (it dumps the RAM the
//! guest's flat physical view shows).

use dumpconv_core::PhysRange;

/// 4 GiB, where x86 RAM above the PCI hole starts.
const FOUR_GIB: u64 = 1 << 32;
/// The legacy VGA window, in front of `pc.ram` when a VGA device exists.
pub const VGA_WINDOW: PhysRange = PhysRange {
    start: 0xa_0000,
    end: 0xc_0000,
};

/// One piece of a RAM block placed in guest-physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Index of the block in the stream's block list.
    pub block: usize,
    /// Offset of the piece inside the block.
    pub block_offset: u64,
    /// Where the piece is in guest-physical memory.
    pub phys: PhysRange,
}

/// The machine families whose RAM layout is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// i440fx; `gigabyte_align` false for machine types before 2.0.
    I440fx { gigabyte_align: bool },
    /// Q35; `gigabyte_align` false for machine types before 2.0.
    Q35 { gigabyte_align: bool },
    /// arm64 `virt`.
    ArmVirt,
}

/// The family of a machine type name, as the configuration section spells it
/// (`pc-i440fx-7.2`, `pc-q35-7.2`, `virt-7.2`, or an old `pc-1.3`).
pub fn machine(name: &str) -> Option<Machine> {
    let old = |ver: &str| ver.starts_with("0.") || ver.starts_with("1.");
    if let Some(v) = name.strip_prefix("pc-i440fx-") {
        return Some(Machine::I440fx {
            gigabyte_align: !old(v),
        });
    }
    if let Some(v) = name.strip_prefix("pc-q35-") {
        return Some(Machine::Q35 {
            gigabyte_align: !old(v),
        });
    }
    if name == "pc" {
        return Some(Machine::I440fx {
            gigabyte_align: true,
        });
    }
    if name == "q35" {
        return Some(Machine::Q35 {
            gigabyte_align: true,
        });
    }
    if let Some(v) = name.strip_prefix("pc-") {
        // pc-0.10 ... pc-1.3: the i440fx machine before its types were renamed
        if v.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(Machine::I440fx {
                gigabyte_align: false,
            });
        }
    }
    if name == "virt" || name.starts_with("virt-") {
        return Some(Machine::ArmVirt);
    }
    None
}

/// Bytes of x86 `pc.ram` placed below 4 GiB for a guest of `ram` bytes.
pub fn below_4g(m: Machine, ram: u64) -> u64 {
    match m {
        Machine::I440fx { gigabyte_align } => {
            let max_below = 0xe000_0000; // 3.5 GiB
            if ram >= max_below {
                if gigabyte_align {
                    0xc000_0000
                } else {
                    max_below
                }
            } else {
                ram
            }
        }
        Machine::Q35 { gigabyte_align } => {
            if ram >= 0xb000_0000 {
                if gigabyte_align {
                    0x8000_0000
                } else {
                    0xb000_0000
                }
            } else {
                ram
            }
        }
        Machine::ArmVirt => ram,
    }
}

/// Place the blocks (`(name, length)` in stream order) for machine `m`. `vga`: the
/// stream holds a VGA device (x86: the VGA window is cut out of `pc.ram`). Returns the
/// placements, sorted by address, or the name of the RAM block the machine needs when
/// the stream lacks it.
pub fn place(m: Machine, blocks: &[(String, u64)], vga: bool) -> Result<Vec<Placement>, String> {
    let want = match m {
        Machine::I440fx { .. } | Machine::Q35 { .. } => "pc.ram",
        Machine::ArmVirt => "mach-virt.ram",
    };
    let (block, len) = blocks
        .iter()
        .enumerate()
        .find(|(_, (n, _))| n == want)
        .map(|(i, (_, l))| (i, *l))
        .ok_or_else(|| want.to_string())?;
    let mut out = Vec::new();
    let mut put = |block_offset: u64, start: u64, len: u64| {
        if len > 0 {
            out.push(Placement {
                block,
                block_offset,
                phys: PhysRange::with_len(start, len),
            });
        }
    };
    match m {
        Machine::ArmVirt => put(0, 0x4000_0000, len),
        Machine::I440fx { .. } | Machine::Q35 { .. } => {
            let low = below_4g(m, len);
            if vga && low >= VGA_WINDOW.end {
                put(0, 0, VGA_WINDOW.start);
                put(VGA_WINDOW.end, VGA_WINDOW.end, low - VGA_WINDOW.end);
            } else {
                put(0, 0, low);
            }
            put(low, FOUR_GIB, len - low);
        }
    }
    Ok(out)
}

/// Place a machine's RAM as the user declared it (`--ram-map`, for a machine type with no
/// known rule): the stream's largest RAM block laid across `ranges` (sorted, disjoint) in
/// address order, each range taking the block's next bytes. The ranges must hold the
/// whole block, no more and no less: a map that drops or invents RAM is refused. A
/// layout that skips bytes of the block (the VGA window of x86 `pc` machines) cannot be
/// declared this way; those machines have their rule above.
pub fn place_declared(
    blocks: &[(String, u64)],
    ranges: &[PhysRange],
) -> Result<Vec<Placement>, String> {
    let Some((block, (name, len))) = blocks
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, l))| (*l, std::cmp::Reverse(*i)))
    else {
        return Err("the stream has no RAM block".into());
    };
    let declared: u64 = ranges.iter().map(PhysRange::len).sum();
    if declared != *len {
        return Err(format!(
            "the RAM map declares {declared:#x} bytes, but the largest RAM block, \
             {name:?}, holds {len:#x}: give ranges that add up to the block"
        ));
    }
    let mut at = 0;
    Ok(ranges
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            let p = Placement {
                block,
                block_offset: at,
                phys: *r,
            };
            at += r.len();
            p
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_layout_lays_the_largest_block_across_the_ranges() {
        let blocks = vec![
            ("pc.bios".to_string(), 0x4_0000),
            ("ram".to_string(), 0x3000_0000),
        ];
        let ranges = [
            PhysRange::new(0, 0x1000_0000),
            PhysRange::new(0x1_0000_0000, 0x1_2000_0000),
        ];
        let p = place_declared(&blocks, &ranges).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].block, p[0].block_offset, p[0].phys),
            (1, 0, ranges[0])
        );
        assert_eq!(
            (p[1].block, p[1].block_offset, p[1].phys),
            (1, 0x1000_0000, ranges[1])
        );
        let short = place_declared(&blocks, &ranges[..1]).unwrap_err();
        assert!(
            short.contains("0x10000000") && short.contains("\"ram\""),
            "{short}"
        );
        assert!(place_declared(&[], &ranges).is_err());
    }

    #[test]
    fn machine_names() {
        assert_eq!(
            machine("pc-i440fx-7.2"),
            Some(Machine::I440fx {
                gigabyte_align: true
            })
        );
        assert_eq!(
            machine("pc-q35-1.7"),
            Some(Machine::Q35 {
                gigabyte_align: false
            })
        );
        assert_eq!(
            machine("pc-1.3"),
            Some(Machine::I440fx {
                gigabyte_align: false
            })
        );
        assert_eq!(machine("virt-7.2"), Some(Machine::ArmVirt));
        assert_eq!(machine("microvm"), None);
        assert_eq!(machine("pseries-7.2"), None);
    }

    #[test]
    fn x86_splits() {
        const G: u64 = 1 << 30;
        let i440 = Machine::I440fx {
            gigabyte_align: true,
        };
        let q35 = Machine::Q35 {
            gigabyte_align: true,
        };
        assert_eq!(below_4g(i440, 512 << 20), 512 << 20);
        assert_eq!(below_4g(i440, 3 * G + G / 4), 3 * G + G / 4);
        assert_eq!(below_4g(i440, 4608 << 20), 3 * G);
        assert_eq!(below_4g(q35, 2 * G + G / 2), 2 * G + G / 2);
        assert_eq!(below_4g(q35, 3 * G), 2 * G);
        let blocks = vec![
            ("pc.bios".to_string(), 0x40000),
            ("pc.ram".into(), 4608 << 20),
        ];
        let p = place(i440, &blocks, true).unwrap();
        assert_eq!(
            p.iter()
                .map(|p| (p.block_offset, p.phys))
                .collect::<Vec<_>>(),
            vec![
                (0, PhysRange::new(0, 0xa0000)),
                (0xc0000, PhysRange::new(0xc0000, 3 * G)),
                (3 * G, PhysRange::new(4 * G, 4 * G + (4608 << 20) - 3 * G)),
            ]
        );
        assert!(p.iter().all(|p| p.block == 1));
        assert_eq!(place(i440, &blocks[..1], false), Err("pc.ram".into()));
    }
}
