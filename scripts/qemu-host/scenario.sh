#!/bin/sh
# Runs inside the QEMU host (busybox sh). Each check prints one line:
#   TVP-CHECK <name> PASS|FAIL <detail>
check() { name=$1; shift; if "$@" >/tmp/check.out 2>&1; then echo "TVP-CHECK $name PASS"; else echo "TVP-CHECK $name FAIL $(tail -3 /tmp/check.out | tr '\n' ' ')"; fi; }
export TVP_SOCKET=/run/tvp/tvpd.sock
echo

# No transparent huge pages in this emulated host: with tvp-vmm's 2 MiB-aligned guest
# RAM (docs/vmm-boot.md) KVM maps guests with large nested pages, and under QEMU's TCG
# (emulated SVM) guests then triple-faulted now and then (2 of 5 runs, 2026-12-05; 0
# of 4 with THP off; never seen on this project's real KVM). An operator's knob too.
echo never > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
echo "  THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
check kvm-device test -c /dev/kvm
check tpm-resource-manager test -c /dev/tpmrm0

# The VMs' network: bridge br0 on the host for their TAPs; the tenant's boot server in
# a network namespace of its own ("tenant"), 10.0.0.1/24 on a veth whose peer is on br0.
# iproute2's ip by path: busybox sh would run its own ip applet, which has no netns.
IP=/usr/bin/ip
$IP link add br0 type bridge && $IP link set br0 up
$IP netns add tenant
$IP link add veth-h type veth peer name veth-t
$IP link set veth-t netns tenant
$IP link set veth-h master br0 up
$IP -n tenant link set lo up
$IP -n tenant addr add 10.0.0.1/24 dev veth-t
$IP -n tenant link set veth-t up
check tenant-netns-and-bridge sh -c "$IP -n tenant -4 addr show veth-t | grep -q 10.0.0.1/24"

mkdir -p /var/lib/tvp
TVPD_ARGS="--tcti device:/dev/tpmrm0 --state-dir /var/lib/tvp --log-level info --firmware /opt/tvp/firmware.elf \
    --platform-artefacts /usr/local/bin/tvp-vmm,/opt/tvp/firmware.elf --vmm-user 65534:65534 --vm-bridge br0"
tvpd $TVPD_ARGS --print-expected-pcrs >/tmp/platform.json 2>/dev/null
tvpd $TVPD_ARGS 2>/tmp/tvpd.log &
TVPD=$!
i=0; while [ $i -lt 300 ] && ! tvpctl host >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
check tvpd-provisioned-through-tpmrm0 tvpctl host
grep -E 'TPM ready|measured' /tmp/tvpd.log | sed 's/^/  /'

# The host's runtime integrity: /init loaded the IMA policy (measure every executable,
# executable mapping and module) before anything else ran; PCR 10 holds the list.
IMA=/sys/kernel/security/ima
echo "  kernel lockdown: $(cat /sys/kernel/security/lockdown 2>/dev/null || echo unavailable)"
echo "  IMA: $(cat $IMA/runtime_measurements_count 2>/dev/null) measurements, list $(wc -c <$IMA/binary_runtime_measurements 2>/dev/null) bytes; allowlist $(grep -c '"digest"' /opt/tvp/ima-allowlist.json) files"
check ima-measures-the-host sh -c "grep -q ' /usr/local/bin/tvpd\$' $IMA/ascii_runtime_measurements && grep -q 'kvm.ko\$' $IMA/ascii_runtime_measurements"

tvpctl --json host >/tmp/host.json
# EK certificate from NV, chained to swtpm's local CA (the "manufacturer").
sed -n 's/.*"ek_certificate_pem": "\(.*\)",$/\1/p' /tmp/host.json | sed 's/\\n/\n/g' >/tmp/ek-cert.pem
check ek-certificate-chains-to-manufacturer-ca openssl verify -CAfile /ca/swtpm-localca-rootca-cert.pem -untrusted /ca/issuercert.pem /tmp/ek-cert.pem
sed -n 's/.*"ak_public_pem": "\(.*\)",$/\1/p' /tmp/host.json | sed 's/\\n/\n/g' >/tmp/ak.pem

NONCE=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
check quote-through-tpmrm0 tvpctl quote --nonce "$NONCE" --pcrs 10,15,16,23 -o /tmp/evidence.json
check quote-verified-by-tvpctl tvpctl verify /tmp/evidence.json --nonce "$NONCE" --ak /tmp/ak.pem \
    --ima-allowlist /opt/tvp/ima-allowlist.json
