//! The main header's `utsname`, as makedumpfile writes it: the kernel's own
//! `new_utsname` copied out of `init_uts_ns` (found through VMCOREINFO).
//!
//! Readers need it: libkdumpfile (so drgn) takes the architecture from the header's
//! utsname only when sysname, release, version and machine are all filled, and refuses
//! the file otherwise ("KDUMP_ATTR_ARCH_NAME: Key has no value"). QEMU leaves all but
//! `machine` empty. When memory cannot give the utsname (no `SYMBOL(init_uts_ns)`, the
//! page not in the dump, unexpected contents) the header gets sysname "Linux", release
//! `OSRELEASE`, machine from the architecture and the placeholder version
//! [`PLACEHOLDER_VERSION`], with a warning. Without VMCOREINFO nothing says the dump is
//! of Linux: only `machine` is filled (as before).
//!
//! `machine` is always the name crash expects for the architecture ([`machine_name`]):
//! a 32-bit x86 kernel reports "i386".."i686" by CPU family and crash accepts only
//! "i686".

use dumpconv_core::note::NoteKind;
use dumpconv_core::{DumpPlan, PhysicalMemory, VmcoreInfo};
use dumpconv_formats::kdump::layout::Utsname;

use crate::geometry::machine_name;

/// `utsname.version` when the kernel's cannot be read: non-empty, in the kernel's
/// "#N ..." form, and saying it is not the kernel's.
pub const PLACEHOLDER_VERSION: &str = "#1 (unknown: not read from the dump)";

/// The VMCOREINFO a plan carries: its own, else the first VMCOREINFO note.
pub(crate) fn plan_vmcoreinfo(plan: &DumpPlan) -> Option<VmcoreInfo> {
    plan.vmcoreinfo.clone().or_else(|| {
        plan.notes
            .iter()
            .find(|n| n.kind() == NoteKind::VmcoreInfo)
            .map(|n| VmcoreInfo::parse(&n.desc))
    })
}

/// The header's utsname for `plan`, and a warning when the kernel's could not be read.
pub(crate) fn header_utsname(
    plan: &DumpPlan,
    mem: &dyn PhysicalMemory,
) -> (Utsname, Option<String>) {
    let machine = machine_name(plan.arch).to_string();
    let mut u = Utsname::default();
    let Some(v) = plan_vmcoreinfo(plan) else {
        u.set(Utsname::MACHINE, &machine);
        return (u, None);
    };
    match v.read_kernel_utsname(plan.arch.elf_machine(), mem) {
        Ok(fields) => {
            u.fields = fields;
            u.set(Utsname::MACHINE, &machine);
            (u, None)
        }
        Err(why) => {
            u.set(Utsname::SYSNAME, "Linux");
            u.set(Utsname::RELEASE, v.osrelease().unwrap_or(""));
            u.set(Utsname::VERSION, PLACEHOLDER_VERSION);
            u.set(Utsname::MACHINE, &machine);
            let warning = format!(
                "kdump header: the kernel's utsname could not be read ({why}); wrote \
                 release {:?} from VMCOREINFO, machine {machine:?} and version {:?} instead \
                 (drgn and libkdumpfile need all of them filled)",
                v.osrelease().unwrap_or(""),
                PLACEHOLDER_VERSION
            );
            (u, Some(warning))
        }
    }
}
