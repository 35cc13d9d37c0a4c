#!/usr/bin/env bash
# A real Linux KVM host with a TPM, inside QEMU: Debian's kernel (downloaded with apt,
# unpacked, not installed) booted under TCG with SVM exposed, so it has its own
# /dev/kvm; swtpm behind QEMU's TPM CRB device, so tvpd uses the kernel's TPM driver and
# resource manager (device:/dev/tpmrm0) exactly as on a host with a hardware TPM.
#
# Usage: scripts/qemu-host.sh [--keep] [--shell] [--peer] [--profile release|debug]
#   Builds tvpd/tvpctl/tvp-vmm/tvp-boot-server (release) and the firmware, a tenant's
#   PKI and signed demo workload, an initramfs with them, busybox, iproute2, tpm2-tools,
#   openssl and the kernel modules KVM, TAP, bridge and veth need; boots it with a fresh
#   swtpm whose EK certificate swtpm_setup created; runs scripts/qemu-host/scenario.sh
#   inside (the tenant's boot server in its own network namespace there); prints each
#   check and exits 0 only if every check passed.
#   --keep: keep the work directory.  --shell: interactive shell instead of the scenario.
#   --peer: also put QEMU in the host image and boot the tenant's Linux (same kernel,
#   initramfs and command line) with `qemu-system-x86_64 -enable-kvm -M microvm` there,
#   after tvp's network boot of it: the benchmark's peer (+20 MB image, ~1-2 min).
#   --profile debug: use the debug build.  --no-build: use binaries already built
#   (the test suite's case: scripts/test.sh builds them first).
# Cache: $TVP_QEMU_CACHE (default target/qemu-host) keeps the kernel between runs.
# $TVP_GUEST_EXTRA_CMDLINE ("word word "): added to the tenant Linux's signed command
# line (experiments; the whole console is in the kept console.log as LINUX| lines).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$TVP_ROOT"

KEEP=0 SHELL_MODE=0 PROFILE=release BUILD=1 PEER=0
while (($#)); do
    case $1 in
    --keep) KEEP=1 ;;
    --shell) SHELL_MODE=1 ;;
    --profile) PROFILE=${2:-}; shift ;;
    --no-build) BUILD=0 ;;
    --peer) PEER=1 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
    esac
    shift
done
[[ $PROFILE == release || $PROFILE == debug ]] || die "--profile must be release or debug"

ensure_packages "${TVP_PACKAGES[@]}" qemu-system-x86 busybox-static cpio
ensure_rust
CACHE=${TVP_QEMU_CACHE:-$TVP_ROOT/target/qemu-host}
mkdir -p "$CACHE"

say "kernel: Debian's linux-image (apt-get download, unpacked)"
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -n1)
if [ -z "$KPKG" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -n1)
fi
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64's kernel package"
if [ ! -d "$CACHE/$KPKG" ]; then
    (cd "$CACHE" && rm -f ./*.deb && apt-get download "$KPKG" 2>/dev/null) || die "apt-get download $KPKG failed"
    dpkg-deb -x "$CACHE"/"$KPKG"_*.deb "$CACHE/$KPKG.tmp" && mv "$CACHE/$KPKG.tmp" "$CACHE/$KPKG"
    rm -f "$CACHE"/*.deb
fi
KDIR=$CACHE/$KPKG
VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-*)
KVER=${VMLINUZ##*/vmlinuz-}
ok "$KPKG"

if ((BUILD == 0)); then
    :
elif [ "$PROFILE" = release ]; then
    say "building tvp ($PROFILE)"
    cargo build --release --bins --quiet -p tvp-agent -p tvpctl -p tvp-vmm -p tvp-boot-server -p tvp-kms
else
    say "building tvp ($PROFILE)"
    cargo build --bins --quiet -p tvp-agent -p tvpctl -p tvp-vmm -p tvp-boot-server -p tvp-kms
fi
REL=$TVP_ROOT/target/$PROFILE
for b in tvpd tvpctl tvp-vmm tvp-boot-server; do [ -x "$REL/$b" ] || die "$REL/$b not built"; done

if ((KEEP)); then W=$(mktemp -d /tmp/tvp-qemu.XXXXXX); else make_tmpdir W; fi
ROOT=$W/initramfs
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,run,etc,var/lib,lib/modules,opt/tvp,ca}
ln -s /run "$ROOT/var/run"

# copy_bin FILE...: a binary and its shared-library closure, at the same paths.
# copy_bin FILE [DEST]: a binary (stripped) and its shared-library closure.
copy_bin() {
    local f=$1 dest=${2:-$1} lib
    install -D -m 0755 "$f" "$ROOT$dest"
    strip --strip-debug "$ROOT$dest" 2>/dev/null || true
    for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
        if [ ! -e "$ROOT$lib" ]; then
            install -D -m 0755 "$lib" "$ROOT$lib"
            strip --strip-debug "$ROOT$lib" 2>/dev/null || true
        fi
    done
}