# With PCRs 0-9 quoted too, the list's boot_aggregate is checked against them (the
# mailbox's evidence on an IMA host always has them).
tvpctl quote --nonce "$NONCE" --pcrs 0,1,2,3,4,5,6,7,8,9,10,15 -o /tmp/evidence-boot.json
tvpctl verify /tmp/evidence-boot.json --nonce "$NONCE" --ak /tmp/ak.pem --ima-allowlist /opt/tvp/ima-allowlist.json \
    >/tmp/verify-boot.out 2>&1
grep -E 'runtime|FAILED' /tmp/verify-boot.out | sed 's/^/  /'
check ima-boot-aggregate-is-pcrs-0-9 grep -q 'boot_aggregate = the quoted PCRs 0-9' /tmp/verify-boot.out
# (tpm2_checkquote runs at the end: tpm2-tools are not in this host's IMA allowlist.)
# The tenant: this host in its inventory (with the IMA allowlist made when the image
# was built), its management key and policy, a reservation; its boot server runs in
# the tenant namespace.
# --pin-boot-pcrs: the entry pins this boot's PCRs 0-9 (the chain that measured the
# kernel keeping the IMA list), so a kernel without IMA could not fake PCR 10.
check inventory-entry tvpctl inventory --expect /tmp/platform.json --ima-allowlist /opt/tvp/ima-allowlist.json \
    --pin-boot-pcrs -o /tmp/inventory.json
check ima-boot-pcrs-pinned grep -q '"boot_pcrs"' /tmp/inventory.json
openssl genpkey -algorithm ed25519 -out /tmp/tenant.key 2>/dev/null
openssl pkey -in /tmp/tenant.key -pubout -out /tmp/tenant.pem
POLICY='{"v": 1, "allowed_operations": ["pause", "resume", "power-off", "delete"], "reported_operations": ["*"], "on_tampering": "power-off"}'
echo "$POLICY" >/tmp/policy.json
# VIP, U, and what the tenant expects of the VM (docs/boot-server.md).
echo "10.0.0.2 U-qemu memory=64 vcpus=1 image=none disk=none management=tenant" >/tmp/reservations
T=/opt/tvp/tenant
# The tenant's boot server in its namespace: reservations $1, workload $2, its JSON
# lines and log to $3; its pid in BSPID once it listens (at most 10 s).
boot_server() {
    $IP netns exec tenant tvp-boot-server serve --listen 10.0.0.1:8443 --cert $T/server.pem --key $T/server.key \
        --ca $T/ca.pem --server-name boot.tenant.example --reservations "$1" \
        --inventory /tmp/inventory.json --firmware /opt/tvp/firmware.elf --workload "$2" \
        --management-key /tmp/tenant.pem --policy /tmp/policy.json --max-connections 1 \
        >"$3" 2>&1 &
    BSPID=$!
    i=0; while [ $i -lt 100 ] && ! grep -q listening "$3"; do sleep 0.1; i=$((i+1)); done
}
boot_server /tmp/reservations $T/hello.signed /tmp/boot-server.jsonl
BS=$BSPID
check boot-server-in-tenant-netns grep -q listening /tmp/boot-server.jsonl
# A measured VM on this host's own KVM: lease, PCR 23 through tpmrm0, network boot of
# the firmware over TAP and br0, TLS to the boot server, quote, workload, handover.
json_text() { awk '{printf "%s\\n", $0}' "$1"; }
cat >/tmp/vm.json <<VM
{"id": "qemu-vm", "vip": "10.0.0.2/24", "gateway": "10.0.0.1", "mac": "02:00:00:00:00:01", "auth_code": "U-qemu",
 "boot_server": "10.0.0.1:8443", "boot_server_name": "boot.tenant.example",
 "tenant_ca_pem": "$(json_text $T/ca.pem)", "memory_mib": 64, "attestation_deadline_secs": 300,
 "management_public_key": "$(json_text /tmp/tenant.pem)", "policy": $POLICY}
VM
started=$(date +%s)
tvpctl vm create /tmp/vm.json >/dev/null
i=0; state=queued
while [ $i -lt 3000 ]; do
    state=$(tvpctl --json vm show qemu-vm | sed -n 's/.*"state": "\([a-z]*\)".*/\1/p' | head -n1)
    case $state in destroyed|failed) break ;; esac
    sleep 0.1; i=$((i+1))
