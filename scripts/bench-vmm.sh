#!/usr/bin/env bash
# Benchmark of tvp-vmm (not a test). Prints medians of:
#  1. boot latency: from just before exec of `tvp-vmm run` to the guest's first
#     instruction (the guest writes boot-timer milestone 0 as its first instruction; the
#     VMM logs the milestone's wall-clock time), and the VMM's own main()->milestone time;
#  2. measurement throughput on a firmware-like ELF of SIZE_MIB MiB (random payload in a
#     loaded segment): `tvp-vmm measure-file` (the hook's streaming SHA-256), the
#     in-process firmware-image measurement of a real VM start, and `sha256sum`, on the
#     same file in the same run, with the ratio.
# Needs /dev/kvm, gcc/binutils and cargo. Env: RUNS (default 11), SIZE_MIB (default 64).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-11}
SIZE_MIB=${SIZE_MIB:-64}

cargo build --release -q -p tvp-vmm --manifest-path "$ROOT/Cargo.toml"
VMM="$ROOT/target/release/tvp-vmm"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} m=int((NR+1)/2); if (NR%2) print a[m]; else printf "%.6g\n", (a[m]+a[m+1])/2}'; }
now_us() { echo $(( $(date +%s%N) / 1000 )); }

"$VMM" abi-header > "$W/abi.inc"
cat > "$W/link.ld" <<'LD'
ENTRY(_start)
SECTIONS {
  . = 0x100000;
  .text : { *(.text*) }
  .data : { *(.data*) }
  /DISCARD/ : { *(.note*) *(.eh_frame*) *(.comment) }
}
LD
cat > "$W/boot.S" <<'ASM'
#include "abi.inc"
    .code64
    .text
    .globl _start
_start:
    mov $BOOT_TIMER_PORT, %dx
    xor %eax, %eax
    out %al, %dx                /* milestone 0: first instruction */
    mov $POWER_PORT, %dx
    mov $POWER_OFF_VALUE, %ax
    out %ax, %dx
1:  hlt
    jmp 1b
#ifdef BIG
    .data
    .incbin "blob.bin"
#endif
ASM
head -c $((SIZE_MIB << 20)) /dev/urandom > "$W/blob.bin"
build() { # name, extra cpp flags
    gcc -c -x assembler-with-cpp -nostdinc -I "$W" $2 "$W/boot.S" -o "$W/$1.o"
    (cd "$W" && ld -static -nostdlib --build-id=none --no-warn-rwx-segments -z max-page-size=4096 -T link.ld "$1.o" -o "$1.elf")
}
build boot ""
(cd "$W" && build big "-DBIG")
printf '\x30\x03\x02\x01\x01' > "$W/ca.der"
page() { # out, mem_mib
    "$VMM" config-page --out "$1" --vip 10.0.0.2/24 --gateway 10.0.0.1 --mac 02:00:00:00:00:01 \
        --boot-server 10.0.0.1:8443 --server-name boot.example --auth-code bench \
        --ca-cert "$W/ca.der" --mem-mib "$2" --time 1700000000 \
        --entropy-hex 0000000000000000000000000000000000000000000000000000000000000000
}
page "$W/small.page" 16
page "$W/big.page" $((SIZE_MIB * 2 + 16))

echo "== boot latency (${RUNS} runs, 16 MiB guest, standalone, release build)"
: > "$W/lat"; : > "$W/inproc"
for _ in $(seq "$RUNS"); do
    t0=$(now_us)
    "$VMM" --log info run --standalone --vm-id bench --firmware "$W/boot.elf" \
        --config-page "$W/small.page" --console-log "$W/console.log" 2> "$W/run.log"
    line=$(grep 'milestone code=0' "$W/run.log")
    first=$(sed -E 's/.*unix_micros=([0-9]+).*/\1/' <<< "$line")
    since=$(sed -E 's/.*micros_since_start=([0-9]+).*/\1/' <<< "$line")
    echo $(( first - t0 )) >> "$W/lat"
    echo "$since" >> "$W/inproc"
done
lat=$(median < "$W/lat"); inproc=$(median < "$W/inproc")
echo "exec -> first guest instruction: median ${lat} us ($(awk -v v="$lat" 'BEGIN{printf "%.2f", v/1000}') ms)"
echo "main() -> first guest instruction: median ${inproc} us"

FILE="$W/big.elf"
BYTES=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null  # page cache
echo "== measurement throughput: $(( BYTES >> 20 )) MiB firmware-like ELF, ${RUNS} runs each"
: > "$W/ours"; : > "$W/theirs"; : > "$W/hook"
for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N); "$VMM" measure-file "$FILE" > "$W/ours.out" 2>/dev/null; t1=$(date +%s%N)
    sha256sum "$FILE" > "$W/theirs.out"; t2=$(date +%s%N)
    awk -v b="$BYTES" -v ns=$(( t1 - t0 )) 'BEGIN{printf "%.1f\n", b/(ns/1e9)/1e6}' >> "$W/ours"
    awk -v b="$BYTES" -v ns=$(( t2 - t1 )) 'BEGIN{printf "%.1f\n", b/(ns/1e9)/1e6}' >> "$W/theirs"
    [ "$(cut -d' ' -f1 "$W/ours.out")" = "$(cut -d' ' -f1 "$W/theirs.out")" ] || { echo "digest mismatch" >&2; exit 1; }
done
for _ in $(seq 3); do
    "$VMM" --log info,tvp_vmm::measure=debug run --standalone --vm-id bench-big --firmware "$FILE" \
        --config-page "$W/big.page" --console-log "$W/console.log" 2> "$W/run.log"
    grep 'hashed event=firmware-image' "$W/run.log" | sed -E 's/.* mb_per_s=([0-9.]+).*/\1/' >> "$W/hook"
done
ours=$(median < "$W/ours"); theirs=$(median < "$W/theirs"); hook=$(median < "$W/hook")
echo "tvp-vmm measure-file (wall, incl. process start): median ${ours} MB/s"
echo "tvp-vmm firmware measurement inside a VM start:   median ${hook} MB/s (3 runs)"
echo "sha256sum (wall, incl. process start):            median ${theirs} MB/s"
echo "ratio tvp-vmm/sha256sum: $(awk -v a="$ours" -v b="$theirs" 'BEGIN{printf "%.2f", a/b}')"
