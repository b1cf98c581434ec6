//! Writer options, from `DumpPlan::options` (`key=value`).

use dumpconv_core::{DumpPlan, Error, Result};
use dumpconv_formats::kdump::Codec;

/// Keys the kdump writer accepts.
pub const OPTION_KEYS: &[&str] = &[
    "compress",
    "level",
    "threads",
    "exclude-zero",
    "keep-partial",
];

/// The default codec. zlib, because every reader has it: Debian's makedumpfile 1.7.2
/// is built without snappy and zstd (so it could not re-filter or `-R`-check such
/// files... it can reassemble them, but not read pages), while crash reads all four.
pub const DEFAULT_CODEC: Codec = Codec::Zlib;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdumpOptions {
    pub codec: Codec,
    /// Codec level; None = the codec's fast default (zlib 1 and zstd 1, as makedumpfile).
    pub level: Option<i32>,
    /// Compression threads (1 = all work on the calling thread).
    pub threads: usize,
    /// Drop all-zero pages from the 2nd bitmap (makedumpfile `-d 1` semantics for
    /// readers: they become "excluded").
    pub exclude_zero: bool,
    /// On error, keep what was written and mark the header incomplete (status 0x8).
    pub keep_partial: bool,
}

impl Default for KdumpOptions {
    fn default() -> Self {
        KdumpOptions {
            codec: DEFAULT_CODEC,
            level: None,
            threads: default_threads(),
            exclude_zero: false,
            keep_partial: false,
        }
    }
}

/// All cores.
pub use dumpconv_core::numbers::default_threads;

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    dumpconv_core::numbers::parse_bool(v).ok_or_else(|| {
        Error::invalid(format!(
            "kdump option {key}={v:?}: expected {}",
            dumpconv_core::numbers::BOOL_WORDS
        ))
    })
}

impl KdumpOptions {
    /// Parse the plan's options. Unknown keys are errors, so a typo never silently
    /// gives a different file.
    pub fn from_plan(plan: &DumpPlan) -> Result<KdumpOptions> {
        let mut o = KdumpOptions::default();
        for (k, v) in &plan.options {
            match k.as_str() {
                "compress" => {
                    o.codec = Codec::from_name(&v.to_ascii_lowercase()).ok_or_else(|| {
                        Error::invalid(format!(
                            "kdump option compress={v:?}: expected one of {}",
                            Codec::ALL.map(Codec::name).join(", ")
                        ))
                    })?;
                }
                "level" => {
                    o.level = Some(v.trim().parse().map_err(|_| {
                        Error::invalid(format!("kdump option level={v:?}: not an integer"))
                    })?);
                }
                "threads" => {
                    o.threads = match v.trim() {
                        "" | "0" | "auto" => default_threads(),
                        t => t
                            .parse::<usize>()
                            .ok()
                            .filter(|&n| (1..=4096).contains(&n))
                            .ok_or_else(|| {
                                Error::invalid(format!(
                                    "kdump option threads={v:?}: expected 1..4096 or auto"
                                ))
                            })?,
                    };
                }
                "exclude-zero" => o.exclude_zero = parse_bool(k, v)?,
                "keep-partial" => o.keep_partial = parse_bool(k, v)?,
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown kdump option {k:?} (known: {})",
                        OPTION_KEYS.join(", ")
                    )))
                }
            }
        }
        o.check_level()?;
        Ok(o)
    }

    fn check_level(&self) -> Result<()> {
        let Some(l) = self.level else { return Ok(()) };
        let ok = match self.codec {
            Codec::Zlib => (0..=9).contains(&l),
            Codec::Zstd => zstd::compression_level_range().contains(&l),
            Codec::Snappy | Codec::Lzo | Codec::None => {
                return Err(Error::invalid(format!(
                    "kdump option level: {} has no levels",
                    self.codec.name()
                )))
            }
        };
        if ok {
            Ok(())
        } else {
            let range = match self.codec {
                Codec::Zlib => "0..9".to_string(),
                _ => {
                    let r = zstd::compression_level_range();
                    format!("{}..{}", r.start(), r.end())
                }
            };
            Err(Error::invalid(format!(
                "kdump option level={l}: {} takes {range}",
                self.codec.name()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dumpconv_core::Arch;
    use std::collections::BTreeMap;

    fn plan(opts: &[(&str, &str)]) -> DumpPlan {
        DumpPlan {
            filter: None,
            arch: Arch::X86_64,
            page_size: 4096,
            ranges: vec![],
            mappings: None,
            notes: vec![],
            cpus: vec![],
            vmcoreinfo: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn parses_and_rejects() {
        let o = KdumpOptions::from_plan(&plan(&[
            ("compress", "zstd"),
            ("level", "3"),
            ("threads", "2"),
            ("exclude-zero", ""),
        ]))
        .unwrap();
        assert_eq!(o.codec, Codec::Zstd);
        assert_eq!(o.level, Some(3));
        assert_eq!(o.threads, 2);
        assert!(o.exclude_zero && !o.keep_partial);
        assert_eq!(
            KdumpOptions::from_plan(&plan(&[])).unwrap().codec,
            Codec::Zlib
        );
        for bad in [
            &[("compress", "lz4")][..],
            &[("level", "x")],
            &[("compress", "zlib"), ("level", "10")],
            &[("compress", "snappy"), ("level", "1")],
            &[("threads", "0x")],
            &[("keep-partial", "maybe")],
            &[("colour", "blue")],
        ] {
            let e = KdumpOptions::from_plan(&plan(bad)).unwrap_err().to_string();
            assert!(e.contains("kdump option"), "{e}");
        }
    }
}