done
echo "  network boot: VM create -> end $(( $(date +%s) - started )) s"
tvpctl vm show qemu-vm | sed 's/^/  /'
sed 's/^/  console| /' /var/lib/tvp/vms/qemu-vm/console.log
sed 's/^/  boot-server| /' /tmp/boot-server.jsonl
check boot-server-delivered-workload grep -q '"event":"delivered"' /tmp/boot-server.jsonl
check workload-ran-after-handover grep -q "tvp-workload: hello from the tenant workload" /var/lib/tvp/vms/qemu-vm/console.log
digest=$(sed -n 's/.*"workload_digest":"\([0-9a-f]*\)".*/\1/p' /tmp/boot-server.jsonl)
check handover-digest-is-the-delivered-workload sh -c "test -n '$digest' && tvpctl --json vm show qemu-vm | grep -q '\"handover_digest\": \"$digest\"'"
check measured-vm-attested-and-handed-over test "$state" = destroyed
# The boot server replayed this host's IMA list against the quoted PCR 10 and found
# every measurement in the inventory's allowlist.
check ima-clean-host-attests sh -c "grep '\"event\":\"delivered\"' /tmp/boot-server.jsonl | grep '\"runtime_integrity\":\"ima\"' | grep 'boot_aggregate = the quoted PCRs 0-9' | grep -q '10 of PCRs 0-9 pinned and equal'"
tvpctl expected-pcrs --firmware /opt/tvp/firmware.elf --config-page /var/lib/tvp/vms/qemu-vm/config.page \
    --management-key /tmp/tenant.pem --policy /tmp/policy.json 2>/dev/null >/tmp/vm-exp.json
want=$(grep -o '[0-9a-f]\{64\}' /tmp/vm-exp.json)
got=$(tvpctl --json vm show qemu-vm | sed -n 's/.*"pcr23": "\([0-9a-f]*\)".*/\1/p')
check measured-vm-pcr23-as-computed test -n "$want" -a "$want" = "$got"
grep -q "quote for the lease holder" /tmp/tvpd.log
check measured-vm-quoted-through-tpmrm0 test $? -eq 0
# The evidence's size with the IMA list and PCRs 0-10 (the mailbox carries 61408 bytes).
grep "quote for the lease holder" /tmp/tvpd.log | grep -o 'bytes[=:" ]*[0-9]*' | head -1 | sed 's/^/  mailbox evidence /'
sed -n 's/.*"runtime_integrity_detail":"\([^"]*\)".*/  boot-server| runtime: \1/p' /tmp/boot-server.jsonl
# The audit trail anchored in NV through tpmrm0 (tvpd keeps a second, raw connection).
check audit-anchor-through-tpmrm0 sh -c "tvpctl audit anchor --nonce $NONCE -o /tmp/anchor.json && tvpctl audit verify /var/lib/tvp/audit.log --anchor /tmp/anchor.json --ak /tmp/ak.pem --nonce $NONCE"
# The kernel alone through the tunnel (issue #18: the 8 MB kernel delivered in <= 2 s,
# so the Linux scenarios are bounded by Linux, not by the transfer): the delivery phase
# (tvpd's phases: the boot server's verdict on the evidence, the transfer, the
# signature check, the load, the handover) and the firmware's own transfer figures.
# Once handed over (state running) the tenant deletes it: a kernel without an
# initramfs has nothing to run.
echo "10.0.0.2 U-kernel memory=256 vcpus=1 image=none disk=none management=tenant" >/tmp/reservations-kernel
boot_server /tmp/reservations-kernel $T/kernel.signed /tmp/boot-server-kernel.jsonl
BSK=$BSPID
sed 's/"qemu-vm"/"kernel-vm"/; s/"U-qemu"/"U-kernel"/; s/"memory_mib": 64/"memory_mib": 256/' /tmp/vm.json >/tmp/kernel-vm.json
KCON=/var/lib/tvp/vms/kernel-vm/console.log
tvpctl vm create /tmp/kernel-vm.json >/dev/null
t0=$(ms)
while [ $(( $(ms) - t0 )) -lt 300000 ]; do
    state=$(tvpctl --json vm show kernel-vm | sed -n 's/.*"state": "\([a-z-]*\)".*/\1/p' | head -n1)
    case $state in running|destroyed|failed) break ;; esac
    sleep 0.2
