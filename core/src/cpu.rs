//! CPU state per CPU, as far as the dump recorded it: an architecture and a map of
//! registers by name, so every architecture fills the same type.
//!
//! Register names are lowercase. x86: `rax`..`r15`, `rip`, `rflags`, `orig_rax`,
//! `fs_base`, `gs_base`, `cr0`, `cr2`, `cr3`, `cr4`, `efer`, `kernel_gs_base`,
//! `a20_mask`, and segment fields `cs.selector`, `cs.limit`, `cs.flags`, `cs.base` (cs ds
//! es fs gs ss ldt tr gdt idt). aarch64: `x0`..`x30`, `sp`, `pc`, `pstate`, `ttbr0_el1`,
//! `ttbr1_el1`, `tcr_el1`, `sctlr_el1`, and any others a note has. What a register
//! means is the walker's business; core only stores them.
//!
//! Every register is optional: NT_PRSTATUS gives general registers only, QEMU's
//! CPU-state note adds control registers, a raw image has nothing until the user
//! supplies it. The JSON form (serde) is
//! `{"index":0,"pid":1,"arch":"x86_64","regs":{"rax":"0x0",...,"cr3":"0x1000"}}`, numbers
//! as hex strings; hex strings or plain numbers are accepted, and so is the form before
//! registers were named (x86 only: `cr0`/`cr3`/`cr4`/`efer`/... at the top level,
//! general registers in `regs`, segments as `"segments":{"cs":{"selector":..}}`), so
//! files written by older `dumpconv info --json` still load with `--cpu-state`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::arch::Arch;

/// Registers by lowercase name, in the order they were first set.
#[derive(Debug, Clone, Default)]
pub struct Registers {
    regs: Vec<(String, u64)>,
}

impl Registers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `name` (lowercase), if recorded.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.regs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Set `name` (stored lowercase), keeping its position if it was already set.
    pub fn set(&mut self, name: &str, value: u64) {
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        match self.regs.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.regs.push((name.to_string(), value)),
        }
    }

    /// Remove `name`; its old value.
    pub fn remove(&mut self, name: &str) -> Option<u64> {
        let i = self.regs.iter().position(|(n, _)| n == name)?;
        Some(self.regs.remove(i).1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// (name, value) in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.regs.iter().map(|(n, v)| (n.as_str(), *v))
    }

    pub fn len(&self) -> usize {
        self.regs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }
}

/// Equal when the same names have the same values, whatever the order.
impl PartialEq for Registers {
    fn eq(&self, o: &Self) -> bool {
        self.len() == o.len() && self.iter().all(|(n, v)| o.get(n) == Some(v))
    }
}

impl Eq for Registers {}

impl<S: AsRef<str>> FromIterator<(S, u64)> for Registers {
    fn from_iter<I: IntoIterator<Item = (S, u64)>>(it: I) -> Self {
        let mut r = Registers::new();
        for (n, v) in it {
            r.set(n.as_ref(), v);
        }
        r
    }
}

impl Serialize for Registers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.regs.len()))?;
        for (n, v) in &self.regs {
            m.serialize_entry(n, &format!("{v:#x}"))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Registers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Registers, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Registers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of register names to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Registers, A::Error> {
                let mut r = Registers::new();
                while let Some((k, v)) = a.next_entry::<String, Hex>()? {
                    r.set(&k.to_ascii_lowercase(), v.0);
                }
                Ok(r)
            }
        }
        d.deserialize_map(V)
    }
}

/// A value in the JSON form: a number or a "0x…"/decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Hex(#[serde(with = "hex")] u64);

/// What a dump knows about one CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuState {
    /// Position of the CPU in the dump (0-based).
    pub index: u32,
    /// pr_pid from NT_PRSTATUS (QEMU: cpu index + 1; the kernel: the running task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The CPU's architecture, when known (the dump's otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    pub regs: Registers,
}

impl CpuState {
    /// An empty state for CPU `index` of `arch`.
    pub fn new(index: u32, arch: Option<Arch>) -> CpuState {
        CpuState {
            index,
            arch,
            ..CpuState::default()
        }
    }

    /// The value of register `name` (lowercase), if recorded.
    pub fn reg(&self, name: &str) -> Option<u64> {
        self.regs.get(name)
    }

    /// Set register `name`.
    pub fn set_reg(&mut self, name: &str, value: u64) {
        self.regs.set(name, value);
    }

    /// Set register `name` if `value` is Some.
    pub fn set_reg_opt(&mut self, name: &str, value: Option<u64>) {
        if let Some(v) = value {
            self.regs.set(name, v);
        }
    }

    /// Builder form of [`CpuState::set_reg`].
    pub fn with_reg(mut self, name: &str, value: u64) -> CpuState {
        self.regs.set(name, value);
        self
    }
}

/// The x86 segment registers of the old JSON form, in QEMU's order.
const OLD_SEGMENTS: [&str; 10] = [
    "cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt",
];

