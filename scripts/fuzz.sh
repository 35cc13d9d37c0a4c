#!/usr/bin/env bash
# Build and run every cargo-fuzz target of tvp (docs/fuzzing.md) for SECONDS each
# (default 20), one after the other, and print per target: executions, coverage
# (libFuzzer's final cov/ft) and findings. Exits non-zero if any target crashed, so a
# regression in a parser fails the run that introduced it.
#
# Usage: scripts/fuzz.sh [SECONDS | --replay | --ci BUDGET] [TARGET...]
#        scripts/fuzz.sh --lint
#   TARGET names limit the run (e.g. `scripts/fuzz.sh 60 evidence_mutate virtio_net`).
#   --replay builds every target and runs it once over its seed corpus (the
#   regression-* inputs of earlier findings included) and nothing more: fully
#   deterministic (a quick check after changing a parser). Exploration (SECONDS) is
#   for people and for runs before a release.
#   --ci BUDGET is the short exploring run scripts/test.sh (CI) runs (docs/fuzzing.md
#   "CI"): BUDGET seconds of fuzzing in all, split evenly over the targets (at least
#   1 s each), after the seeds of each are replayed (so it subsumes --replay). Each
#   target starts from its seeds alone, in a fresh directory, with a fixed libFuzzer
#   seed (derived from its name): the same build explores the same inputs in the same
#   order, and only the time cut varies. A finding fails the run and prints the
#   reproducer's path, the command that replays it and the input as base64 with the
#   command that adds it as a regression-* seed.
#   --lint checks every fuzz folder (not in the root workspace, so the root's
#   cargo fmt/clippy skip them) with `cargo +nightly fmt --check` and
#   `cargo +nightly clippy --all-targets -- -D warnings`; scripts/test.sh runs it.
#
# Seeds come from the repository (each fuzz folder's corpus/TARGET, read only: nothing
# is ever written there); what the fuzzer adds goes to target/fuzz-corpus/TARGET (kept
# between runs, so longer runs build on shorter ones; --ci uses target/fuzz-ci/TARGET,
# emptied first) and crashing inputs to target/fuzz-artifacts/TARGET. Reproduce a
# finding with `cargo +nightly fuzz run -s none -a TARGET ARTIFACT` in its fuzz folder.
# Needs the nightly toolchain (installed with rustup if missing) and installs
# cargo-fuzz and a C++ compiler (libFuzzer) if missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage="usage: $0 [SECONDS | --replay | --ci BUDGET] [TARGET...] | --lint"
secs=${1:-20}
lint=0
if [ "$secs" = --lint ]; then lint=1; secs=0; fi
replay=0
ci=0
budget=0
if [ "$secs" = --replay ]; then replay=1; secs=0; fi
if [ "$secs" = --ci ]; then
    ci=1
    budget=${2:-}
    [[ $budget =~ ^[0-9]+$ ]] || die "$usage"
    secs=0
    shift
fi
[[ $secs =~ ^[0-9]+$ ]] || die "$usage"
shift || true
only=("$@")

# Fuzz folders, each its own cargo project (excluded from the root workspace).
FUZZ_DIRS=(
    agent/fuzz
    agent/verifier/fuzz
    agent/image/fuzz
    agent/audit/fuzz
    pxe-firmware/protocol/fuzz
    pxe-firmware/boot-server/fuzz
    vmm-hooks/abi/fuzz
    vmm-hooks/channel/fuzz
    vmm-hooks/fuzz
)

ensure_rust
ensure_packages g++
if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal >/dev/null || die "rustup toolchain install nightly failed"
fi

if ((lint)); then
    rustup component add --toolchain nightly rustfmt clippy >/dev/null 2>&1 ||
        die "rustup component add rustfmt clippy (nightly) failed"
    for dir in "${FUZZ_DIRS[@]}"; do
        say "fuzz folder $dir: cargo fmt --check, clippy (warnings are errors)"
        (cd "$TVP_ROOT/$dir" && cargo +nightly fmt -- --check &&
            nice -n 10 cargo +nightly clippy --all-targets --locked --quiet \
                --target-dir "$TVP_ROOT/target/fuzz-clippy" -- -D warnings) ||
            die "$dir: formatting or clippy findings (above)"
    done
    ok "fuzz folders: formatted, clippy clean"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked >/dev/null 2>&1 || die "cargo install cargo-fuzz failed"
fi

# No sanitizer (the targets are safe Rust; ASan would halve the speed for little) but
# debug assertions on, so integer overflow panics instead of wrapping.
FUZZ_FLAGS=(-s none -a --target-dir "$TVP_ROOT/target/fuzz")
work=$TVP_ROOT/target
bin_dir=$work/fuzz/$(rustc +nightly -vV | sed -n 's/^host: //p')/release
mkdir -p "$work/fuzz-corpus" "$work/fuzz-artifacts" "$work/fuzz-logs"
# libFuzzer stops a run whose single input takes this long (a hang). CI machines are
# loaded: --ci allows more, so a slow unit on a busy runner is not reported as a hang.
unit_timeout=10
((ci)) && unit_timeout=30

