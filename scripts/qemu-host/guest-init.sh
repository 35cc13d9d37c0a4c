#!/bin/sh
# /init of the tenant's Linux guest (busybox initramfs built by scripts/qemu-host.sh),
# network-booted by the firmware in the QEMU host. Each result is one console line
#   TVP-GUEST <what> <value>
# that scripts/qemu-host/scenario.sh checks. The command line (signed by the tenant)
# carries tvp.vip=<VIP/prefix> and tvp.peer=<address to reach>.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "TVP-GUEST userspace uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "TVP-GUEST cpus-online $(grep -c '^processor' /proc/cpuinfo) ($(cat /sys/devices/system/cpu/online))"
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
VIP=$(arg tvp.vip)
PEER=$(arg tvp.peer)
# virtio over MMIO, found through the ACPI DSDT (LNRO0005); dependency order.
for m in virtio_ring virtio virtio_mmio failover net_failover virtio_net virtio_blk; do
    [ -f /lib/modules/$m.ko ] && { insmod /lib/modules/$m.ko || echo "TVP-GUEST insmod-failed $m"; }
done
i=0; while [ -n "$VIP" ] && [ $i -lt 50 ] && [ ! -e /sys/class/net/eth0 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ] && [ -n "$VIP" ]; then
    ip link set lo up
    ip link set eth0 up
    ip addr add "$VIP" dev eth0
    echo "TVP-GUEST eth0 $(cat /sys/class/net/eth0/address) $VIP irq=$(grep -m1 virtio /proc/interrupts | tr -s ' ' | cut -d' ' -f1-4)"
    if ping -c 3 -W 3 "$PEER" >/tmp/ping.out 2>&1; then
        echo "TVP-GUEST network-reached $PEER $(grep -o 'round-trip.*' /tmp/ping.out)"
    else
        echo "TVP-GUEST network-failed $PEER: $(tail -2 /tmp/ping.out | tr '\n' ' ')"
    fi
    echo "TVP-GUEST interrupts $(grep virtio /proc/interrupts | tr -s ' ' | tr '\n' ';')"
else
    echo "TVP-GUEST network-failed no eth0 (vip=$VIP)"
fi
# The tenant's encrypted disk (virtio-blk, decrypted chunk by chunk in tvp-vmm): its
# first line is the marker the tenant wrote.
i=0; while [ $i -lt 50 ] && [ ! -b /dev/vda ]; do sleep 0.1; i=$((i+1)); done
if [ -b /dev/vda ]; then
    echo "TVP-GUEST disk-marker $(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n1) ($(cat /sys/block/vda/size) sectors, ro=$(cat /sys/block/vda/ro))"
    # Sequential read of the whole disk (the benchmark's figure; O_DIRECT so the page
    # cache holds nothing from the marker read), timed by /proc/uptime (10 ms ticks).
    t0=$(cut -d' ' -f1 /proc/uptime)
    dd if=/dev/vda of=/dev/null bs=1M iflag=direct 2>/dev/null || dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "TVP-GUEST disk-read $(($(cat /sys/block/vda/size) * 512)) bytes in $t0 $t1"
else
    echo "TVP-GUEST disk-missing"
fi
# The VM's own TPM ("vtpm": true): Linux's tpm_crb found it through the ACPI TPM2 table
# and MSFT0101 and started it; PCR 0 as the kernel reads it.
if [ -e /sys/class/tpm/tpm0 ]; then
    echo "TVP-GUEST tpm version=$(cat /sys/class/tpm/tpm0/tpm_version_major) pcr0=$(cat /sys/class/tpm/tpm0/pcr-sha256/0 2>/dev/null || echo unreadable)"
    # tpm2-tools on it: re-create tvp's AK from its documented template (the key the
    # host certified for this VM, docs/vtpm-identity.md), quote PCRs 0-7 with it, and
    # read the EK certificate the host stored; the scenario verifies both outside.
    export TPM2TOOLS_TCTI=device:/dev/tpmrm0
    echo "TVP-GUEST tpm2_pcrread $(tpm2_pcrread sha256:0,1,4 2>&1 | tr -s ' \n' ' ')"
    if tpm2_createprimary -Q -C e -g sha256 -G ecc256:ecdsa-sha256:null \
            -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign' -c /tmp/ak.ctx &&
        tpm2_quote -Q -c /tmp/ak.ctx -l sha256:0,1,2,3,4,5,6,7 -q "$(arg tvp.nonce)" \
            -m /tmp/q.msg -s /tmp/q.sig -g sha256; then
        echo "TVP-GUEST tpm-quote $(base64 /tmp/q.msg | tr -d '\n') $(base64 /tmp/q.sig | tr -d '\n')"
    else
        echo "TVP-GUEST tpm-quote-failed"
    fi
    if tpm2_nvread -Q -C o 0x01c0000a -o /tmp/ek.der; then
        echo "TVP-GUEST tpm-ek-cert sha256=$(sha256sum /tmp/ek.der | cut -d' ' -f1)"
    else
        echo "TVP-GUEST tpm-ek-cert-unreadable"
    fi
    # Its measured boot: the firmware's TCG event log, found through the TPM2 table's
    # log area (LASA/LAML), as the kernel exposes it.
    mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
    log=/sys/kernel/security/tpm0/binary_bios_measurements
    if [ -r $log ]; then
        echo "TVP-GUEST tpm-event-log bytes=$(wc -c < $log) spec-id=$(grep -c 'Spec ID Event03' $log)"
    else
        echo "TVP-GUEST tpm-event-log-missing"
    fi
else
    echo "TVP-GUEST tpm-missing"
fi
echo "TVP-GUEST poweroff uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
