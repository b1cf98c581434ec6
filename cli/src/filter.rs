//! Page filtering in the pipeline (`--dump-level`, `--exclude`, `--exclude-zero`): the
//! pages of the classes asked for are taken out of the plan's ranges and listed in
//! [`DumpPlan::filter`], before anything is written. The classifier
//! (`dumpconv-filter`) reads kernel memory through a walker and a CPU state: the
//! kernel's own root from VMCOREINFO when a walker finds one there, else a CPU of the
//! dump with paging on. Nothing here knows an architecture.

use dumpconv_core::memory::subtract_ranges;
use dumpconv_core::{
    ArchWalker, CpuState, DumpPlan, DumpWriter, Error, PhysRange, PhysicalMemory, PlanFilter,
    Progress, Result,
};
use dumpconv_filter::{
    classify, Class, ClassStats, Classification, DumpLevel, Garbage, PageLayout, WalkerMemory,
};

use crate::pipeline::walk_options;
use crate::registry::Registry;

/// What `--dump-level`, `--exclude`, `--exclude-zero` and `--filter-fallback` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterOptions {
    pub level: DumpLevel,
    /// On a dump the classifier cannot read (no VMCOREINFO, unknown layout, garbage),
    /// write everything (level 0) with a warning instead of failing.
    pub fallback: bool,
}

/// What filtering did, for `--verbose` and batch reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FilterReport {
    /// The level asked for.
    pub asked: u8,
    /// The level applied (0 after a fallback).
    pub applied: u8,
    pub page_size: u64,
    /// The classifier's counts (None when only zero pages were asked for).
    pub classes: Option<ClassStats>,
    /// Pages excluded by class (zero pages: only when counted here; the kdump writer
    /// decides them itself while compressing).
    pub excluded: Vec<(String, u64)>,
    /// Zero pages are handled by the writer (kdump).
    pub zero_by_writer: bool,
    /// Why it fell back to level 0.
    pub fallback: Option<String>,
    /// Warnings said to the user.
    pub warnings: Vec<String>,
    /// Time spent classifying (struct pages read and decided) and scanning for zeros.
    pub classify_seconds: f64,
    pub zero_scan_seconds: f64,
    /// The RAM ranges written (the plan's, after filtering), for `--verify`.
    #[serde(skip)]
    pub kept: Option<Vec<PhysRange>>,
}

impl FilterReport {
    /// Lines for `--verbose`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let lv = |b: u8| DumpLevel::new(b).map_or_else(|| b.to_string(), |l| l.describe());
        out.push(format!(
            "filter: dump level {} ({}){}",
            self.applied,
            lv(self.applied),
            if self.asked != self.applied {
                format!(", asked {} ({})", self.asked, lv(self.asked))
            } else {
                String::new()
            }
        ));
        if let Some(w) = &self.fallback {
            out.push(format!("filter: fell back to level 0: {w}"));
        }
        for (name, pages) in &self.excluded {
            out.push(format!(
                "filter: excluded {name}: {pages} pages, {} bytes",
                pages * self.page_size
            ));
        }
        if self.zero_scan_seconds > 0.0 {
            out.push(format!(
                "filter: zero pages found in {:.3} s",
                self.zero_scan_seconds
            ));
        }
        if self.zero_by_writer {
            out.push(
                "filter: zero pages are handled by the writer as it reads them (kdump: one \
                 shared zero block, or left out with --exclude-zero)"
                    .into(),
            );
        }
        if let Some(c) = &self.classes {
            out.push(format!(
                "filter: {} RAM pages, {} struct pages read, {} kept as kernel or unexcluded \
                 data, classified in {:.3} s",
                c.pages, c.struct_pages_read, c.kept, self.classify_seconds
            ));
            for (class, n) in &c.classes {
                out.push(format!(
                    "filter: class {}: {n} pages, {} bytes",
                    class.name(),
                    n * self.page_size
                ));
            }
            for (why, n) in &c.unknown {
                out.push(format!("filter: kept, not classified: {n} pages: {why}"));
            }
            if c.inconsistent > 0 {
                out.push(format!(
                    "filter: {} inconsistent struct pages kept (first: {})",
                    c.inconsistent,
                    c.first_inconsistency.as_deref().unwrap_or("?")
                ));
            }
            if let Some(e) = &c.first_error {
                out.push(format!("filter: first read error: {e}"));
            }
        }
        out
    }
}

