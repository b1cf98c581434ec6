//! QEMU migration streams (`formats::migration::open`: sections, RAM records, mapped-ram
//! files' bitmaps and page offsets, the VMDESCRIPTION walk of device state, vCPU
//! registers, the `vmcoreinfo` device) and libvirt save files
//! (`formats::migration::libvirt::open`: the header in either byte order, the domain
//! XML, the stream after it uncompressed or in any of libvirt's codecs), then reads. An
//! input starting with "LibvirtQemud" goes to the libvirt reader, anything else to the
//! stream reader.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dumpconv_formats::migration;

fuzz_target!(|data: &[u8]| {
    let path = dumpconv_fuzz::write_input("migration.in", data);
    let opts = dumpconv_formats::OpenOptions::default();
    let dump = if data.starts_with(b"LibvirtQemud") {
        migration::libvirt::open(&path, &opts)
    } else {
        migration::open(&path, &opts)
    };
    if let Ok(dump) = dump {
        dumpconv_fuzz::exercise(&dump, data);
    }
});