wanted() {
    ((${#only[@]} == 0)) && return 0
    local t
    for t in "${only[@]}"; do [ "$t" = "$1" ] && return 0; done
    return 1
}

if ((ci)); then
    # The budget is split over the targets that will run.
    count=0
    for dir in "${FUZZ_DIRS[@]}"; do
        while read -r t; do wanted "$t" && count=$((count + 1)); done \
            < <(cd "$TVP_ROOT/$dir" && cargo +nightly fuzz list)
    done
    ((count > 0)) || die "no fuzz target matched ${only[*]}"
    secs=$((budget / count))
    ((secs > 0)) || secs=1
    say "CI exploration: $count targets, ${secs}s each (budget ${budget}s)"
fi

rows=()
failed=0
total_execs=0
for dir in "${FUZZ_DIRS[@]}"; do
    mapfile -t targets < <(cd "$TVP_ROOT/$dir" && cargo +nightly fuzz list)
    run=()
    for t in "${targets[@]}"; do wanted "$t" && run+=("$t"); done
    ((${#run[@]} == 0)) && continue
    say "building $dir (${run[*]})"
    (cd "$TVP_ROOT/$dir" && nice -n 19 cargo +nightly fuzz build "${FUZZ_FLAGS[@]}" \
        >"$work/fuzz-logs/build-${dir//\//_}.log" 2>&1) || {
        tail -30 "$work/fuzz-logs/build-${dir//\//_}.log" >&2
        die "cargo fuzz build failed in $dir"
    }
    for t in "${run[@]}"; do
        if ((replay)); then say "replaying the seeds of $t"; else say "fuzzing $t for ${secs}s"; fi
        corpus=$work/fuzz-corpus/$t
        if ((ci)); then
            # A fresh corpus: CI explores from the seeds only, the same way every run.
            corpus=$work/fuzz-ci/$t
            rm -rf "$corpus"
        fi
        artifacts=$work/fuzz-artifacts/$t
        log=$work/fuzz-logs/$t.log
        mkdir -p "$corpus" "$artifacts"
        seeds=()
        [ -d "$TVP_ROOT/$dir/corpus/$t" ] && seeds=("$TVP_ROOT/$dir/corpus/$t")
        rc=0
        extra=()
        if ((ci)); then
            # A fixed seed per target (libFuzzer's default is the time).
            extra=(-seed="$(printf '%s' "$t" | cksum | cut -d' ' -f1)")
        fi
        if ((replay)); then
            # Every seed once, nothing generated: -runs=0 stops after the initial pass.
            inputs=("${seeds[@]}")
            ((${#inputs[@]} > 0)) || die "$t has no seed corpus in $dir/corpus/$t"
            limit=(-runs=0)
        else
            inputs=("$corpus" "${seeds[@]}")
            limit=(-max_total_time="$secs")
        fi
        # The binary cargo fuzz built (running it directly skips cargo's lock and checks).
        nice -n 19 "$bin_dir/$t" "${inputs[@]}" \
            "${limit[@]}" "${extra[@]}" -len_control=0 -timeout="$unit_timeout" \
            -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        status=$(grep -a -E 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
        cov=$(sed -E -n 's/.* cov: ([0-9]+) .*/\1/p' <<<"$status")
        ft=$(sed -E -n 's/.* ft: ([0-9]+) .*/\1/p' <<<"$status")
        corp=$(sed -E -n 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$status")
        if ((rc == 0)); then
            result=ok
        else
            failed=1
            found=$(grep -oE "(crash|leak|timeout|oom|slow-unit)-[0-9a-f]+" "$log" | tail -1 || true)
            result="FINDING ${found:-exit $rc} (see $log)"
            fail "$t: $result"
            grep -E "panicked at|ERROR: libFuzzer" -A2 "$log" | head -6 >&2 || true
            if [ -n "$found" ] && [ -f "$artifacts/$found" ]; then
                printf 'reproducer: %s\n' "$artifacts/$found" >&2
                printf 'replay it:  %s %s\n' "$bin_dir/$t" "$artifacts/$found" >&2
            fi
            if ((ci)) && [ -n "$found" ] && [ -f "$artifacts/$found" ]; then
                # The runner's files are gone after CI: print the input itself.
                printf 'add it as a seed: base64 -d > %s/corpus/%s/regression-NAME <<EOF\n' "$dir" "$t" >&2
                base64 "$artifacts/$found" >&2
                printf 'EOF\n' >&2
            fi
        fi
        total_execs=$((total_execs + ${execs:-0}))
        rows+=("$(printf '%-18s %12s %9s %7s %7s %6s  %s' "$t" "${execs:-?}" \
            "$(( ${execs:-0} / (secs > 0 ? secs : 1) ))" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
    done
done

((${#rows[@]} > 0)) || die "no fuzz target matched ${only[*]}"
printf '\n%-18s %12s %9s %7s %7s %6s  %s\n' target executions exec/s cov ft corpus result
printf '%s\n' "${rows[@]}"
printf '%-18s %12s\n' total "$total_execs"
if ((failed)); then
    fail "fuzzing found problems: inputs in $work/fuzz-artifacts"
    exit 1
fi
if ((ci)); then
    ok "no findings (${#rows[@]} targets, ${secs}s each after their seeds)"
elif ((replay)); then
    ok "no findings (${#rows[@]} targets, every seed replayed)"
else
    ok "no findings (${#rows[@]} targets, ${secs}s each)"
fi