done
grep -E "^workload: ([0-9]+ bytes|transfer|signature check|loaded)" $KCON | sed 's/^/  kernel-vm console| /'
# The delivery phase's start and end from the VM view's boot log (ISO times, ms).
KD_MS=$(tvpctl --json vm show kernel-vm | tr -d ' ,"' | awk '
    function ms(t) { sub(/^[^T]*T/, "", t); sub(/Z$/, "", t); split(t, a, ":")
                     for (i = 1; i <= 3; i++) sub(/^0+/, "", a[i])  # busybox awk: no octal
                     return (a[1] * 3600 + a[2] * 60 + a[3]) * 1000 }
    /^\{/ { p = ""; s = ""; e = "" }
    /^phase:/ { p = substr($0, 7) }
    /^started_at:/ { s = substr($0, 12) }
    /^ended_at:/ { e = substr($0, 10) }
    /^\}/ { if (p == "delivery" && s != "" && e != "" && e != "null") printf "%d", ms(e) - ms(s) }')
[ "$state" = running ] || KD_MS=
KBYTES=$(sed -n 's/^workload: \([0-9]*\) bytes received in \([0-9]*\) ms.*/\1 \2/p' $KCON | head -n1)
echo "  8 MB kernel alone: ${KBYTES%% *} bytes, transfer ${KBYTES##* } ms (firmware TSC), delivery phase ${KD_MS:-?} ms (goal <= 2000 ms); state $state"
[ "$state" = running ] || {
    tvpctl vm show kernel-vm
    tail -15 $KCON
    cat /tmp/boot-server-kernel.jsonl
} 2>&1 | sed 's/^/  kernel-vm| /'
check kernel-alone-delivered sh -c "grep -q '\"event\":\"delivered\"' /tmp/boot-server-kernel.jsonl && test '$state' = running"
if [ "$state" = running ]; then
    INCARNATION=$(sed -n 's/.*"incarnation":"\([0-9a-f]*\)".*/\1/p' /tmp/boot-server-kernel.jsonl | head -n1)
    TOKEN=$(tvpctl authorize --key /tmp/tenant.key --host /tmp/host.json --incarnation "$INCARNATION" \
        --vm kernel-vm --op delete)
    tvpctl vm delete kernel-vm --token "$TOKEN" >/dev/null
fi
kill $BSK 2>/dev/null
i=0; while kill -0 $BSK 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -9 $BSK 2>/dev/null; wait $BSK 2>/dev/null

# A real Linux (this host's own kernel, a busybox initramfs and a command line, signed
# by the tenant as one bundle) network-booted by the firmware with the 64-bit boot
# protocol in a 2-vCPU VM: its /init prints what it found (TVP-GUEST lines), reaches
# the boot server's address over virtio-net and powers off through ACPI.
# Its encrypted disk: the tenant's tvp-kms releases the key only to a VM with the
# tenant's CA, management key and policy and this firmware, on this inventoried host
# (docs/kms.md); the reservation names the disk by its header digest.
mkdir -p /run/tvp/kms
cat >/tmp/release.toml <<REL
[[image]]
image_digest = "any"
tenant_ca_sha256 = ["$(tvp-kms --ca-digest $T/ca.pem)"]
management_keys = ["$(tvp-kms --key-id /tmp/tenant.pem)"]
policy_digests = ["$(tvp-kms --policy-digest /tmp/policy.json)"]
firmware_sha256 = ["$(sha256sum /opt/tvp/firmware.elf | cut -d' ' -f1)"]
REL
tvp-kms --key $T/kms.key --inventory /tmp/inventory.json --release-policy /tmp/release.toml \
    --socket /run/tvp/kms/tenant.sock 2>/tmp/kms.log &
KMS=$!
DISK_DIGEST=$(tvpctl --json image inspect /var/lib/tvp/images/tenant-disk.img | sed -n 's/.*"header_digest": *"\([0-9a-f]*\)".*/\1/p')
echo "  tenant disk: header $DISK_DIGEST, marker $(cat $T/disk-marker)"
echo "10.0.0.2 U-linux memory=256 vcpus=2 image=none disk=$DISK_DIGEST management=tenant tpm=yes" >/tmp/reservations-linux
boot_server /tmp/reservations-linux $T/linux.signed /tmp/boot-server-linux.jsonl
BSL=$BSPID
# 256 MiB: the kernel's init_size is ~64 MiB, the staged bundle ~10 MB and its unpacked
# initramfs. Its 10 MB take seconds through the firmware's TLS under this software
# emulation (minutes on a slower machine or with the emulated CPU's AES-NI off):
# generous deadlines.
sed 's/"qemu-vm"/"linux-vm"/; s/"U-qemu"/"U-linux"/;
     s|"memory_mib": 64|"memory_mib": 256, "vcpus": 2, "vtpm": true, "disk": {"path": "tenant-disk.img", "kms_socket": "/run/tvp/kms/tenant.sock"}|;
     s/"attestation_deadline_secs": 300/"attestation_deadline_secs": 1500, "phase_deadlines_secs": {"delivery": 1500}/' \
    /tmp/vm.json >/tmp/linux-vm.json
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
LCON=/var/lib/tvp/vms/linux-vm/console.log
t0=$(ms)
tvp_t0=$t0
tvpctl vm create /tmp/linux-vm.json >/dev/null
# Phase marks, seen by polling every 50 ms: the kernel's banner and /init's first line.
# At most 10 minutes (the transfer alone took minutes with the emulated CPU's AES-NI
# off). The console is looked at every 0.1 s, tvpd every second (tvpctl is not free
# under this emulation); a progress line every 30 s.
t_banner= t_init= state= n=0
while [ $(( $(ms) - t0 )) -lt 600000 ]; do
    [ -z "$t_banner" ] && grep -q "Linux version" $LCON 2>/dev/null && t_banner=$(ms)
    [ -z "$t_init" ] && grep -q "^TVP-GUEST userspace" $LCON 2>/dev/null && t_init=$(ms)
    if [ $((n % 10)) = 0 ]; then
        state=$(tvpctl --json vm show linux-vm | sed -n 's/.*"state": "\([a-z-]*\)".*/\1/p' | head -n1)
        case $state in destroyed|failed) break ;; esac
    fi
    [ $((n % 300)) = 299 ] && echo "  linux-vm after $(( ($(ms) - t0) / 1000 )) s: $state, console: $(tail -n1 $LCON 2>/dev/null | cut -c1-100)"
    sleep 0.1; n=$((n+1))
