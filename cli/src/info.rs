//! `dumpconv info` and `dumpconv translate`.

use std::borrow::Cow;

use dumpconv::pipeline::{effective_arch, effective_cpus, effective_vmcoreinfo, walk_options};
use dumpconv::roots::{choose_root, find_kernels, signed_hex};
use dumpconv::Registry;
use dumpconv_core::{Arch, CpuState, Error, Regime, WalkOptions};
use serde_json::json;

use crate::args::{InfoArgs, TranslateArgs};

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The paging mode of a CPU, as the walker for its architecture reads its registers.
fn mode_name(registry: &Registry, c: &CpuState, arch: Arch) -> Cow<'static, str> {
    registry
        .walker_for_cpus(std::slice::from_ref(c), None, arch)
        .ok()
        .and_then(|(w, _)| w.mode_of(c))
        .unwrap_or(Cow::Borrowed("unknown"))
}

/// A CPU's page-table roots as its walker names them ("CR3 0x1234000"), and how many
/// registers were recorded (all of them are in `--json`).
fn short_regs(registry: &Registry, c: &CpuState, arch: Arch) -> String {
    let roots = registry
        .walker_for_cpus(std::slice::from_ref(c), None, arch)
        .ok()
        .and_then(|(w, _)| w.regime(c, &WalkOptions::default()).ok());
    let mut out = match roots {
        Some(Regime::Paging { spaces, .. }) => spaces
            .iter()
            .map(|s| format!("{} {:#x}", s.root_name, s.root))
            .collect::<Vec<_>>()
            .join("  "),
        _ => String::new(),
    };
    if !out.is_empty() {
        out.push_str("  ");
    }
    out.push_str(&format!("({} registers)", c.regs.len()));
    out
}

