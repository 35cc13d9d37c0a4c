//! The assembly test guests of `vmm-hooks/tests/guests`, built for end-to-end tests by
//! `scripts/build-test-guest.sh` (gcc and ld; ring-0 assembly without SIMD, see
//! ENVIRONMENT.md).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Assemble and link guest `name` into `dir/name.elf`.
pub fn build_guest(name: &str, dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-guest.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(name)
        .arg(dir)
        .env("TVP_VMM", crate::bin("tvp-vmm"))
        .output()
        .expect("run scripts/build-test-guest.sh");
    assert!(
        out.status.success(),
        "building guest {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
