//! With no CPU state, `--paging` finds the kernel's page-table root in VMCOREINFO through
//! the walker (`ArchWalker::roots_from_vmcoreinfo`): on every real guest, the view built
//! from that root maps the kernel's own data (`init_uts_ns`) where the view built from the
//! CPUs' registers does, and the walk says where its root came from.

use dumpconv::pipeline::build_plan;
use dumpconv::{ConvertOptions, ConvertReport, PagingOptions, Registry};
use dumpconv_core::NoProgress;
use dumpconv_formats::OpenOptions;
use dumpconv_tests::guests::guests;

#[test]
fn kernel_root_from_vmcoreinfo_maps_what_the_cpus_map() {
    let registry = Registry::builtin();
    let mut checked = 0;
    for g in guests() {
        let dump = dumpconv_formats::open(&g.file("phys.elf"), &OpenOptions::default()).unwrap();
        let v = dump
            .vmcoreinfo
            .clone()
            .expect("guests run with -device vmcoreinfo");
        let uts = v.symbol("init_uts_ns").expect("SYMBOL(init_uts_ns)");
        let paging = Some(PagingOptions::default());

        let with_cpus = ConvertOptions {
            paging: paging.clone(),
            ..ConvertOptions::default()
        };
        let mut r1 = ConvertReport::default();
        let p1 = build_plan(&dump, &with_cpus, &registry, &NoProgress, &mut r1).unwrap();
        let from_cpus = p1.mappings.expect("CPU view");

        let no_cpus = ConvertOptions {
            cpus: Some(Vec::new()),
            paging,
            ..ConvertOptions::default()
        };
        let mut r2 = ConvertReport::default();
        let p2 = build_plan(&dump, &no_cpus, &registry, &NoProgress, &mut r2).unwrap();
        let from_vmci = p2
            .mappings
            .unwrap_or_else(|| panic!("{}: no view from VMCOREINFO: {:?}", g.name, r2.warnings));
        assert!(
            r2.warnings
                .iter()
                .any(|w| w.contains("page-table root from VMCOREINFO")),
            "{}: {:?}",
            g.name,
            r2.warnings
        );
        assert!(
            p2.cpus.is_empty(),
            "{}: the plan keeps the input's CPUs",
            g.name
        );
        let want = from_cpus.translate(uts);
        assert!(
            want.is_some(),
            "{}: init_uts_ns unmapped in the CPU view",
            g.name
        );
        assert_eq!(from_vmci.translate(uts), want, "{}: init_uts_ns", g.name);
        // The kernel half of the VMCOREINFO view is the kernel's: most of it agrees with
        // the CPUs' (which add per-process and per-CPU mappings of their own).
        let agree = from_vmci
            .runs()
            .iter()
            .filter(|m| from_cpus.translate(m.virt) == Some(m.phys))
            .count();
        assert!(
            agree * 10 >= from_vmci.len() * 9,
            "{}: only {agree} of {} runs agree",
            g.name,
            from_vmci.len()
        );
        println!(
            "{}: {} runs from VMCOREINFO, {agree} agree with the CPU view; {}",
            g.name,
            from_vmci.len(),
            r2.warnings.join("; ")
        );
        checked += 1;
    }
    println!("checked {checked} guests");
}