pub fn run_info(a: InfoArgs, registry: &Registry) -> Result<(), Error> {
    let opts = a.input_args.base_options()?;
    let dump = dumpconv::open_input(&a.input_args.input, &opts)?;
    let arch = effective_arch(&dump, &opts);
    let cpus = effective_cpus(&dump, &opts, registry)?;
    let vmcoreinfo = effective_vmcoreinfo(&dump, &opts)?;
    // Every kernel (VMCOREINFO in the file, --vmcoreinfo, in RAM) and the root --paging
    // would take.
    let scan = opts.root.is_none() && opts.cpus.is_none();
    let kernels = find_kernels(&dump, &opts, registry, &cpus, scan)?;
    let mut root_warnings = Vec::new();
    let root_choice = choose_root(&dump, &opts, registry, &kernels, &cpus, &mut root_warnings);
    for w in kernels.rejected.iter().chain(&root_warnings) {
        eprintln!("dumpconv: warning: {w}");
    }
    let kernel_json: Vec<serde_json::Value> = kernels
        .list
        .iter()
        .map(|k| {
            json!({
                "index": k.index,
                "role": k.role(),
                "osrelease": k.info.osrelease(),
                "phys_base": k.info.number("phys_base").map(signed_hex),
                "kernel_offset": k.info.kernel_offset().map(|v| format!("{v:#x}")),
                "arch": k.arch.map(|a| a.name()),
                "vmcoreinfo_source": k.origin.kind(),
                "vmcoreinfo_phys": k.origin.phys().map(|p| format!("{p:#x}")),
                "mode": k.root.as_ref().map(|r| r.1.clone()),
                "root": k.root.as_ref().map(|r| format!("{:#x}", r.2)),
                "running_cpus": k.running_cpus,
                "check": match &k.check { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
            })
        })
        .collect();
    let root_json = match &root_choice {
        Ok(Some(c)) => json!({
            "source": c.source,
            "kernel": c.kernel,
            "mode": c.mode,
            "root": format!("{:#x}", c.root),
        }),
        Ok(None) => serde_json::Value::Null,
        Err(e) => {
            json!({"source": null, "kernel": null, "mode": null, "root": null, "error": e.to_string()})
        }
    };

    // Optional page-table statistics per CPU.
    let mut paging_stats = Vec::new();
    if a.paging {
        let wopts = walk_options(vmcoreinfo.as_ref(), WalkOptions::default().max_phys_bits);
        for c in &cpus {
            let mut list = dumpconv_core::MappingList::new();
            let r = registry
                .walker_for_cpus(std::slice::from_ref(c), None, arch)
                .and_then(|(w, _)| w.walk(c, dump.memory.as_ref(), &wopts, &mut list));
            paging_stats.push((c.index, r.map(|s| (s, list.len(), list.mapped_bytes()))));
        }
    }

    let ranges = dump.memory.ranges();
    if a.json {
        let v = json!({
            "path": dump.path,
            "format": dump.format,
            "details": dump.details.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "arch": dump.arch.map(|a| a.name()),
            "page_size": arch.page_size(),
            "ram_bytes": dump.memory.total_bytes(),
            "ram": ranges.iter().map(|r| json!({"start": format!("{:#x}", r.start), "end": format!("{:#x}", r.end)})).collect::<Vec<_>>(),
            "cpus": cpus,
            "paging_modes": cpus.iter().map(|c| mode_name(registry, c, arch)).collect::<Vec<_>>(),
            "notes": dump.notes.iter().map(|n| json!({"name": n.name_str(), "type": n.n_type, "size": n.desc.len()})).collect::<Vec<_>>(),
            "kernels": kernel_json,
            "root": root_json,
            "vmcoreinfo_scan": kernels.scanned.then(|| json!({"bytes": kernels.scan_bytes, "seconds": kernels.scan_time.as_secs_f64(), "rejected": kernels.rejected})),
            "vmcoreinfo": vmcoreinfo.as_ref().map(|v| v.entries().iter().cloned().collect::<std::collections::BTreeMap<_, _>>()),
            "paging": paging_stats.iter().map(|(i, r)| match r {
                Ok((s, runs, bytes)) => json!({"cpu": i, "runs": runs, "mapped_bytes": bytes, "stats": s}),
                Err(e) => json!({"cpu": i, "error": e.to_string()}),
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }

    println!("file:     {}", dump.path.display());
    println!("format:   {}", dump.format);
    for (k, v) in &dump.details {
        println!("  {k}: {v}");
    }
    println!(
        "arch:     {}",
        match (opts.arch, dump.arch) {
            (Some(a), _) => Cow::Owned(format!("{} (--arch)", a.name())),
            (None, Some(a)) => a.name(),
            (None, None) => Cow::Borrowed("unknown (give --arch)"),
        }
    );
    println!(
        "RAM:      {} in {} range(s)",
        human(dump.memory.total_bytes()),
        ranges.len()
    );
    for r in ranges.iter().take(64) {
        println!(
            "  {:#018x}-{:#018x}  {}",
            r.start,
            r.end - 1,
            human(r.len())
        );
    }
    if ranges.len() > 64 {
        println!("  ... {} more", ranges.len() - 64);
    }
    println!("CPUs:     {}", cpus.len());
    for c in &cpus {
        println!(
            "  cpu {}: paging {:<7} {}",
            c.index,
            mode_name(registry, c, arch),
            short_regs(registry, c, arch),
        );
    }
    println!("notes:    {}", dump.notes.len());
    for n in &dump.notes {
        println!(
            "  {:<12} type {:<3} {} bytes",
            n.name_str(),
            n.n_type,
            n.desc.len()
        );
    }
    match &vmcoreinfo {
        None => println!("VMCOREINFO: none"),
        Some(v) => {
            println!("VMCOREINFO: {} lines", v.entries().len());
            for key in [
                "OSRELEASE",
                "BUILD-ID",
                "PAGESIZE",
                "KERNELOFFSET",
                "NUMBER(phys_base)",
                "SYMBOL(init_top_pgt)",
                "SYMBOL(swapper_pg_dir)",
                "NUMBER(pgtable_l5_enabled)",
                "NUMBER(sme_mask)",
                "CRASHTIME",
            ] {
                if let Some(val) = v.get(key) {
                    println!("  {key}={val}");
                }
            }
        }
    }
    println!("Kernels:  {}", kernels.list.len());
    for k in &kernels.list {
        let root = match &k.root {
            Some((_, mode, r)) => format!("{mode} {r:#x}"),
            None => "none".into(),
        };
        println!(
            "  {}  {:<8} {}  phys_base {}  KERNELOFFSET {}  root {}  vmcoreinfo {}{}",
            k.index,
            k.role(),
            k.osrelease(),
            k.info.number("phys_base").map_or("-".into(), signed_hex),
            k.info
                .kernel_offset()
                .map_or("-".into(), |v| format!("{v:#x}")),
            root,
            k.origin.describe(),
            match &k.check {
                Ok(()) => String::new(),
                Err(e) => format!("  (root rejected: {e})"),
            }
        );
    }
    match &root_choice {
        Ok(Some(c)) => println!("root:     {} (what --paging would walk)", c.describe()),
        Ok(None) => println!("root:     none"),
        Err(e) => println!("root:     none: {e}"),
    }
    for (i, r) in &paging_stats {
        match r {
            Ok((s, runs, bytes)) => println!(
                "paging cpu {i}: {runs} runs, {} mapped, {} leaves, {} table pages; \
                 skipped {} leaves and {} tables outside RAM",
                human(*bytes),
                s.leaves,
                s.table_pages,
                s.leaves_outside_ram,
                s.tables_outside_ram
            ),
            Err(e) => println!("paging cpu {i}: {e}"),
        }
    }
    Ok(())
}

pub fn run_translate(a: TranslateArgs, registry: &Registry) -> Result<(), Error> {
    let opts = a.input_args.base_options()?;
    let dump = dumpconv::open_input(&a.input_args.input, &opts)?;
    let cpus = effective_cpus(&dump, &opts, registry)?;
    let arch = effective_arch(&dump, &opts);
    let vmcoreinfo = effective_vmcoreinfo(&dump, &opts)?;
    let wopts = walk_options(vmcoreinfo.as_ref(), a.max_phys_bits);
    let chosen = cpus.iter().find(|c| c.index == a.cpu);
    if chosen.is_none() && !cpus.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no CPU {} (the dump has {})",
            dump.path.display(),
            a.cpu,
            cpus.len()
        )));
    }
    let paging = chosen.and_then(|c| {
        let (w, _) = registry
            .walker_for_cpus(std::slice::from_ref(c), None, arch)
            .ok()?;
        w.paging_enabled(c).then(|| (c.clone(), w))
    });
    // As `--paging` does: a CPU that cannot say where its tables are gives way to the
    // root of the chosen kernel (VMCOREINFO in the file, --vmcoreinfo, or found in RAM:
    // docs/roots.md), `--root` and `--kernel` included.
    let from_vmci = match (&paging, vmcoreinfo.as_ref()) {
        (None, v) => {
            let kernels = find_kernels(&dump, &opts, registry, &cpus, v.is_none())?;
            let mut warnings = Vec::new();
            let choice = choose_root(&dump, &opts, registry, &kernels, &cpus, &mut warnings)
                .ok()
                .flatten();
            for w in &warnings {
                eprintln!("dumpconv: warning: {w}");
            }
            choice.and_then(|c| {
                let root_cpu = c.cpus.first()?.clone();
                let a = root_cpu.arch.unwrap_or(arch);
                let (w, _) = registry
                    .walker_for_cpus(std::slice::from_ref(&root_cpu), None, a)
                    .ok()?;
                w.paging_enabled(&root_cpu).then_some((root_cpu, w))
            })
        }
        _ => None,
    };
    let (cpu, walker) = match paging.or_else(|| {
        let found = from_vmci?;
        eprintln!(
            "dumpconv: warning: {}; translating through the kernel's page-table root from \
             VMCOREINFO",
            match chosen {
                Some(c) => format!("cpu {} has no usable paging state", c.index),
                None => "the input has no CPU state".to_string(),
            }
        );
        Some(found)
    }) {
        Some(found) => found,
        None => {
            let cpu = chosen.ok_or_else(|| {
                Error::invalid(format!(
                    "{}: no CPU {} (the dump has {}; give --cr3 and --paging-mode for inputs \
                     without CPU state and VMCOREINFO)",
                    dump.path.display(),
                    a.cpu,
                    cpus.len()
                ))
            })?;
            let (w, _) = registry.walker_for_cpus(std::slice::from_ref(cpu), None, arch)?;
            (cpu.clone(), w)
        }
    };
    let cpu = &cpu;
    let mut all = Vec::new();
    for &v in &a.vaddrs {
        let t = walker.translate(cpu, dump.memory.as_ref(), &wopts, v)?;
        if a.json {
            all.push(t);
            continue;
        }
        println!(
            "{:#018x} (cpu {}, {}):",
            v,
            cpu.index,
            mode_name(registry, cpu, arch)
        );
        for s in &t.steps {
            println!(
                "  {:<5} entry at {:#014x}: {:#018x}",
                s.level, s.entry_addr, s.entry
            );
        }
        match (t.phys, t.page_size, &t.fault) {
            (Some(p), Some(sz), _) => println!("  -> physical {p:#x} ({} page)", human(sz)),
            (Some(p), None, _) => println!("  -> physical {p:#x}"),
            (None, _, Some(f)) => println!("  -> not mapped: {f}"),
            (None, _, None) => println!("  -> not mapped"),
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    }
    Ok(())
}
