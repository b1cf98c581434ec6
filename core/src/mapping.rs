//! Virtual→physical mappings: runs of `(virt, phys, len)`.
//!
//! Merge rule: a run extends the previous one only when both its virtual and its
//! physical start continue the previous run. Aliases (one physical range at several
//! virtual addresses) stay separate runs; the ELF writer gives them one file offset.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Mapping {
    pub virt: u64,
    pub phys: u64,
    pub len: u64,
}

impl Mapping {
    pub fn virt_end(&self) -> u64 {
        self.virt.saturating_add(self.len)
    }
    pub fn phys_end(&self) -> u64 {
        self.phys.saturating_add(self.len)
    }
    /// True when `next` continues `self` in both address spaces.
    pub fn continues_with(&self, next: &Mapping) -> bool {
        self.virt.checked_add(self.len) == Some(next.virt)
            && self.phys.checked_add(self.len) == Some(next.phys)
    }
}

/// A list of mappings. Walkers push leaves in ascending virtual order, which makes
/// merging amortised O(1): only the last run is ever extended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingList {
    runs: Vec<Mapping>,
}

impl MappingList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a leaf, extending the last run when contiguous in both spaces.
    pub fn push(&mut self, m: Mapping) {
        if m.len == 0 {
            return;
        }
        if let Some(last) = self.runs.last_mut() {
            if last.continues_with(&m) {
                last.len += m.len;
                return;
            }
        }
        self.runs.push(m);
    }

    pub fn runs(&self) -> &[Mapping] {
        &self.runs
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Total mapped bytes (aliases counted once per virtual run).
    pub fn mapped_bytes(&self) -> u64 {
        self.runs.iter().map(|m| m.len).sum()
    }

    /// Sort by virtual address, drop exact duplicates and merge contiguous runs.
    pub fn normalize(&mut self) {
        self.runs.sort_unstable();
        self.runs.dedup();
        let runs = std::mem::take(&mut self.runs);
        for m in runs {
            self.push(m);
        }
    }

    /// Keep only runs for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Mapping) -> bool) {
        self.runs.retain(keep);
    }

    /// Add all runs of `other` and normalize.
    pub fn extend(&mut self, other: &MappingList) {
        self.runs.extend_from_slice(&other.runs);
        self.normalize();
    }

    /// The physical address `virt` maps to, if any (binary search; call after
    /// `normalize` or on a list pushed in virtual order).
    pub fn translate(&self, virt: u64) -> Option<u64> {
        // Compare offsets, not ends: a run reaching the top of the address space has
        // an end that does not fit in 64 bits.
        let i = self.runs.partition_point(|m| m.virt <= virt);
        let m = self.runs.get(i.checked_sub(1)?)?;
        (virt - m.virt < m.len).then(|| m.phys + (virt - m.virt))
    }
}

impl FromIterator<Mapping> for MappingList {
    fn from_iter<I: IntoIterator<Item = Mapping>>(iter: I) -> Self {
        let mut l = MappingList::new();
        for m in iter {
            l.push(m);
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(virt: u64, phys: u64, len: u64) -> Mapping {
        Mapping { virt, phys, len }
    }

    #[test]
    fn merges_only_when_both_spaces_continue() {
        let mut l = MappingList::new();
        l.push(m(0x1000, 0x5000, 0x1000));
        l.push(m(0x2000, 0x6000, 0x1000)); // both continue
        l.push(m(0x3000, 0x9000, 0x1000)); // virt continues, phys jumps
        l.push(m(0x5000, 0xA000, 0x1000)); // phys continues, virt jumps
        l.push(m(0x6000, 0x5000, 0x1000)); // alias of the first page
        assert_eq!(
            l.runs(),
            &[
                m(0x1000, 0x5000, 0x2000),
                m(0x3000, 0x9000, 0x1000),
                m(0x5000, 0xA000, 0x1000),
                m(0x6000, 0x5000, 0x1000)
            ]
        );
        assert_eq!(l.translate(0x1fff), Some(0x5fff));
        assert_eq!(l.translate(0x4000), None);
        assert_eq!(l.translate(0x6010), Some(0x5010));
    }

    #[test]
    fn translate_reaches_the_last_byte_of_the_address_space() {
        let l: MappingList = [m(0xffff_ffff_ffff_f000, 0x1000, 0x1000)]
            .into_iter()
            .collect();
        assert_eq!(l.translate(u64::MAX), Some(0x1fff));
        assert_eq!(l.translate(0xffff_ffff_ffff_efff), None);
    }

    #[test]
    fn normalize_sorts_dedups_merges() {
        let mut l: MappingList = [m(0x3000, 0x3000, 0x1000), m(0x1000, 0x1000, 0x1000)]
            .into_iter()
            .collect();
        l.extend(
            &[m(0x2000, 0x2000, 0x1000), m(0x1000, 0x1000, 0x1000)]
                .into_iter()
                .collect(),
        );
        assert_eq!(l.runs(), &[m(0x1000, 0x1000, 0x3000)]);
    }
}
