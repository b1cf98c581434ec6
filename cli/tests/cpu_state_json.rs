//! `--cpu-state FILE` reads both JSON forms of CPU state: the one `dumpconv info --json`
//! prints now (named registers: `"regs": {"cr3": "0x..."}`, with `"arch"`) and the one it
//! printed before registers were named (x86 only: `cr0`/`cr3`/`cr4`/`efer` at the top
//! level, general registers in `regs`, segments as `"segments": {"cs": {...}}`), kept as
//! `tests/data/info-json-before-named-registers.json`, printed by main's dumpconv for
//! `samples/tiny-x86_64.elf`. Either file gives the same `--paging` output as the dump's
//! own CPU notes.

mod common;

use std::path::Path;

use common::{repo, scratch, text};

#[test]
fn both_json_forms_give_the_same_paging_view() {
    let tmp = scratch();
    let input = repo().join("samples/tiny-x86_64.elf");
    let old = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/info-json-before-named-registers.json");

    let from_notes = tmp.path().join("notes.elf");
    let r = dumpconv!(tmp.path(), "--paging", input, "-o", from_notes);
    assert!(r.status.success(), "{}", text(&r.stderr));

    let from_old = tmp.path().join("old.elf");
    let r = dumpconv!(
        tmp.path(),
        "--paging",
        "--cpu-state",
        old,
        input,
        "-o",
        from_old
    );
    assert!(r.status.success(), "{}", text(&r.stderr));

    // The new form, as `info --json` prints it today.
    let r = dumpconv!(tmp.path(), "info", "--json", input);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let cpu0 = &v["cpus"][0];
    assert_eq!(cpu0["arch"], "x86_64", "{cpu0}");
    assert_eq!(cpu0["regs"]["cr3"], "0x105000", "{cpu0}");
    assert_eq!(cpu0["regs"]["cs.selector"], "0x10", "{cpu0}");
    assert!(
        cpu0.get("cr3").is_none() && cpu0.get("segments").is_none(),
        "{cpu0}"
    );
    let new = tmp.path().join("info.json");
    std::fs::write(&new, &r.stdout).unwrap();
    let from_new = tmp.path().join("new.elf");
    let r = dumpconv!(
        tmp.path(),
        "--paging",
        "--cpu-state",
        new,
        input,
        "-o",
        from_new
    );
    assert!(r.status.success(), "{}", text(&r.stderr));

    let want = std::fs::read(&from_notes).unwrap();
    assert!(want.len() > 4096);
    assert!(std::fs::read(&from_old).unwrap() == want, "old JSON form");
    assert!(std::fs::read(&from_new).unwrap() == want, "new JSON form");

    // And the old file's registers, as `info` reads them back.
    let r = dumpconv!(tmp.path(), "info", "--json", "--cpu-state", old, input);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let c = &v["cpus"][0];
    for (k, want) in [
        ("cr0", "0x80010011"),
        ("cr3", "0x105000"),
        ("efer", "0x500"),
        ("rip", "0xffffffff800002d1"),
        ("cs.flags", "0xaf9b00"),
        ("gdt.base", "0xffffffff80002000"),
    ] {
        assert_eq!(c["regs"][k], want, "{k} in {c}");
    }
    assert_eq!(v["paging_modes"][0], "4level");
}
