#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, builds,
# replays every fuzz target's seed corpus and fuzzes each briefly, and runs every test
# (unit tests and end-to-end tests against real swtpm instances).
# Prints how many tests were skipped for a missing environment, and why; with CI set or
# TVP_REQUIRE_ALL=1 such a test fails instead.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$TVP_ROOT"

ensure_packages "${TVP_PACKAGES[@]}"
ensure_rust

# A fresh clone's run writes about 15 GB under target/ (debug build and test binaries,
# the fuzz targets' builds, firmware, the QEMU host's image, schemathesis' venv). Say so
# up front rather than failing half-way with ENOSPC in whichever step comes last.
mkdir -p "$TVP_ROOT/target"
free_gb=$(df -P -BG "$TVP_ROOT/target" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
if [ "${free_gb:-0}" -lt 15 ]; then
    say "warning: ${free_gb} GB free under $TVP_ROOT/target; the suite needs about 15 GB"
fi
# Under CI, no incremental compilation: a fresh clone builds once, and the incremental
# cache would only cost disk (about 1 GB) and time.
if [ -n "${CI:-}" ] && [ "${CI}" != 0 ] && [ "${CI}" != false ]; then
    export CARGO_INCREMENTAL=0
fi

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "firmware: cargo fmt --check, clippy (its own workspace)"
(cd pxe-firmware/firmware && cargo fmt -- --check \
    && cargo clippy --release --locked --quiet --target x86_64-unknown-linux-gnu \
        --target-dir "$TVP_ROOT/target/firmware/clippy" -- -D warnings)
say "fuzz folders: cargo fmt --check, clippy (their own workspaces)"
scripts/fuzz.sh --lint
say "build"
# The binaries the end-to-end tests run, in the profile the tests are built in
# (`scripts/test.sh --release` runs them against release builds).
profile=()
for a in "$@"; do [ "$a" = --release ] && profile=(--release); done
cargo build --workspace --bins --quiet ${profile[@]+"${profile[@]}"}
# Every fuzz target builds, replays its seed corpus (the inputs of earlier findings
# included) and then explores for a few seconds from its seeds with a fixed seed
# (TVP_FUZZ_CI_BUDGET seconds in all, default 160: about 6 s for each of 25 targets).
# A finding fails the suite and prints its reproducer (docs/fuzzing.md, "CI").
say "fuzz targets: build, replay every seed, explore ${TVP_FUZZ_CI_BUDGET:-160} s in all"
scripts/fuzz.sh --ci "${TVP_FUZZ_CI_BUDGET:-160}"
# schemathesis (pinned, into a venv under target/) for tests/tests/api_schema.rs, which
# fuzzes the API through tvpd's socket from docs/openapi.yaml.
ensure_schemathesis
# A test that cannot have its environment (root, KVM, a network namespace, a tool...)
# fails under CI or TVP_REQUIRE_ALL=1; otherwise it passes as a skip and writes one
# `tvp-skip: <test>: <why>` line into TVP_SKIP_LOG (tests/env, `require!`).
if [ -n "${CI:-}" ] && [ "${CI}" != 0 ] && [ "${CI}" != false ]; then
    export TVP_REQUIRE_ALL=1
fi
if [ "${TVP_REQUIRE_ALL:-0}" = 1 ]; then
    say "tests (TVP_REQUIRE_ALL=1: a missing environment fails its test)"
else
    say "tests (a missing environment is a skip; CI or TVP_REQUIRE_ALL=1 make it a failure)"
fi
log=$(mktemp /tmp/tvp-test.XXXXXX)
TVP_SKIP_LOG=$(mktemp /tmp/tvp-skips.XXXXXX)
export TVP_SKIP_LOG
started=$(date +%s)
# (not under set -e: the summary below is printed also when tests fail)
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .*\. ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
skipped=$(grep -c '^tvp-skip: ' "$TVP_SKIP_LOG" || true)
say "tests took $(( $(date +%s) - started )) s"
echo "tvp: $((passed - skipped)) passed, $failed failed, $skipped skipped"
if [ "$skipped" -gt 0 ]; then
    echo "tvp: skipped (counted as passed by cargo, but they did not run):"
    sed 's/^tvp-skip: /  /' "$TVP_SKIP_LOG"
fi
rm -f "$log" "$TVP_SKIP_LOG"
exit "$rc"