say "initramfs"
install -m 0755 /bin/busybox "$ROOT/bin/busybox"
for app in sh mount umount mkdir cat echo ls sleep insmod poweroff grep sed head tail od \
    tr cut wc seq kill ps test printf rm cp mv dd chmod sync uname date xargs awk sha256sum timeout base64; do
    ln -sf busybox "$ROOT/bin/$app"
done
for b in tvpd tvpctl tvp-vmm tvp-boot-server tvp-kms; do copy_bin "$REL/$b" "/usr/local/bin/$b"; done
# iproute2's ip (network namespaces, veth, bridges; busybox's ip has no netns).
copy_bin "$(command -v ip)" /usr/bin/ip
copy_bin /usr/bin/tpm2
copy_bin /usr/bin/openssl
# swtpm: the tenant Linux VM's own TPM ("vtpm": true), one per VM, started by tvpd.
copy_bin "$(command -v swtpm)" /usr/bin/swtpm
# tpm2-tools: the scenario's independent checks, and the forging attempt its IMA check
# must catch (tpm2_pcrreset); /usr/bin/tpm2 is left out of the host's IMA allowlist.
for t in tpm2_pcrread tpm2_checkquote tpm2_getcap tpm2_nvread tpm2_makecredential tpm2_pcrreset; do ln -sf tpm2 "$ROOT/usr/bin/$t"; done
copy_bin /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0
for m in virt/lib/irqbypass.ko drivers/crypto/ccp/ccp.ko arch/x86/kvm/kvm.ko arch/x86/kvm/kvm-amd.ko drivers/net/tun.ko \
    net/llc/llc.ko net/802/stp.ko net/bridge/bridge.ko drivers/net/veth.ko; do
    install -m 0644 "$KDIR/lib/modules/$KVER/kernel/$m" "$ROOT/lib/modules/"
done
# The host TPM's state and EK certificate, made before the image: swtpm_setup creates
# swtpm's local CA on first use on a machine, and the image carries that CA for the
# scenario's ek-certificate-chains-to-manufacturer-ca check.
mkdir -p "$W/tpm"
swtpm_setup --tpm2 --tpmstate "$W/tpm" --createek --create-ek-cert --create-platform-cert \
    --lock-nvram --pcr-banks sha256 --overwrite >"$W/swtpm_setup.log" 2>&1 || die "swtpm_setup failed"
install -m 0644 /var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem /var/lib/swtpm-localca/issuercert.pem "$ROOT/ca/" ||
    die "swtpm's local CA (/var/lib/swtpm-localca) is missing after swtpm_setup"