/// Why the classifier cannot run on this dump (an input error, exit 1).
fn cannot(plan_path: &std::path::Path, msg: String) -> Error {
    Error::format(plan_path.to_path_buf(), None, "page filter", msg)
}

/// Apply the filter to `plan` (whose ranges are final and whose options are the
/// writer's). Errors before anything is written.
pub fn apply_filter(
    input: &std::path::Path,
    opts: &FilterOptions,
    registry: &Registry,
    plan: &mut DumpPlan,
    mem: &dyn PhysicalMemory,
    writer: &dyn DumpWriter,
    progress: &dyn Progress,
) -> Result<Option<FilterReport>> {
    let level = opts.level;
    if level.bits() == 0 {
        return Ok(None);
    }
    let ps = plan.page_size;
    let mut report = FilterReport {
        asked: level.bits(),
        applied: level.bits(),
        page_size: ps,
        ..FilterReport::default()
    };
    let mut excluded_pfns: Vec<(u64, u64)> = Vec::new();
    if level.needs_struct_page() {
        let t = std::time::Instant::now();
        let classified = classify_plan(plan, mem, registry, plan_threads(plan));
        report.classify_seconds = t.elapsed().as_secs_f64();
        match classified {
            Ok(c) => {
                for class in Class::ALL {
                    if class != Class::Zero && level.excludes(class) {
                        let n = c.stats.classes.get(&class).copied().unwrap_or(0);
                        report.excluded.push((class.name().to_string(), n));
                    }
                }
                excluded_pfns = c.excluded_pfns(level);
                let unknown: u64 = c.stats.unknown.values().sum();
                if unknown > 0 {
                    let msg = format!(
                        "page filter: {unknown} RAM pages could not be classified and are kept \
                         ({})",
                        c.stats
                            .unknown
                            .iter()
                            .map(|(w, n)| format!("{n}: {w}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                    progress.warn(&msg);
                    report.warnings.push(msg);
                }
                report.classes = Some(c.stats);
            }
            Err(msg) if opts.fallback => {
                let w = format!(
                    "page filter: {msg}; --filter-fallback: writing every page (dump level 0)"
                );
                progress.warn(&w);
                report.warnings.push(w);
                report.applied = 0;
                report.fallback = Some(msg);
                return Ok(Some(report));
            }
            Err(msg) => {
                return Err(cannot(
                    input,
                    format!("{msg} (--filter-fallback writes every page instead)"),
                ))
            }
        }
    }
    let mut excluded: Vec<PhysRange> = excluded_pfns
        .iter()
        .map(|&(s, e)| PhysRange::new(s * ps, e * ps))
        .collect();
    plan.ranges = subtract_ranges(&plan.ranges, &excluded);
    if level.excludes(Class::Zero) {
        let writer_does = writer
            .options()
            .is_some_and(|o| o.contains(&"exclude-zero"));
        if writer_does {
            // kdump: zero pages share one stored zero block (makedumpfile's bit 1), or
            // leave the file with the writer's own `exclude-zero`.
            report.zero_by_writer = true;
        } else {
            let pfns: Vec<(u64, u64)> = plan
                .ranges
                .iter()
                .map(|r| (r.start.div_ceil(ps), r.end / ps))
                .filter(|(s, e)| s < e)
                .collect();
            let t = std::time::Instant::now();
            let zeros = dumpconv_filter::zero::zero_pages(mem, &pfns, ps, plan_threads(plan));
            report.zero_scan_seconds = t.elapsed().as_secs_f64();
            let n: u64 = zeros.iter().map(|(s, e)| e - s).sum();
            report.excluded.insert(0, ("zero".into(), n));
            let zr: Vec<PhysRange> = zeros
                .iter()
                .map(|&(s, e)| PhysRange::new(s * ps, e * ps))
                .collect();
            plan.ranges = subtract_ranges(&plan.ranges, &zr);
            excluded = merge(&excluded, &zr);
        }
    }
    plan.filter = Some(PlanFilter {
        dump_level: level.bits(),
        excluded,
    });
    report.kept = Some(plan.ranges.clone());
    Ok(Some(report))
}

/// The threads `--threads N` (a writer option, also set per job by `batch`) gives the
/// classifier and the zero scan: 0 (all cores) for `auto` or when not given.
fn plan_threads(plan: &DumpPlan) -> usize {
    plan.options
        .get("threads")
        .and_then(|t| t.trim().parse::<usize>().ok())
        .unwrap_or(0)
}

/// Classify every RAM page of `plan`; Err(why) when it cannot be done.
fn classify_plan(
    plan: &DumpPlan,
    mem: &dyn PhysicalMemory,
    registry: &Registry,
    threads: usize,
) -> std::result::Result<Classification, String> {
    let v = plan.vmcoreinfo.as_ref().ok_or_else(|| {
        "the input has no VMCOREINFO, which page filtering needs to find struct page (give \
         --vmcoreinfo)"
            .to_string()
    })?;
    let ptr_size = if plan.arch.is_64() { 8 } else { 4 };
    let layout = PageLayout::from_vmcoreinfo(v, ptr_size)?;
    let wopts = walk_options(Some(v), 52);
    // The kernel's own tables first (they map every kernel address on every CPU), then
    // the CPUs of the dump.
    let mut sources: Vec<(std::sync::Arc<dyn ArchWalker>, CpuState)> = Vec::new();
    if let Ok(Some((cpu, _))) = registry.roots_from_vmcoreinfo(plan.arch, v) {
        if let Ok((w, _)) = registry.walker_for_cpus(std::slice::from_ref(&cpu), None, plan.arch) {
            if w.paging_enabled(&cpu) {
                sources.push((w, cpu));
            }
        }
    }
    if let Ok((w, _)) = registry.walker_for_cpus(&plan.cpus, None, plan.arch) {
        if let Some(cpu) = plan.cpus.iter().find(|c| w.paging_enabled(c)) {
            sources.push((w.clone(), cpu.clone()));
        }
    }
    if sources.is_empty() {
        return Err(
            "no page-table root to read kernel memory with: VMCOREINFO gives none a walker \
             knows, and no CPU of the input has paging on (give --cr3 and --paging-mode)"
                .into(),
        );
    }
    let ram: Vec<(u64, u64)> = plan
        .ranges
        .iter()
        .map(|r| (r.start.div_ceil(layout.page_size), r.end / layout.page_size))
        .filter(|(s, e)| s < e)
        .collect();
    let mut last_err = String::new();
    for (walker, cpu) in &sources {
        let kmem = WalkerMemory {
            walker: walker.as_ref(),
            cpu,
            mem,
            opts: wopts,
        };
        match classify(&layout, &kmem, &ram, threads) {
            Ok(c) => return Ok(c),
            Err(Garbage(e)) => last_err = e,
        }
    }
    Err(last_err)
}

/// Union of two sorted, disjoint range lists.
pub fn merge(a: &[PhysRange], b: &[PhysRange]) -> Vec<PhysRange> {
    let mut all: Vec<PhysRange> = a.iter().chain(b).copied().collect();
    all.sort_by_key(|r| r.start);
    let mut out: Vec<PhysRange> = Vec::with_capacity(all.len());
    for r in all {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}
