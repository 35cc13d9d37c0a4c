#!/usr/bin/env bash
# Benchmarks (not tests): print figures and ratios against a peer measured in the same run.
#  - quote latency and quotes/second through tvpd's socket API vs `tpm2_quote`
#    (tpm2-tools), same swtpm, same run, 1 and 16 clients (CONCURRENCY); the
#    secret-carrying TPM commands and the cost of their salted sessions;
#  - tvp-vmm: exec to first guest instruction, and measurement throughput vs sha256sum
#    (scripts/bench-vmm.sh); its resident memory beyond guest RAM, 256 MiB guest
#    (`cargo bench -p tvp-vmm --bench footprint`); the VM's TPM: a guest's
#    TPM2_PCR_Read through the CRB device vs a bare swtpm (`--bench vtpm`);
#  - measured VMs through the API: create -> running with a per-phase breakdown, the
#    PCR lease hold time, attestations per minute with 10 queued VMs (tvp-bench-vm);
#  - the real network boot: TLS handshake on both ends, boot-server session, API create
#    -> workload done by boot phase, lease hold, 10 queued network boots (tvp-bench-netboot);
#  - encrypted image loading into guest RAM vs openssl enc and cat (tvp-bench-image);
#  - audit append (fsync + TPM NV anchor, group commit) by 1 and 16 concurrent
#    writers vs a plain write+fsync loop (scripts/bench-audit.sh);
#  - the tenant's Linux in the QEMU host: create -> kernel banner -> /init by phase,
#    against the same kernel, initramfs and command line booted by QEMU with KVM there
#    (scripts/qemu-host.sh --peer).
# Usage: scripts/bench.sh [QUOTES] [TPM2_QUOTES] [CONCURRENCY]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$TVP_ROOT"
ensure_packages "${TVP_PACKAGES[@]}"
ensure_rust
say "building (release)"
cargo build --release --workspace --bins --quiet
say "quote: tvpd API vs tpm2_quote"
TVP_BIN_DIR="$TVP_ROOT/target/release" target/release/tvp-bench "$@"
say "measured VMs: create -> running, lease hold time, attestations per minute"
TVP_BIN_DIR="$TVP_ROOT/target/release" target/release/tvp-bench-vm 20 10
say "network boot: handshake, boot-server session, create -> workload (real firmware, TAP, boot server)"
# The transfer of a real kernel through the tunnel: this host's, or the QEMU host's.
TVP_BENCH_KERNEL=${TVP_BENCH_KERNEL:-$(ls /boot/vmlinuz-* target/qemu-host/linux-image-*/boot/vmlinuz-* 2>/dev/null | head -n1 || true)}
export TVP_BENCH_KERNEL
[ -n "$TVP_BENCH_KERNEL" ] || unset TVP_BENCH_KERNEL
TVP_BIN_DIR="$TVP_ROOT/target/release" target/release/tvp-bench-netboot "${NETBOOTS:-10}" "${NETBOOTS_QUEUED:-10}"
say "tvp-vmm: boot latency and measurement throughput vs sha256sum"
scripts/bench-vmm.sh
say "tvp-vmm: memory overhead beyond guest RAM (vs Firecracker's published 5 MiB), exec -> first instruction"
cargo bench -q -p tvp-vmm --bench footprint -- 20 2>/dev/null
say "the VM's TPM: TPM2_PCR_Read from a guest through the CRB device vs a bare swtpm from the host"
cargo bench -q -p tvp-vmm --bench vtpm -- 5 2>/dev/null
say "encrypted image: decrypt-while-loading into guest RAM vs openssl enc and a plain copy"
TVP_BIN_DIR="$TVP_ROOT/target/release" target/release/tvp-bench-image "${IMAGE_MIB:-256}" 5
say "audit append: Audit (write+fsync+NV_Extend, group commit), 1 and 16 writers, vs a plain write+fsync loop"
TVP_BIN_DIR="$TVP_ROOT/target/release" target/release/tvp-audit-bench "${AUDIT_RECORDS:-200}"
say "tenant Linux in the QEMU host: create -> /init (network boot, attested) vs QEMU -enable-kvm direct"
scripts/qemu-host.sh --peer --no-build 2>&1 | grep -E "Linux network boot|Linux phases|peer \(|disk read|disk peer|create -> /init|TVP-CHECK linux|QEMU host run" || true
