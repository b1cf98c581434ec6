//! Parsing of the numbers users type: `0x1000`, `4096`, `16M`, `0x100000-0x1fffff`.

/// A size or address: decimal, `0x` hex, or decimal with a binary suffix K, M, G, T
/// (`16M` = 16 MiB). Underscores are ignored.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).map_err(|e| format!("{s:?}: {e}"));
    }
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (&t[..], 0),
    };
    let v: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a number (use 4096, 0x1000 or 4K)"))?;
    v.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} does not fit in 64 bits"))
}

/// The one reading of an on/off value, for option words, manifests and writer options
/// alike: `1 true yes on` and an empty value (a bare key) are on, `0 false no off` off,
/// any case.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The words [`parse_bool`] takes, for messages.
pub const BOOL_WORDS: &str = "1/0, true/false, yes/no, on/off";

/// The default number of compression threads: all cores. The one place it is computed
/// (kdump page compression, whole-output zstd, the cores a batch shares out).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_u64("0x1000"), Ok(4096));
        assert_eq!(parse_u64("4096"), Ok(4096));
        assert_eq!(parse_u64("16M"), Ok(16 << 20));
        assert_eq!(parse_u64("1_000"), Ok(1000));
        assert!(parse_u64("x").is_err());
        assert!(parse_u64("99999999999T").is_err());
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool(""), Some(true));
        assert_eq!(parse_bool("off"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
