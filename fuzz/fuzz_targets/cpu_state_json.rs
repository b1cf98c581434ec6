//! `--cpu-state FILE` JSON (new and old x86 shapes), then the registry picks a walker and
//! asks it about each CPU.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dumpconv_core::Arch;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("cpus.json", data);
    let Ok(cpus) = dumpconv::pipeline::read_cpu_state_file(&path) else {
        return;
    };
    let reg = dumpconv::Registry::builtin();
    for arch in [Arch::X86_64, Arch::I386, Arch::AARCH64] {
        if let Ok((w, _)) = reg.walker_for_cpus(&cpus, None, arch) {
            for c in &cpus {
                let _ = w.paging_enabled(c);
                let _ = w.mode_of(c);
                let _ = w.kernel_start(c);
            }
        }
    }
});
