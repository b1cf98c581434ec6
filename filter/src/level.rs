//! Dump levels: makedumpfile's `-d N` bits and their names.

use serde::Serialize;

/// One class of page that a dump level can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// All bytes zero (decided from the page's contents).
    Zero,
    /// Page cache without private data (file pages on an LRU list, no buffers).
    Cache,
    /// Page cache with private data (buffer heads) or in the swap cache. Its bit (4)
    /// leaves out all page cache, as makedumpfile's does.
    CachePrivate,
    /// User data: anonymous pages, hugetlbfs pages.
    User,
    /// Free pages: whole blocks of the buddy allocator, and pages given away
    /// (offline, ballooned).
    Free,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Zero,
        Class::Cache,
        Class::CachePrivate,
        Class::User,
        Class::Free,
    ];

    /// makedumpfile's dump-level bit.
    pub const fn bit(self) -> u8 {
        match self {
            Class::Zero => 1,
            Class::Cache => 2,
            Class::CachePrivate => 4,
            Class::User => 8,
            Class::Free => 16,
        }
    }

    /// The name `--exclude` takes.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Zero => "zero",
            Class::Cache => "cache",
            Class::CachePrivate => "cache-private",
            Class::User => "user",
            Class::Free => "free",
        }
    }

    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// A set of classes to leave out: makedumpfile's dump level (0..=31).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize)]
pub struct DumpLevel(u8);

impl DumpLevel {
    pub const MAX: u8 = 31;

    /// None when `n` is not 0..=31.
    pub fn new(n: u8) -> Option<DumpLevel> {
        (n <= Self::MAX).then_some(DumpLevel(n))
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether pages of class `c` are left out. As in makedumpfile, bit 4 (page cache
    /// with private data) leaves out all page cache: a level that drops the pages with
    /// buffers drops the plain ones too.
    pub const fn excludes(self, c: Class) -> bool {
        match c {
            Class::Cache => self.0 & (Class::Cache.bit() | Class::CachePrivate.bit()) != 0,
            _ => self.0 & c.bit() != 0,
        }
    }

    /// Classes other than zero: those decided from `struct page`.
    pub const fn needs_struct_page(self) -> bool {
        self.0 & !Class::Zero.bit() != 0
    }

    pub fn with(self, c: Class) -> DumpLevel {
        DumpLevel(self.0 | c.bit())
    }

    pub fn union(self, o: DumpLevel) -> DumpLevel {
        DumpLevel(self.0 | o.0)
    }

    /// `zero,cache,...` (empty words ignored) as a level.
    pub fn parse_list(list: &str) -> Result<DumpLevel, String> {
        let mut l = DumpLevel(0);
        for w in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let c = Class::from_name(w).ok_or_else(|| {
                format!(
                    "unknown page class {w:?} (known: {})",
                    Class::ALL.map(Class::name).join(", ")
                )
            })?;
            l = l.with(c);
        }
        Ok(l)
    }

    /// The class names in this level, comma separated ("none" for 0).
    pub fn describe(self) -> String {
        let names: Vec<&str> = Class::ALL
            .into_iter()
            .filter(|c| self.excludes(*c))
            .map(Class::name)
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_makedumpfile_meanings() {
        assert_eq!(DumpLevel::parse_list("zero").unwrap().bits(), 1);
        assert_eq!(DumpLevel::parse_list("cache").unwrap().bits(), 2);
        assert_eq!(DumpLevel::parse_list("cache-private").unwrap().bits(), 4);
        assert_eq!(DumpLevel::parse_list("user").unwrap().bits(), 8);
        assert_eq!(DumpLevel::parse_list("free").unwrap().bits(), 16);
        assert_eq!(
            DumpLevel::parse_list("zero,cache,cache-private,user,free")
                .unwrap()
                .bits(),
            31
        );
        assert!(DumpLevel::parse_list("zero,bogus").is_err());
        assert!(DumpLevel::new(32).is_none());
        assert_eq!(DumpLevel::new(17).unwrap().describe(), "zero,free");
        assert!(!DumpLevel::new(1).unwrap().needs_struct_page());
        // Bit 4 takes all page cache.
        assert!(DumpLevel::new(4).unwrap().excludes(Class::Cache));
        assert!(!DumpLevel::new(2).unwrap().excludes(Class::CachePrivate));
        assert!(DumpLevel::new(3).unwrap().needs_struct_page());
    }
}