done
t_end=$(ms)
tvpctl vm show linux-vm | sed 's/^/  /'
grep -E "^workload: |^tpm: quoted|Linux version|Command line|smpboot|Brought up|virtio|ACPI: (Early|SSDT|DSDT|TPM2)|tpm|clocksource|Kernel panic|BUG|WARNING|Oops|TVP-GUEST|BOOT FAILED" $LCON | head -60 | sed 's/^/  console| /'
grep -q "^TVP-GUEST network-reached" $LCON || tail -40 $LCON | sed 's/^/  console-tail| /'
# The whole console, for the host's console log only (qemu-host.sh --keep keeps it).
sed 's/^/LINUX| /' $LCON
sed -n 's/.*"event":"\([a-z]*\)".*"handshake_millis":\([0-9]*\).*"millis":\([0-9]*\).*/  boot-server| \1: handshake \2 ms, session (incl. the bundle'"'"'s transfer) \3 ms/p' /tmp/boot-server-linux.jsonl
since() { [ -n "$1" ] && echo "$(( $1 - t0 )) ms" || echo "never"; }
echo "  Linux network boot: VM create -> kernel banner $(since $t_banner), -> /init $(since $t_init), -> VM end $(since $t_end)"
# The phases: tvpd's (from the VM view's start times), then the kernel's (banner and
# /init seen on the console; the banner appears when the serial console registers,
# after the kernel's decompression and early setup).
tvpctl --json vm show linux-vm | grep -E '"phase"|"started_at"' | tr -d ' ,"' | awk 'ORS=NR%2?" ":"\n"' |
    sed -n 's/^phase:\([a-z-]*\) started_at:.*T\([0-9]*\):\([0-9]*\):\([0-9.]*\)Z$/\1 \2 \3 \4/p' |
    awk -v b="$t_banner" -v i="$t_init" -v t0="$t0" '
        { t = ($2 * 3600 + $3 * 60 + $4) * 1000; if (NR == 1) q = t; if (NR > 1) printf "%s%s %d ms", (NR > 2 ? ", " : ""), p, t - pt; p = $1; pt = t }
        END { run = pt - q; printf "; create -> running %d ms", run;
              if (b != "") printf "; running -> kernel banner %d ms", b - t0 - run;
              if (i != "" && b != "") printf ", banner -> /init %d ms", i - b; print "" }' | sed 's/^/  Linux phases: /'
