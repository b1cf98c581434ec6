//! All-zero bytes: recognising them (zero pages become holes, shared zero blocks or
//! dropped blocks in every writer, and holes in the decompressed spill of an input) and
//! producing them (a forward-only sink writes a hole as zeros).

/// A megabyte of zeros to write or hash from, so a hole costs few calls.
pub static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// True if every byte is zero. Checks a short prefix first (data pages almost always
/// have a non-zero byte early), then ORs fixed-size groups, which the compiler turns
/// into wide vector operations.
pub fn is_zero(b: &[u8]) -> bool {
    let (head, rest) = b.split_at(b.len().min(32));
    if head.iter().any(|&x| x != 0) {
        return false;
    }
    let mut groups = rest.chunks_exact(256);
    for g in &mut groups {
        if g.iter().fold(0u8, |a, &x| a | x) != 0 {
            return false;
        }
    }
    groups.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 4096]));
        assert!(is_zero(&ZEROS));
        for pos in [0usize, 17, 31, 32, 100, 287, 288, 4095] {
            let mut b = [0u8; 4096];
            b[pos] = 1;
            assert!(!is_zero(&b), "{pos}");
        }
        assert!(!is_zero(&[0, 0, 7]));
        let mut p = vec![0u8; 4100];
        p[4099] = 1;
        assert!(!is_zero(&p));
    }
}
