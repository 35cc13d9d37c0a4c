#!/bin/sh
# Runs inside the QEMU host (busybox sh). Each check prints one line:
#   TVP-CHECK <name> PASS|FAIL <detail>
check() { name=$1; shift; if "$@" >/tmp/check.out 2>&1; then echo "TVP-CHECK $name PASS"; else echo "TVP-CHECK $name FAIL $(tail -3 /tmp/check.out | tr '\n' ' ')"; fi; }
export TVP_SOCKET=/run/tvp/tvpd.sock
echo

check kvm-device test -c /dev/kvm
check tpm-resource-manager test -c /dev/tpmrm0

mkdir -p /var/lib/tvp
tvpd --tcti device:/dev/tpmrm0 --state-dir /var/lib/tvp --log-level info 2>/tmp/tvpd.log &
TVPD=$!
i=0; while [ $i -lt 300 ] && ! tvpctl host >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
check tvpd-provisioned-through-tpmrm0 tvpctl host
grep -E 'TPM ready|measured' /tmp/tvpd.log | sed 's/^/  /'

tvpctl --json host >/tmp/host.json
# EK certificate from NV, chained to swtpm's local CA (the "manufacturer").
sed -n 's/.*"ek_certificate_pem": "\(.*\)",$/\1/p' /tmp/host.json | sed 's/\\n/\n/g' >/tmp/ek-cert.pem
check ek-certificate-chains-to-manufacturer-ca openssl verify -CAfile /ca/swtpm-localca-rootca-cert.pem -untrusted /ca/issuercert.pem /tmp/ek-cert.pem
sed -n 's/.*"ak_public_pem": "\(.*\)",$/\1/p' /tmp/host.json | sed 's/\\n/\n/g' >/tmp/ak.pem

NONCE=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
check quote-through-tpmrm0 tvpctl quote --nonce "$NONCE" --pcrs 15,16,23 -o /tmp/evidence.json
if tvpctl verify --help >/dev/null 2>&1; then
    check quote-verified-by-tvpctl tvpctl verify /tmp/evidence.json --nonce "$NONCE" --ak /tmp/ak.pem
    mkdir -p /tmp/tpm2
    tvpctl export-tpm2 /tmp/evidence.json /tmp/tpm2 >/tmp/checkquote.cmd
    check quote-verified-by-tpm2_checkquote sh -c "cd /tmp/tpm2 && sh /tmp/checkquote.cmd"
fi
# The audit trail anchored in NV through tpmrm0 (tvpd keeps a second, raw connection).
check audit-anchor-through-tpmrm0 sh -c "tvpctl audit anchor --nonce $NONCE -o /tmp/anchor.json && tvpctl audit verify /var/lib/tvp/audit.log --anchor /tmp/anchor.json --nonce $NONCE"
# tpm2-tools through the kernel resource manager while tvpd holds its own connection.
check tpm2_pcrread-concurrently-with-tvpd tpm2_pcrread -T device:/dev/tpmrm0 sha256:15,16,23
tpm2_pcrread -T device:/dev/tpmrm0 sha256:16,23 | sed 's/^/  /'
Z=0x0000000000000000000000000000000000000000000000000000000000000000
check pcr-16-and-23-zero sh -c "tpm2_pcrread -T device:/dev/tpmrm0 sha256:16,23 | grep -c ': $Z' | grep -qx 2"
kill $TVPD; wait $TVPD; rc=$?
check tvpd-clean-exit test "$rc" -eq 0
