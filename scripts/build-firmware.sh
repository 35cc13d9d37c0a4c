#!/usr/bin/env bash
# Reproducible build of the guest firmware (pxe-firmware/firmware): the same source,
# Cargo.lock and toolchain give the same bytes wherever the checkout lives, and those
# bytes (their SHA-256) are what tvp-vmm measures into PCR 23.
#
# Usage: scripts/build-firmware.sh [--out FILE] [--features LIST]
#   --out FILE       where to put the image (default: target/firmware/tvp-firmware.elf,
#                    or tvp-firmware-<features>.elf for a feature build)
#   --features LIST  cargo features of the firmware (test variants only)
# Prints "sha256 <hex> <file>" on stdout as its last line.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# The toolchain the published firmware digests were built with. Another rustc builds a
# working image with a different digest (warned below).
PINNED_RUSTC="rustc 1.95.0"

out="$TVP_ROOT/target/firmware/tvp-firmware.elf"
features=""
while (($#)); do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --features) features=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done

ensure_rust
fw="$TVP_ROOT/pxe-firmware/firmware"
target_dir="$TVP_ROOT/target/firmware"
if [ -n "$features" ]; then
    tag=${features//[^a-z0-9]/_}
    target_dir="$target_dir/features-$tag"
    [ "$out" = "$TVP_ROOT/target/firmware/tvp-firmware.elf" ] && out="$TVP_ROOT/target/firmware/tvp-firmware-$tag.elf"
fi

rustc_v=$(rustc -V)
case "$rustc_v" in
    "$PINNED_RUSTC"*) ;;
    *) printf 'warning: %s is not the pinned %s; the image digest will differ\n' "$rustc_v" "$PINNED_RUSTC" >&2 ;;
esac

# Nothing from the caller's environment may change the code generated.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET \
    CARGO_TARGET_DIR RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER CARGO_INCREMENTAL \
    CARGO_PROFILE_RELEASE_DEBUG CARGO_PROFILE_RELEASE_OPT_LEVEL
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
export TZ=UTC LC_ALL=C
# Static, non-PIE code for the baseline x86-64 CPU (no host-specific instructions);
# file paths in panic messages independent of the checkout and cargo home.
export RUSTFLAGS="-C relocation-model=static -C target-cpu=x86-64 -C debuginfo=0 \
--remap-path-prefix=$TVP_ROOT=/tvp --remap-path-prefix=$cargo_home=/cargo"

args=(build --release --locked --target x86_64-unknown-linux-gnu --target-dir "$target_dir")
[ -n "$features" ] && args+=(--features "$features")
(cd "$fw" && cargo "${args[@]}") >&2

mkdir -p "$(dirname "$out")"
# Unchanged images are left alone (a tvpd watching "$out" sees no event); otherwise a
# private temporary name and an atomic rename, so concurrent builds (parallel tests)
# never expose a partly written image to a VMM or tvpd already using "$out".
built="$target_dir/x86_64-unknown-linux-gnu/release/tvp-firmware"
if ! cmp -s "$built" "$out"; then
    cp "$built" "$out.tmp.$$"
    mv "$out.tmp.$$" "$out"
fi
digest=$(sha256sum "$out" | cut -d' ' -f1)
echo "sha256 $digest $out"