install -m 0755 scripts/qemu-host/scenario.sh "$ROOT/opt/tvp/scenario.sh"
# The measured VMs' firmware (reproducible build), and the tenant's side: PKI (CA,
# boot server certificate, workload signing key) and the signed demo workload.
FW=$(scripts/build-firmware.sh | tail -n1 | awk '{print $3}')
install -m 0644 "$FW" "$ROOT/opt/tvp/firmware.elf"
scripts/tenant-pki.sh "$ROOT/opt/tvp/tenant" boot.tenant.example
ELF=$(scripts/build-test-workload.sh "$W/wl")
# The tenant's encrypted disk for its Linux VM: a key-management key pair (the tenant's
# tvp-kms runs inside the host, as it would beside the boot server), 1 MiB (16 MiB with
# --peer: the benchmark times reading it) whose first sector starts with a random
# marker, encrypted to that key into tvpd's image_dir.
"$REL/tvpctl" image keygen "$ROOT/opt/tvp/tenant/kms" >/dev/null
DISK_MARKER="tvp-disk-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
echo "$DISK_MARKER" >"$ROOT/opt/tvp/tenant/disk-marker"
DISK_BYTES=$(((PEER ? 16 : 1) * 1024 * 1024))
{ printf '%s\n' "$DISK_MARKER"; head -c $((DISK_BYTES - ${#DISK_MARKER} - 1)) /dev/urandom; } >"$W/disk.plain"
mkdir -p "$ROOT/var/lib/tvp/images"
"$REL/tvpctl" image encrypt --kms-pub "$ROOT/opt/tvp/tenant/kms.pub" --chunk-size 65536 \
    "$W/disk.plain" "$ROOT/var/lib/tvp/images/tenant-disk.img" >/dev/null
"$REL/tvp-boot-server" sign-workload --elf "$ELF" --key "$ROOT/opt/tvp/tenant/workload.key" \
    --cert "$ROOT/opt/tvp/tenant/workload.pem" --out "$ROOT/opt/tvp/tenant/hello.signed" >/dev/null
# A real Linux as a tenant workload: this host's own Debian kernel, a busybox initramfs
# (scripts/qemu-host/guest-init.sh as /init, the virtio modules) and a command line
# naming the VM's address and the peer to reach (the boot server's), signed as one
# bundle by the tenant.
GROOT=$W/guest-initramfs
mkdir -p "$GROOT"/{bin,proc,sys,dev,tmp,lib/modules}
install -m 0755 /bin/busybox "$GROOT/bin/busybox"
for app in sh mount cat echo grep sed cut tr tail head dd sleep insmod ip ping poweroff base64 sha256sum wc; do
    ln -sf busybox "$GROOT/bin/$app"
done
# tpm2-tools in the guest: the tenant's own tools on the VM's own TPM (/dev/tpmrm0).
ROOT=$GROOT copy_bin /usr/bin/tpm2 /bin/tpm2
ROOT=$GROOT copy_bin /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0
for t in tpm2_pcrread tpm2_createprimary tpm2_quote tpm2_nvread tpm2_readpublic; do ln -sf tpm2 "$GROOT/bin/$t"; done
for m in drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko drivers/virtio/virtio_mmio.ko net/core/failover.ko \
    drivers/net/net_failover.ko drivers/net/virtio_net.ko drivers/block/virtio_blk.ko; do
    install -m 0644 "$KDIR/lib/modules/$KVER/kernel/$m" "$GROOT/lib/modules/"
done
install -m 0755 scripts/qemu-host/guest-init.sh "$GROOT/init"
(cd "$GROOT" && find . | cpio -o -H newc --quiet | gzip -9 >"$W/guest-initrd.gz")
ok "tenant's Linux: initramfs $(du -h "$W/guest-initrd.gz" | cut -f1) (busybox, tpm2-tools, virtio modules)"
# pci=off: the platform has no PCI (Firecracker passes it too); without it the kernel
# probes 256 buses' configuration space through ports 0xcf8/0xcfc, two VM exits per
# read (about 11 s of this emulated host's time, measured without NPT).
# tvp.nonce: the qualifying data the guest's vTPM quote must carry (the tenant's,
# signed into the bundle; fresh with every image).
VTPM_NONCE=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
echo "$VTPM_NONCE" >"$ROOT/opt/tvp/tenant/vtpm-nonce"
GCMDLINE="console=ttyS0 panic=-1 pci=off ${TVP_GUEST_EXTRA_CMDLINE:-}tvp.vip=10.0.0.2/24 tvp.peer=10.0.0.1 tvp.nonce=$VTPM_NONCE"
"$REL/tvp-boot-server" sign-workload --kernel "$VMLINUZ" --initrd "$W/guest-initrd.gz" \
    --cmdline "$GCMDLINE" \
    --key "$ROOT/opt/tvp/tenant/workload.key" --cert "$ROOT/opt/tvp/tenant/workload.pem" \
    --out "$ROOT/opt/tvp/tenant/linux.signed" >/dev/null
# The kernel alone (no initramfs), signed as a bundle of its own: the scenario times
# its delivery through the tunnel (issue #18's measure: the 8 MB kernel in <= 2 s).
"$REL/tvp-boot-server" sign-workload --kernel "$VMLINUZ" --cmdline "console=ttyS0 panic=-1 pci=off" \
    --key "$ROOT/opt/tvp/tenant/workload.key" --cert "$ROOT/opt/tvp/tenant/workload.pem" \
    --out "$ROOT/opt/tvp/tenant/kernel.signed" >/dev/null
if ((PEER)); then
    # The benchmark's peer: QEMU (KVM, microvm machine, qboot) booting the same kernel,
    # initramfs and command line directly inside the host (scenario.sh).
    copy_bin "$(command -v qemu-system-x86_64)" /usr/bin/qemu-system-x86_64
    install -D -m 0644 /usr/share/qemu/bios-microvm.bin "$ROOT/usr/share/qemu/bios-microvm.bin"
    install -D -m 0644 "$VMLINUZ" "$ROOT/opt/tvp/peer/vmlinuz"
    install -m 0644 "$W/guest-initrd.gz" "$ROOT/opt/tvp/peer/initrd.gz"
    echo "$GCMDLINE" >"$ROOT/opt/tvp/peer/cmdline"
fi
# The host's IMA policy (docs/host-hardening.md): every executable, library mapping
# and kernel module, loaded by /init before anything else runs, modules included.
install -D -m 0644 scripts/qemu-host/ima-policy "$ROOT/etc/ima/ima-policy"
cat >"$ROOT/init" <<INIT
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/local/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t securityfs securityfs /sys/kernel/security
# One open of the policy file (it is committed on close, once), one write per rule.
while read -r rule; do echo "\$rule"; done </etc/ima/ima-policy >/sys/kernel/security/ima/policy || echo "TVP-IMA loading the IMA policy failed"
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
for m in irqbypass ccp kvm kvm-amd tun llc stp bridge veth; do insmod /lib/modules/\$m.ko || echo "insmod \$m failed"; done
if [ "$SHELL_MODE" = 1 ]; then exec sh; fi
sh /opt/tvp/scenario.sh
echo TVP-SCENARIO-END
sync; poweroff -f
INIT
chmod 0755 "$ROOT/init"
# The host's IMA allowlist, made at image-build time: the digest of every file in the
# image that may run (executables, shared libraries, kernel modules), except
# tpm2-tools, which a VM host has no business running (docs/threat-model.md).
say "IMA allowlist"
(cd "$ROOT" && find . -type f \( -perm -u+x -o -name '*.so*' -o -name '*.ko' \) ! -path ./usr/bin/tpm2 | sort |
    while read -r f; do printf '%s %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "${f#.}"; done |
    awk 'BEGIN { printf "{\"entries\": [" } { printf "%s\n  {\"digest\": \"sha256:%s\", \"path\": \"%s\"}", (NR > 1 ? "," : ""), $1, $2 }
         END { print "\n]}" }') >"$W/ima-allowlist.json"
install -m 0644 "$W/ima-allowlist.json" "$ROOT/opt/tvp/ima-allowlist.json"
ok "$(grep -c '"digest"' "$W/ima-allowlist.json") files allowed; /usr/bin/tpm2 is not"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1 >"$W/initrd.gz")
ok "initramfs $(du -h "$W/initrd.gz" | cut -f1)"

say "host TPM: swtpm (its state made above)"
swtpm socket --tpm2 --tpmstate "dir=$W/tpm" --ctrl "type=unixio,path=$W/tpm/ctrl.sock" \
    --flags startup-clear >"$W/swtpm.log" 2>&1 &
track_pid $!
for _ in $(seq 100); do [ -S "$W/tpm/ctrl.sock" ] && break; sleep 0.05; done

say "booting the QEMU host (TCG, SVM exposed; serial console below)"
started=$(date +%s.%N)
# The CPU: qemu64 with SVM (the nested /dev/kvm) plus what TCG emulates of AES-NI,
# PCLMULQDQ, SSE4, AVX2, MOVBE and BMI, so TLS on both ends of the network boot (ring in
# the boot server and in the guest firmware) takes its hardware paths instead of its
# portable C, here emulated instruction by instruction: the 8.2 MB kernel's transfer
# took 93 s without them, 6 s with them. Two vCPUs (multi-threaded TCG, one host core
# each): the boot server and the guest's vCPU no longer share one emulated CPU (4.4 s).
# NPT (nested paging, which TCG emulates): without it the host's KVM runs its guests
# on shadow page tables, every guest page-table write and INVLPG a trap; the tenant's
# Linux then spent 12-16 s in its MP-table scan alone (early_memremap per 16 bytes of
# 64 KiB) and took 71 s from create to /init, 49 s with it.
QEMU=(qemu-system-x86_64 -accel tcg -cpu qemu64,+svm,+npt,+rdrand,+aes,+pclmulqdq,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+movbe,+bmi1,+bmi2,+adx -m 1024 -smp 2 -nographic -no-reboot
    -kernel "$VMLINUZ" -initrd "$W/initrd.gz" -append "console=ttyS0 quiet panic=-1 ima_hash=sha256 ima_template=ima-ng lockdown=integrity"
    -chardev "socket,id=chrtpm,path=$W/tpm/ctrl.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
    -device tpm-crb,tpmdev=tpm0)
if ((SHELL_MODE)); then "${QEMU[@]}"; exit 0; fi
set +e
timeout 1800 "${QEMU[@]}" </dev/null 2>&1 | tee "$W/console.log" | grep --line-buffered -E '^(TVP-|  )' >&2
set -e
elapsed=$(echo "$(date +%s.%N) - $started" | bc)
pass=$(grep -c '^TVP-CHECK .* PASS' "$W/console.log" || true)
failc=$(grep -c '^TVP-CHECK .* FAIL' "$W/console.log" || true)
grep -q '^TVP-SCENARIO-END' "$W/console.log" || { tail -40 "$W/console.log" >&2; die "the scenario did not finish"; }
say "QEMU host run: ${elapsed%.*} s, $pass checks passed, $failc failed"
((KEEP)) && echo "work directory kept: $W" >&2
[ "$failc" = 0 ] && [ "$pass" -gt 0 ]
