//! ELF note decoding: NT_PRSTATUS (x86_64, i386, aarch64), the QEMU CPU note, VMCOREINFO
//! from notes. The input is cut into notes: [name len u8][n_type u8][desc len u16 le]
//! name desc, repeated.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dumpconv_core::{Arch, Note};
use dumpconv_formats::notes;

const NAMES: [&[u8]; 4] = [b"CORE", b"QEMU", b"VMCOREINFO", b"LINUX"];

fuzz_target!(|data: &[u8]| {
    let _ = notes::prstatus::decode(data);
    let _ = notes::qemu::decode(data);
    let mut list = Vec::new();
    let mut rest = data;
    while rest.len() >= 4 && list.len() < 64 {
        let name_sel = rest[0];
        let n_type = u32::from(rest[1]);
        let dlen = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        rest = &rest[4..];
        let dlen = dlen.min(rest.len());
        let name = NAMES[usize::from(name_sel) % NAMES.len()].to_vec();
        list.push(Note {
            name,
            n_type,
            desc: rest[..dlen].to_vec(),
        });
        rest = &rest[dlen..];
    }
    for arch in [Arch::X86_64, Arch::I386, Arch::AARCH64] {
        let _ = notes::decode_cpus(&list, arch);
    }
    let _ = notes::vmcoreinfo_from_notes(&list);
});
