#!/usr/bin/env bash
# Show, and with --apply set, the host settings that close what root could otherwise do
# to tenants' VMs (docs/host-hardening.md). Settings marked "irreversible" hold until
# the next reboot; persist them in /etc/sysctl.d/ and the kernel command line yourself.
# Usage: scripts/harden-host.sh [--apply]
# Exit: 0 everything in place; 2 something is not (without --apply); 1 --apply failed.
set -uo pipefail
APPLY=0
[ "${1:-}" = --apply ] && APPLY=1
[ "${1:-}" = --help ] && { sed -n '2,6p' "$0"; exit 0; }
[ $APPLY = 1 ] && [ "$(id -u)" != 0 ] && { echo "--apply needs root" >&2; exit 1; }

state=0
# setting path wanted description irreversible
check() {
    local name=$1 path=$2 want=$3 what=$4 irrev=$5 cur
    if [ ! -e "$path" ]; then
        printf '%-32s %-14s %s\n' "$name" "unavailable" "$what"
        return
    fi
    cur=$(tr -d '\n' <"$path" 2>/dev/null)
    if [[ "$cur" == *"$want"* ]]; then
        printf '%-32s %-14s %s\n' "$name" "ok ($want)" "$what"
        return
    fi
    if [ $APPLY = 1 ]; then
        if echo "$want" >"$path" 2>/dev/null; then
            printf '%-32s %-14s %s%s\n' "$name" "set $want" "$what" "${irrev:+ (irreversible until reboot)}"
        else
            printf '%-32s %-14s %s\n' "$name" "FAILED" "$what (current: $cur)"
            state=1
        fi
    else
        printf '%-32s %-14s %s (current: %s)%s\n' "$name" "would set $want" "$what" "$cur" "${irrev:+, irreversible}"
        state=2
    fi
}

check kernel.yama.ptrace_scope /proc/sys/kernel/yama/ptrace_scope 3 "no ptrace, not even by root" yes
check fs.suid_dumpable /proc/sys/fs/suid_dumpable 0 "no core dumps of privileged processes" ""
check kernel.kexec_load_disabled /proc/sys/kernel/kexec_load_disabled 1 "no kexec into another kernel" yes
check kernel.kptr_restrict /proc/sys/kernel/kptr_restrict 2 "hide kernel addresses" ""
check kernel.dmesg_restrict /proc/sys/kernel/dmesg_restrict 1 "kernel log for root only" ""
if [ -e /sys/kernel/security/lockdown ]; then
    cur=$(cat /sys/kernel/security/lockdown)
    case $cur in
    *"[confidentiality]"*) printf '%-32s %-14s %s\n' lockdown ok "kernel lockdown: confidentiality" ;;
    *)
        if [ $APPLY = 1 ] && echo confidentiality >/sys/kernel/security/lockdown 2>/dev/null; then
            printf '%-32s %-14s %s\n' lockdown "set" "kernel lockdown: confidentiality (irreversible until reboot)"
        else
            printf '%-32s %-14s %s\n' lockdown "not set" "kernel lockdown (current: $cur); boot with lockdown=confidentiality"
            state=2
        fi
        ;;
    esac
else
    printf '%-32s %-14s %s\n' lockdown unavailable "this kernel has no lockdown LSM"
fi
# IMA (docs/host-hardening.md#runtime-integrity-ima): tvp's policy measures every
# executable, executable mapping and module into PCR 10; tenants judge the list against
# the host's allowlist. The policy can be written once per boot (CONFIG_IMA_WRITE_POLICY
# off); --apply also installs it as /etc/ima/ima-policy, which systemd loads at boot.
POLICY=$(dirname "$0")/qemu-host/ima-policy
IMA=/sys/kernel/security/ima
if [ ! -d $IMA ]; then
    printf '%-32s %-14s %s\n' ima unavailable "no IMA in this kernel (or securityfs not mounted): inventory this host with runtime_integrity \"none\""
elif grep -q ' /usr/local/bin/tvpd$' $IMA/ascii_runtime_measurements 2>/dev/null; then
    printf '%-32s %-14s %s\n' ima ok "IMA measures executables ($(cat $IMA/runtime_measurements_count) measurements)"
elif [ $APPLY = 1 ] && [ -r "$POLICY" ]; then
    install -D -m 0644 "$POLICY" /etc/ima/ima-policy
    if (while read -r rule; do echo "$rule"; done <"$POLICY") >$IMA/policy 2>/dev/null; then
        printf '%-32s %-14s %s\n' ima "set" "IMA policy loaded (irreversible until reboot) and installed as /etc/ima/ima-policy"
    else
        printf '%-32s %-14s %s\n' ima "FAILED" "the kernel refused the IMA policy (already written this boot?); /etc/ima/ima-policy installed for the next"
        state=1
    fi
else
    printf '%-32s %-14s %s\n' ima "not set" "IMA does not measure tvpd; load $POLICY (boot with ima_hash=sha256 ima_template=ima-ng)"
    state=2
fi
exit $state
