#!/usr/bin/env bash
# Assemble the network-boot test workloads: pxe-firmware/test-workload/hello.S into an
# ELF for the firmware's workload window, tpmread.S likewise into OUTDIR/tpmread.elf
# (reads a VM's own TPM and its event log), and bzimage.S into OUTDIR/test-bzimage, a
# stand-in kernel in the bzImage format (for `sign-workload --kernel`).
# Usage: scripts/build-test-workload.sh OUTDIR (prints the ELF's path last).
# Sign them with `tvp-boot-server sign-workload`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out=${1:?usage: $0 OUTDIR}
src=$TVP_ROOT/pxe-firmware/test-workload
mkdir -p "$out"
gcc -c -x assembler "$src/hello.S" -o "$out/hello.o"
ld -static -nostdlib --build-id=none -z max-page-size=4096 -T "$src/link.ld" "$out/hello.o" -o "$out/hello.elf"
gcc -c -x assembler "$src/tpmread.S" -o "$out/tpmread.o"
ld -static -nostdlib --build-id=none -z max-page-size=4096 -T "$src/link.ld" "$out/tpmread.o" -o "$out/tpmread.elf"
gcc -c -x assembler "$src/bzimage.S" -o "$out/bzimage.o"
objcopy -O binary -j .text "$out/bzimage.o" "$out/test-bzimage"
echo "$out/hello.elf"
