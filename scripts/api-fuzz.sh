#!/usr/bin/env bash
# Schema-driven API fuzzing: schemathesis generates requests from docs/openapi.yaml
# (valid ones, and invalid ones that must be refused) and sends them to a running
# tvpd through its Unix socket. It fails on any 5xx, on a response that does not match
# the documented schema or status codes, on a schema-valid request that tvpd refuses
# and on a schema-violating request that tvpd accepts: docs and code must agree.
#
# Usage: scripts/api-fuzz.sh SOCKET [EXAMPLES [SEED]]
#   SOCKET    tvpd's API socket (the caller must be allowed on it; run as root)
#   EXAMPLES  generated cases per operation and phase (default 10)
#   SEED      hypothesis seed (default: random; printed, so a run can be repeated)
# The test suite runs it against its own tvpd (tests/tests/api_schema.rs).
#
# schemathesis comes from the Python package registry, pinned, into a virtual
# environment under target/ (made once). Checks and the few documented exceptions are
# in tests/api-fuzz/schemathesis.toml.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

sock=${1:-}
examples=${2:-10}
seed=${3:-}
[ -S "$sock" ] || die "usage: $0 SOCKET [EXAMPLES [SEED]] (SOCKET: tvpd's API socket)"
[[ $examples =~ ^[0-9]+$ ]] || die "EXAMPLES must be a number"

ensure_schemathesis

make_tmpdir work
"$TVP_PYTHON" "$TVP_ROOT/tests/api-fuzz/unix_bridge.py" "$sock" >"$work/port" &
track_pid $!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
port=$(cat "$work/port")
[ -n "$port" ] || die "the TCP-to-Unix bridge did not start"

args=(--config-file "$TVP_ROOT/tests/api-fuzz/schemathesis.toml" --no-color
    run "$TVP_ROOT/docs/openapi.yaml" --url "http://127.0.0.1:$port"
    --checks all --max-examples "$examples" --workers 1)
[ -n "$seed" ] && args+=(--seed "$seed")
say "schemathesis: docs/openapi.yaml against $sock, $examples examples per operation and phase"
# (from the private temp dir: schemathesis keeps a cache in .schemathesis/ of its
# working directory)
(cd "$work" && "$TVP_SCHEMATHESIS" "${args[@]}")
