//! The assembly test guests of `vmm-hooks/tests/guests`, built for end-to-end tests
//! (gcc and ld from binutils; ring-0 assembly without SIMD, see ENVIRONMENT.md).

use std::path::{Path, PathBuf};
use std::process::Command;

const LINKER_SCRIPT: &str = "ENTRY(_start)
SECTIONS {
  . = 0x100000;
  .text : { *(.text*) }
  .rodata : { *(.rodata*) }
  .data : { *(.data*) }
  .bss : { *(.bss*) }
  /DISCARD/ : { *(.note*) *(.eh_frame*) *(.comment) }
}
";

/// Assemble and link guest `name` into `dir/name.elf`.
pub fn build_guest(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmm-hooks/tests/guests");
    let mut inc = String::new();
    tvp_abi::asm::write_header(&mut inc).expect("ABI header");
    std::fs::write(dir.join("abi.inc"), inc).unwrap();
    std::fs::write(dir.join("link.ld"), LINKER_SCRIPT).unwrap();
    let obj = dir.join(format!("{name}.o"));
    let elf = dir.join(format!("{name}.elf"));
    let st = Command::new("gcc")
        .args(["-c", "-x", "assembler-with-cpp", "-nostdinc", "-I"])
        .arg(dir)
        .arg("-I")
        .arg(&src)
        .arg(src.join(format!("{name}.S")))
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("gcc");
    assert!(st.success(), "assembling {name}");
    let st = Command::new("ld")
        .args([
            "-static",
            "-nostdlib",
            "--build-id=none",
            "-z",
            "max-page-size=4096",
            "-T",
        ])
        .arg(dir.join("link.ld"))
        .arg(&obj)
        .arg("-o")
        .arg(&elf)
        .status()
        .expect("ld");
    assert!(st.success(), "linking {name}");
    elf
}
