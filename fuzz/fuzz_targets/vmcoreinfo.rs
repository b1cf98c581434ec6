//! VMCOREINFO text: the parser, its typed getters, the `--vmcoreinfo` file reader and
//! the walkers' kernel-root derivation from it (x86_64, i386, aarch64).
#![no_main]
use libfuzzer_sys::fuzz_target;

use dumpconv_core::vmcoreinfo::{VmcoreInfo, VmcoreInfoFile};
use dumpconv_core::Arch;

fuzz_target!(|data: &[u8]| {
    let v = VmcoreInfo::parse(data);
    let _ = v.entries().len();
    let _ = v.osrelease();
    let _ = v.page_size();
    let _ = v.phys_base();
    let _ = v.kernel_offset();
    let _ = v.sme_mask();
    let _ = v.pgtable_l5_enabled();
    let _ = v.symbol("init_top_pgt");
    let _ = v.symbol("swapper_pg_dir");
    let _ = v.number("VA_BITS");
    let _ = v.offset("uts_namespace.name");
    for em in [62u16, 3, 183] {
        let _ = v.kernel_image_phys(em, 0xffff_ffff_8100_0000);
    }
    let reg = dumpconv::Registry::builtin();
    for arch in [Arch::X86_64, Arch::I386, Arch::AARCH64] {
        let _ = reg.roots_from_vmcoreinfo(arch, &v);
    }
    let _ = VmcoreInfoFile::parse(data, std::path::Path::new("fuzz.vmcoreinfo"));
});
