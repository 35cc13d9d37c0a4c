#!/usr/bin/env bash
# Assemble one of tvp-vmm's test guests (vmm-hooks/tests/guests/NAME.S) into an ELF the
# VMM boots: a stand-in firmware until the network-boot firmware lands.
# Usage: scripts/build-test-guest.sh NAME OUTDIR   (prints the ELF's path)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
name=${1:?usage: $0 NAME OUTDIR} out=${2:?usage: $0 NAME OUTDIR}
src=$TVP_ROOT/vmm-hooks/tests/guests
vmm=${TVP_VMM:-$TVP_ROOT/target/release/tvp-vmm}
[ -x "$vmm" ] || vmm=$TVP_ROOT/target/debug/tvp-vmm
[ -x "$vmm" ] || die "build tvp-vmm first (cargo build --bins)"
mkdir -p "$out"
"$vmm" abi-header >"$out/abi.inc"
cat >"$out/link.ld" <<'LD'
ENTRY(_start)
SECTIONS {
  . = 0x100000;
  .text : { *(.text*) }
  .rodata : { *(.rodata*) }
  .data : { *(.data*) }
  .bss : { *(.bss*) }
  /DISCARD/ : { *(.note*) *(.eh_frame*) *(.comment) }
}
LD
gcc -c -x assembler-with-cpp -nostdinc -I "$out" -I "$src" "$src/$name.S" -o "$out/$name.o"
ld -static -nostdlib --build-id=none -z max-page-size=4096 -T "$out/link.ld" "$out/$name.o" -o "$out/$name.elf"
echo "$out/$name.elf"
