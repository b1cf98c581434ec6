//! The Linux VMCOREINFO note: `KEY=value` lines. The raw bytes are kept so the note
//! can be written back unchanged; the parsed lines serve look-ups.
//!
//! Value formats differ by key (docs/formats.md#vmcoreinfo): `SYMBOL(x)` and
//! `KERNELOFFSET` are hex without 0x, `NUMBER(x)`, `SIZE(x)`, `OFFSET(x)`, `LENGTH(x)` are
//! decimal (NUMBER may be negative), `NUMBER(VMALLOC_START)` is hex with 0x.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmcoreInfo {
    raw: Vec<u8>,
    entries: Vec<(String, String)>,
}

impl VmcoreInfo {
    /// Parse the note descriptor. Lines without '=' are ignored; the text may or may
    /// not end with NULs.
    pub fn parse(raw: &[u8]) -> VmcoreInfo {
        let text_end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = String::from_utf8_lossy(&raw[..text_end]);
        let entries = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        VmcoreInfo {
            raw: raw.to_vec(),
            entries,
        }
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The value of the first line with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `SYMBOL(name)` as an address.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        parse_hex(self.get(&format!("SYMBOL({name})"))?)
    }

    /// `NUMBER(name)`, decimal, possibly negative; falls back to hex with 0x (as the
    /// kernel prints VMALLOC_START and friends).
    pub fn number(&self, name: &str) -> Option<i64> {
        let v = self.get(&format!("NUMBER({name})"))?;
        if let Some(h) = v.strip_prefix("0x") {
            return u64::from_str_radix(h, 16).ok().map(|u| u as i64);
        }
        v.parse::<i64>().ok()
    }

    pub fn osrelease(&self) -> Option<&str> {
        self.get("OSRELEASE")
    }

    pub fn page_size(&self) -> Option<u64> {
        self.get("PAGESIZE")?.parse().ok()
    }

    /// x86_64 physical load offset of the kernel: `NUMBER(phys_base)` (decimal, as the
    /// kernel prints it; QEMU misreads it as hex).
    pub fn phys_base(&self) -> Option<u64> {
        self.number("phys_base").map(|v| v as u64)
    }

    /// KASLR virtual slide.
    pub fn kernel_offset(&self) -> Option<u64> {
        parse_hex(self.get("KERNELOFFSET")?)
    }

    /// AMD SME C-bit mask to clear from table entries.
    pub fn sme_mask(&self) -> Option<u64> {
        self.number("sme_mask").map(|v| v as u64)
    }

    pub fn pgtable_l5_enabled(&self) -> Option<bool> {
        self.number("pgtable_l5_enabled").map(|v| v != 0)
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_value_format() {
        let text =
            b"OSRELEASE=6.1.0-28-amd64\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a0a000\n\
NUMBER(phys_base)=-16777216\nKERNELOFFSET=1e00000\nNUMBER(sme_mask)=0\n\
NUMBER(pgtable_l5_enabled)=1\nNUMBER(VMALLOC_START)=0xffffc90000000000\nnoise\n\0\0";
        let v = VmcoreInfo::parse(text);
        assert_eq!(v.osrelease(), Some("6.1.0-28-amd64"));
        assert_eq!(v.page_size(), Some(4096));
        assert_eq!(v.symbol("init_top_pgt"), Some(0xffff_ffff_82a0_a000));
        assert_eq!(v.number("phys_base"), Some(-16777216));
        assert_eq!(v.kernel_offset(), Some(0x1e0_0000));
        assert_eq!(v.sme_mask(), Some(0));
        assert_eq!(v.pgtable_l5_enabled(), Some(true));
        assert_eq!(
            v.number("VMALLOC_START"),
            Some(0xffffc90000000000u64 as i64)
        );
        assert_eq!(v.raw(), &text[..]);
        assert_eq!(v.get("noise"), None);
    }
}