check linux-kernel-booted-by-the-firmware grep -q "Linux version" $LCON
check linux-userspace grep -q "^TVP-GUEST userspace" $LCON
check linux-two-vcpus grep -q "^TVP-GUEST cpus-online 2 " $LCON
check linux-network grep -q "^TVP-GUEST network-reached 10.0.0.1" $LCON
check linux-encrypted-disk grep -q "^TVP-GUEST disk-marker $(cat $T/disk-marker) " $LCON
check linux-vtpm grep -q "^TVP-GUEST tpm version=2 pcr0=[0-9A-Fa-f]\{64\}" $LCON
check linux-vtpm-event-log grep -q "^TVP-GUEST tpm-event-log bytes=[1-9][0-9]* spec-id=[1-9]" $LCON
grep -q "^TVP-GUEST tpm version=2" $LCON || {
    grep -h "vTPM" /var/lib/tvp/vms/linux-vm/vmm.log
    cat /var/lib/tvp/vms/linux-vm/swtpm.log
    grep "vTPM\|swtpm" /tmp/tvpd.log | tail -5
} 2>&1 | sed 's/^/  vtpm| /'
# The guest's own tpm2-tools quote, verified outside with tools nobody here wrote:
# tvpctl fetches and verifies the VM TPM's certified identity against the pinned host
# AK and exports it; tpm2_checkquote checks the guest's quote with the certified AK
# and the tenant's nonce; the AK is the one the boot server read from the attested
# page; the EK certificate in the guest's NV is the certified one.
Q=$(sed -n 's/^TVP-GUEST tpm-quote \([^ ]*\) \([^ ]*\).*/\1 \2/p' $LCON | head -n1 | tr -d '\r')
echo "${Q%% *}" | base64 -d >/tmp/vq.msg 2>/dev/null
echo "${Q##* }" | base64 -d >/tmp/vq.sig 2>/dev/null
check linux-vtpm-identity sh -c "tvpctl --json vm vtpm-identity linux-vm --out /tmp/vtpm --ak /tmp/ak.pem >/tmp/vtpm.json"
check linux-vtpm-tpm2-pcrread grep -q "^TVP-GUEST tpm2_pcrread  *sha256: 0 : 0x[0-9A-F]\{64\} 1 : 0x[0-9A-F]\{64\} 4 : 0x[0-9A-F]\{64\}" $LCON
check linux-vtpm-guest-quote tpm2_checkquote -u /tmp/vtpm/ak.pub.pem -m /tmp/vq.msg -s /tmp/vq.sig -g sha256 -q "$(cat $T/vtpm-nonce)"
AKN=$(sed -n 's/.*"ak_name": *"\([0-9a-f]*\)".*/\1/p' /tmp/vtpm.json | head -n1)
check linux-vtpm-ak-in-attested-page sh -c "test -n '$AKN' && grep -q '\"vtpm_ak_name\":\"$AKN\"' /tmp/boot-server-linux.jsonl"
# Deep evidence: the firmware's quote of the VM's TPM (PCRs 0 and 1, this session's
# nonce and tunnel) verified by the boot server with the host's evidence.
check linux-vtpm-deep-evidence sh -c "grep '\"event\":\"delivered\"' /tmp/boot-server-linux.jsonl | grep -q '\"vtpm_quote\":\"verified\"'"
EKC=$(openssl x509 -in /tmp/vtpm/ek.pem -outform der 2>/dev/null | sha256sum | cut -d' ' -f1)
check linux-vtpm-ek-certificate-in-nv grep -q "^TVP-GUEST tpm-ek-cert sha256=$EKC" $LCON
grep -E "^TVP-GUEST tpm-(quote-failed|ek-cert)" $LCON | sed 's/^/  vtpm| /'
check linux-poweroff sh -c "test '$state' = destroyed && tvpctl --json vm show linux-vm | grep -q '\"reason\": \"powered-off\"'"
# Both gone before the next boot server binds the same address (at most 10 s each,
# then killed).
kill $BSL $KMS 2>/dev/null
for p in $BSL $KMS; do
    i=0; while kill -0 $p 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    kill -9 $p 2>/dev/null
