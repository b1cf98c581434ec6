//! A decompression bomb (a small .zst expanding far past the free space of the spill
//! directory) must fail with a clear out-of-space error naming the directory, not hang
//! or panic, and must leave nothing behind. Needs root (it mounts an 8 MiB tmpfs);
//! skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::Command;

use dumpconv_formats::detect::{self, OpenOptions};

struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_bomb_fills_the_spill_dir_and_fails_cleanly() {
    let Some(fs) = Tmpfs::mount("8m") else {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    // 256 MiB of a non-zero pattern (zero pages would stay holes and cost nothing):
    // about 10 KiB of zstd.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    let block: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8 + 1).collect();
    for _ in 0..(256 << 20) / block.len() {
        enc.write_all(&block).unwrap();
    }
    let z = enc.finish().unwrap();
    assert!(z.len() < 64 << 10, "{}", z.len());
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&z).unwrap();
    let opts = OpenOptions {
        spill_dir: Some(fs.path().to_path_buf()),
        ..OpenOptions::default()
    };
    let e = detect::open(f.path(), &opts).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(e.contains("No space left on device"), "{e}");
    assert!(e.contains(&fs.path().display().to_string()), "{e}");
    assert!(e.contains(&f.path().display().to_string()), "{e}");
    assert!(e.contains("DUMPCONV_SPILL_DIR"), "{e}");
    // The unlinked spill is gone with its space.
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
    let df = Command::new("df")
        .arg("--output=used")
        .arg(fs.path())
        .output()
        .unwrap();
    let used: u64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap();
    assert!(used < 1024, "{used} KiB still used");
}
