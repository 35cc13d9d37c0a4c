#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, builds,
# and runs every test (unit tests and end-to-end tests against real swtpm instances).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$TVP_ROOT"

ensure_packages "${TVP_PACKAGES[@]}"
ensure_rust

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "firmware: cargo fmt --check, clippy (its own workspace)"
(cd pxe-firmware/firmware && cargo fmt -- --check \
    && cargo clippy --release --locked --quiet --target x86_64-unknown-linux-gnu \
        --target-dir "$TVP_ROOT/target/firmware/clippy" -- -D warnings)
say "build"
cargo build --workspace --bins --quiet
say "tests"
started=$(date +%s)
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee /tmp/tvp-test-$$.log
rc=${PIPESTATUS[0]}
passed=$(grep -Eo '^test result: .*\. ([0-9]+) passed' /tmp/tvp-test-$$.log | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' /tmp/tvp-test-$$.log | awk '{s+=$1} END {print s+0}')
rm -f /tmp/tvp-test-$$.log
say "tests took $(( $(date +%s) - started )) s"
echo "tvp: $passed passed, $failed failed"
exit "$rc"