done
wait $BSL $KMS 2>/dev/null
grep -q '"release"\|released' /tmp/kms.log 2>/dev/null || tail -3 /tmp/kms.log | sed 's/^/  kms| /'
# The whole disk read sequentially by the guest (each chunk authenticated and decrypted
# in tvp-vmm as it is read).
disk_rate() { awk '/^TVP-GUEST disk-read/ { s = $7 - $6; if (s <= 0) s = 0.01; printf "%.1f MB/s (%d bytes in %.2f s)", $3 / s / 1e6, $3, s }' "$1"; }
echo "  disk read in the tvp guest (virtio-blk, decrypted in tvp-vmm): $(disk_rate $LCON)"
if [ "$state" != destroyed ] && [ "$state" != failed ]; then
    # Still running: the tenant's delete, bound to this host's AK name and the
    # incarnation the boot server attested, frees the VIP for the next VM.
    INCARNATION=$(sed -n 's/.*"incarnation":"\([0-9a-f]*\)".*/\1/p' /tmp/boot-server-linux.jsonl | head -n1)
    TOKEN=$(tvpctl authorize --key /tmp/tenant.key --host /tmp/host.json --incarnation "$INCARNATION" \
        --vm linux-vm --op delete)
    tvpctl vm delete linux-vm --token "$TOKEN" >/dev/null
fi

# The peer (scripts/qemu-host.sh --peer): the same kernel, initramfs and command line
# booted directly by QEMU with KVM in this host (no network boot, no attestation), the
# same 2 vCPUs and 256 MiB: start -> banner -> /init.
if [ -x /usr/bin/qemu-system-x86_64 ]; then
    P=/opt/tvp/peer
    rm -f /tmp/peer.log
    # The disk's peers: tvpctl decrypting the same image here, and the same guest
    # reading the plaintext through QEMU's virtio-blk (no decryption).
    d0=$(ms)
    tvpctl image decrypt /var/lib/tvp/images/tenant-disk.img /tmp/disk.plain --kms-key $T/kms.key >/dev/null
    d1=$(ms)
    echo "  disk peer: tvpctl image decrypt of the same image in this host: $(awk -v b=$(wc -c </tmp/disk.plain) -v ms=$((d1 - d0)) 'BEGIN { if (ms < 1) ms = 1; printf "%.1f MB/s (%d bytes in %d ms)", b / ms / 1000, b, ms }')"
    t0=$(ms)
    qemu-system-x86_64 -M microvm,acpi=on -enable-kvm -smp 2 -m 256 -L /usr/share/qemu -nodefaults \
        -no-user-config -display none -serial file:/tmp/peer.log -no-reboot \
        -drive file=/tmp/disk.plain,if=none,id=disk,format=raw,readonly=on -device virtio-blk-device,drive=disk \
        -kernel $P/vmlinuz -initrd $P/initrd.gz -append "$(cat $P/cmdline)" 2>/tmp/peer.err &
    QP=$!
    p_banner= p_init= p_end=
    while [ $(( $(ms) - t0 )) -lt 600000 ] && kill -0 $QP 2>/dev/null; do
        [ -z "$p_banner" ] && grep -q "Linux version" /tmp/peer.log 2>/dev/null && p_banner=$(ms)
        [ -z "$p_init" ] && grep -q "^TVP-GUEST userspace" /tmp/peer.log 2>/dev/null && p_init=$(ms)
        grep -q "^TVP-GUEST poweroff" /tmp/peer.log 2>/dev/null && break
        sleep 0.1
    done
    p_end=$(ms)
    kill $QP 2>/dev/null; wait $QP 2>/dev/null
    grep -E "^TVP-GUEST (userspace|cpus|disk)" /tmp/peer.log | sed 's/^/  peer console| /'
    echo "  disk peer: the same guest reading the plaintext through QEMU's virtio-blk: $(disk_rate /tmp/peer.log)"
    rm -f /tmp/disk.plain
    [ -n "$p_init" ] || { tail -20 /tmp/peer.log; cat /tmp/peer.err; } | sed 's/^/  peer-tail| /'
    since() { [ -n "$1" ] && echo "$(( $1 - t0 )) ms" || echo "never"; }
    echo "  peer (QEMU -enable-kvm -M microvm, same kernel, initramfs, command line, 2 vCPUs, 256 MiB): start -> kernel banner $(since $p_banner), -> /init $(since $p_init), -> /init's poweroff line $(since $p_end)"
    [ -n "$p_init" ] && [ -n "$t_init" ] && echo "  create -> /init: tvp (network boot, attested) $(( t_init - tvp_t0 )) ms, QEMU direct $(( p_init - t0 )) ms, ratio $(awk "BEGIN { printf \"%.2f\", ($t_init - $tvp_t0) / ($p_init - $t0) }")"
    sed 's/^/PEER| /' /tmp/peer.log
