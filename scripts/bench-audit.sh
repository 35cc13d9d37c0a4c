#!/usr/bin/env bash
# Benchmark (not a test): audit append throughput in tvpd's audit trail (seal, write,
# fsync, TPM NV_Extend on a private swtpm, group commit) by one writer and by WRITERS
# concurrent writers (default 16), against a plain write+fsync loop of the same record
# lines (the floor), plus the chain without the TPM; prints each with its ratio to the
# floor, then reopens the log (which verifies it against the TPM anchor). RECORDS
# defaults to 200; DIR (default: a temporary directory) chooses the file system
# measured — use the one that will hold /var/lib/tvp.
# Usage: scripts/bench-audit.sh [RECORDS] [DIR] [WRITERS]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$TVP_ROOT"
ensure_packages "${TVP_PACKAGES[@]}"
ensure_rust
say "building (release)"
cargo build --release -p tvp-tests --bin tvp-audit-bench --quiet
say "audit append: AuditLog vs write+fsync"
TVP_BIN_DIR="$TVP_ROOT/target/release" target/release/tvp-audit-bench "$@"
