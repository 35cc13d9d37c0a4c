//! A small tmpfs for "disk full" tests (`Need::Tmpfs`), unmounted also when the test
//! fails, and a filler that uses up its space.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test, unmounted also when the test fails.
pub struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// Mount a tmpfs of `size` (e.g. `64k`) at `at`; panics if that fails (the test
    /// states `require!(Need::Tmpfs)` first, so it can).
    pub fn mount(at: &Path, size: &str) -> SmallTmpfs {
        std::fs::create_dir_all(at).expect("tmpfs mount point");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount a tmpfs at {}: {st}", at.display());
        SmallTmpfs(at.to_path_buf())
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fill the file system until writes fail.
pub fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = [0u8; 1024];
    while f.write_all(&block).and_then(|_| f.sync_all()).is_ok() {}
}