impl<'de> Deserialize<'de> for CpuState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CpuState, D::Error> {
        /// Both JSON forms: the named-register one and the older x86 one.
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            index: u32,
            #[serde(default)]
            pid: Option<u32>,
            #[serde(default)]
            arch: Option<Arch>,
            #[serde(default)]
            regs: Option<Registers>,
            /// Old form: {"cs": {"selector": .., "limit": .., "flags": .., "base": ..}}.
            #[serde(default)]
            segments: Option<BTreeMap<String, BTreeMap<String, Hex>>>,
            /// Old form: cr0, cr2, cr3, cr4, efer, kernel_gs_base, a20_mask (null allowed).
            #[serde(flatten)]
            top: BTreeMap<String, Option<Hex>>,
        }
        let raw = Raw::deserialize(d)?;
        let mut c = CpuState {
            index: raw.index,
            pid: raw.pid,
            arch: raw.arch,
            regs: raw.regs.unwrap_or_default(),
        };
        if let Some(segs) = raw.segments {
            for s in OLD_SEGMENTS {
                if let Some(fields) = segs.get(s) {
                    for f in ["selector", "limit", "flags", "base"] {
                        c.set_reg(&format!("{s}.{f}"), fields.get(f).map_or(0, |h| h.0));
                    }
                }
            }
            for (s, fields) in &segs {
                for (f, v) in fields {
                    let name = format!("{}.{}", s.to_ascii_lowercase(), f.to_ascii_lowercase());
                    if !c.regs.contains(&name) {
                        c.set_reg(&name, v.0);
                    }
                }
            }
        }
        for (k, v) in raw.top {
            if let Some(v) = v {
                c.set_reg(&k.to_ascii_lowercase(), v.0);
            }
        }
        Ok(c)
    }
}

/// Serde helpers: u64 as "0x…" strings; accept strings (hex with 0x, or decimal) and
/// plain JSON numbers.
pub mod hex {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(HexVisitor)
    }

    /// Parse "0x1f", "1f" is not accepted (ambiguous): decimal unless 0x-prefixed.
    pub fn parse(s: &str) -> Option<u64> {
        let t = s.trim().replace('_', "");
        if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            u64::from_str_radix(h, 16).ok()
        } else {
            t.parse().ok()
        }
    }

    pub(super) struct HexVisitor;

    impl de::Visitor<'_> for HexVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an unsigned integer or a \"0x…\" hex string")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("negative value"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse(v).ok_or_else(|| E::custom(format!("not a number: {v:?}")))
        }
    }
}

/// Like [`hex`], for `Option<u64>` (null or absent = None).
pub mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format!("{v:#x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::hex")] u64);
        Option::<W>::deserialize(d).map(|o| o.map(|W(v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_hex_names_and_accepts_numbers() {
        let c = CpuState::new(1, Some(Arch::X86_64))
            .with_reg("cr3", 0x1234000)
            .with_reg("cr0", 0x8000_0011);
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(
            j,
            r#"{"index":1,"arch":"x86_64","regs":{"cr3":"0x1234000","cr0":"0x80000011"}}"#
        );
        let back: CpuState = serde_json::from_str(&j).unwrap();
        assert_eq!(back, c);
        let n: CpuState =
            serde_json::from_str(r#"{"regs": {"CR3": 4096, "cr0": "0x80000001"}}"#).unwrap();
        assert_eq!(n.reg("cr3"), Some(4096));
        assert_eq!(n.reg("cr0"), Some(0x8000_0001));
        assert!(serde_json::from_str::<CpuState>(r#"{"regs": {"cr3": "zz"}}"#).is_err());
        assert!(serde_json::from_str::<CpuState>(r#"{"cr3": "zz"}"#).is_err());
    }

    #[test]
    fn old_x86_json_still_loads() {
        // What `dumpconv info --json` printed before registers were named.
        let old = r#"{
            "index": 0, "pid": 1,
            "regs": {"rax": "0x1", "rip": "0xffffffff81000000", "r15": "0x0"},
            "segments": {"cs": {"selector": "0x10", "limit": "0xffffffff", "flags": "0xa09b00", "base": "0x0"},
                         "gs": {"selector": "0x0", "limit": "0x0", "flags": "0x0", "base": "0xffff888000000000"}},
            "cr0": "0x80050033", "cr2": null, "cr3": "0x1234000", "cr4": 1771760,
            "efer": "0xd01", "kernel_gs_base": "0x0", "a20_mask": "0xffffffffffffffff"
        }"#;
        let c: CpuState = serde_json::from_str(old).unwrap();
        assert_eq!(c.pid, Some(1));
        assert_eq!(c.arch, None);
        assert_eq!(c.reg("rax"), Some(1));
        assert_eq!(c.reg("rip"), Some(0xffff_ffff_8100_0000));
        assert_eq!(c.reg("cr0"), Some(0x8005_0033));
        assert_eq!(c.reg("cr2"), None);
        assert_eq!(c.reg("cr3"), Some(0x123_4000));
        assert_eq!(c.reg("cr4"), Some(1_771_760));
        assert_eq!(c.reg("efer"), Some(0xd01));
        assert_eq!(c.reg("a20_mask"), Some(u64::MAX));
        assert_eq!(c.reg("cs.selector"), Some(0x10));
        assert_eq!(c.reg("cs.flags"), Some(0xa0_9b00));
        assert_eq!(c.reg("gs.base"), Some(0xffff_8880_0000_0000));
        // And it prints in the new form, which loads back the same.
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.contains(r#""cr3":"0x1234000""#), "{j}");
        assert!(!j.contains("segments"), "{j}");
        assert_eq!(serde_json::from_str::<CpuState>(&j).unwrap(), c);
    }

    #[test]
    fn registers_keep_order_and_compare_as_sets() {
        let mut a = Registers::new();
        a.set("b", 2);
        a.set("a", 1);
        a.set("b", 3);
        assert_eq!(a.iter().collect::<Vec<_>>(), [("b", 3), ("a", 1)]);
        let b: Registers = [("a", 1), ("b", 3)].into_iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.remove("a"), Some(1));
        assert_ne!(a, b);
    }
}
