#!/usr/bin/env bash
# Assemble the network-boot test workload (pxe-firmware/test-workload/hello.S) into an
# ELF for the firmware's workload window. Usage: scripts/build-test-workload.sh OUTDIR
# (prints the ELF's path). Sign it with `tvp-boot-server sign-workload`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out=${1:?usage: $0 OUTDIR}
src=$TVP_ROOT/pxe-firmware/test-workload
mkdir -p "$out"
gcc -c -x assembler "$src/hello.S" -o "$out/hello.o"
ld -static -nostdlib --build-id=none -z max-page-size=4096 -T "$src/link.ld" "$out/hello.o" -o "$out/hello.elf"
echo "$out/hello.elf"