fi

# Host root forges attestation through the TPM directly (issue 15, attack 3): PCR 16 is
# resettable at locality 0 and the AK has no authorization, so root could reset and
# extend PCRs 16/23 and quote for a boot server of its own choosing. The first step is
# enough to be seen: tpm2-tools run, IMA measures /usr/bin/tpm2 into PCR 10, and the
# next VM's attestation is refused by the tenant's boot server, naming that entry.
tpm2_pcrreset -T device:/dev/tpmrm0 16 && echo "  root ran tpm2_pcrreset 16"
grep ' /usr/bin/tpm2$' $IMA/ascii_runtime_measurements | sed 's/^/  IMA| /'
echo "10.0.0.2 U-rogue memory=64 vcpus=1 image=none disk=none management=tenant" >/tmp/reservations-rogue
boot_server /tmp/reservations-rogue $T/hello.signed /tmp/boot-server-rogue.jsonl
grep -q listening /tmp/boot-server-rogue.jsonl || { echo "  rogue boot server not listening:"; sed 's/^/  boot-server| /' /tmp/boot-server-rogue.jsonl; }
sed 's/"qemu-vm"/"after-rogue-vm"/; s/"U-qemu"/"U-rogue"/' /tmp/vm.json >/tmp/rogue-vm.json
# Bounded by the clock (each tvpctl call takes a while under this emulation), and the
# create itself too: a stuck tvpd shows here instead of stalling the whole run.
timeout 120 tvpctl vm create /tmp/rogue-vm.json >/dev/null || { echo "  rogue VM: tvpctl vm create failed or timed out"; tail -20 /tmp/tvpd.log | sed 's/^/  tvpd| /'; }
t0=$(ms)
while [ $(( $(ms) - t0 )) -lt 400000 ]; do
    state=$(timeout 30 tvpctl --json vm show after-rogue-vm | sed -n 's/.*"state": "\([a-z]*\)".*/\1/p' | head -n1)
    case $state in destroyed|failed) break ;; esac
    sleep 0.2
done
echo "  after-rogue-vm: ${state:-unknown} after $(( $(ms) - t0 )) ms"
grep -v listening /tmp/boot-server-rogue.jsonl | sed 's/^/  boot-server| /'
check ima-rogue-tpm-use-refused sh -c "grep -q '\"reason\":\"attestation-rejected:ima:not-allowed\"' /tmp/boot-server-rogue.jsonl &&
    grep -q 'ima:not-allowed /usr/bin/tpm2 sha256:' /tmp/boot-server-rogue.jsonl && ! grep -q '\"event\":\"delivered\"' /tmp/boot-server-rogue.jsonl"

# tpm2-tools' independent checks, now that their use has been shown to be caught:
# tpm2_checkquote on the first quote, and PCR reads through the kernel resource
# manager while tvpd holds its own connection.
mkdir -p /tmp/tpm2
tvpctl export-tpm2 /tmp/evidence.json /tmp/tpm2 --nonce "$NONCE" --ak /tmp/ak.pem >/tmp/checkquote.cmd
check quote-verified-by-tpm2_checkquote sh /tmp/checkquote.cmd
check tpm2_pcrread-concurrently-with-tvpd tpm2_pcrread -T device:/dev/tpmrm0 sha256:10,15,16,23
tpm2_pcrread -T device:/dev/tpmrm0 sha256:16,23 | sed 's/^/  /'
Z=0x0000000000000000000000000000000000000000000000000000000000000000
check pcr-16-and-23-zero sh -c "tpm2_pcrread -T device:/dev/tpmrm0 sha256:16,23 | grep -c ': $Z' | grep -qx 2"
kill $BS 2>/dev/null; kill $TVPD; wait $TVPD; rc=$?
check tvpd-clean-exit test "$rc" -eq 0
