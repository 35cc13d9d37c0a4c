#!/usr/bin/env bash
# Install tvp on a KVM host: release build, binaries (tvpd, tvpctl, tvp-vmm) to
# /usr/local/bin, the reproducible firmware image to /usr/local/lib/tvp/firmware.elf, the
# default configuration to /etc/tvp/tvpd.toml (kept if present) and the systemd unit.
# These are the paths the default configuration uses: tvpd measures and watches the
# tvp-vmm next to itself and that firmware at every start (docs/configuration.md).
# Usage: scripts/install.sh [--enable]   (--enable also starts tvpd now)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$TVP_ROOT"
ensure_packages libtss2-dev pkg-config tpm2-tools
ensure_rust
say "building (release)"
cargo build --release --bins --quiet
install -m 0755 target/release/tvpd target/release/tvpctl target/release/tvp-vmm /usr/local/bin/
say "building the firmware (reproducible)"
install -d -m 0755 /usr/local/lib/tvp
scripts/build-firmware.sh --out /usr/local/lib/tvp/firmware.elf >/dev/null
install -d -m 0755 /etc/tvp
if ! getent passwd tvp-vmm >/dev/null; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tvp-vmm
    ok "created the system user tvp-vmm (the VMMs drop to it)"
fi
if [ ! -e /etc/tvp/tvpd.toml ]; then
    # The shipped file documents the defaults; an installed host also drops VMMs to tvp-vmm.
    sed 's|^# vmm_user = "tvp-vmm"$|vmm_user = "tvp-vmm"|' scripts/tvpd.toml >/etc/tvp/tvpd.toml
    chmod 0644 /etc/tvp/tvpd.toml
    ok "wrote /etc/tvp/tvpd.toml"
fi
install -m 0644 scripts/tvpd.service /etc/systemd/system/tvpd.service
install -d -m 0755 /usr/local/share/doc/tvp && install -m 0644 README.md /usr/local/share/doc/tvp/
systemctl daemon-reload 2>/dev/null || true
if [ "${1:-}" = --enable ]; then systemctl enable --now tvpd; fi
ok "installed; start with: systemctl enable --now tvpd"
