#!/usr/bin/env bash
# The main job, end to end, on embedded defaults: a local swtpm with a
# manufacturer-style EK certificate plays the host TPM; tvpd provisions it, measures
# the platform, and serves its API; a tenant-side verifier checks the host's identity
# and a fresh quote, cross-checked by tpm2-tools. Exit 0 only if every check passes.
# Usage: scripts/demo.sh            (installs missing packages, builds, cleans up)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$TVP_ROOT"

say "1. install what is missing and build (release)"
ensure_packages "${TVP_PACKAGES[@]}"
ensure_rust
cargo build --release --workspace --bins --quiet
BIN=$TVP_ROOT/target/release
make_tmpdir W

say "2. a host TPM: swtpm with an EK and an EK certificate from its manufacturer CA"
start_swtpm "$W/tpm" ek-cert
ok "swtpm pid $SWTPM_PID on 127.0.0.1:$SWTPM_PORT"

# The measured VMs' firmware: until the network-boot firmware lands, tvp-vmm's test
# guest that drives the attestation mailbox (tunnel, quote, handover) stands in for it.
FW=$(scripts/build-test-guest.sh happy "$W/fw")
cat >"$W/tvpd.toml" <<CONF
socket = "$W/tvpd.sock"
tcti = "$SWTPM_TCTI"
state_dir = "$W/state"
firmware = "$FW"
platform_artefacts = ["$BIN/tvp-vmm", "$FW"]
vmm_user = "65534:65534"
tap_prefix = "tvpdemo"
CONF
"$BIN/tvpd" --config "$W/tvpd.toml" --print-expected-pcrs >"$W/expected.json" 2>"$W/measurements.txt"
ok "inventory's expected platform PCR: $(grep -Eo '[0-9a-f]{64}' "$W/expected.json")"

say "3. tvpd starts: provisions EK/AK, measures the platform, serves the API"
"$BIN/tvpd" --config "$W/tvpd.toml" 2>"$W/tvpd.log" &
TVPD_PID=$!
track_pid "$TVPD_PID"
wait_socket "$W/tvpd.sock" "$TVPD_PID" || { cat "$W/tvpd.log" >&2; die "tvpd did not start"; }
grep -E 'TPM ready|measured|serving' "$W/tvpd.log" | sed 's/^/    /' >&2
export TVP_SOCKET=$W/tvpd.sock

say "4. host identity over the socket (curl --unix-socket)"
curl -s --unix-socket "$W/tvpd.sock" http://tvp/v1/host >"$W/host.json"
HOST_ID=$(sed -n 's/.*"host_id": "\([0-9a-f]*\)".*/\1/p' "$W/host.json")
[ ${#HOST_ID} = 64 ] || die "no host id in $(cat "$W/host.json")"
ok "host id $HOST_ID"
"$BIN/tvpctl" --json host >/dev/null
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
h = json.load(open(f"{w}/host.json"))
open(f"{w}/ak.pem", "w").write(h["ak_public_pem"])
open(f"{w}/ek.pem", "w").write(h["ek_public_pem"])
open(f"{w}/ek-cert.pem", "w").write(h["ek_certificate_pem"] or "")
open(f"{w}/ak.name", "w").write(h["ak_name"])
open(f"{w}/ek.name", "w").write(h["ek_name"])
PY

say "5. inventory: the EK certificate chains to the manufacturer CA (openssl)"
openssl verify -CAfile /var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem \
    -untrusted /var/lib/swtpm-localca/issuercert.pem "$W/ek-cert.pem" >/dev/null \
    || die "EK certificate does not chain to the CA"
[ "$(openssl x509 -noout -pubkey -in "$W/ek-cert.pem")" = "$(cat "$W/ek.pem" | sed '/^$/d')" ] \
    || die "EK certificate is for another key"
ok "EK certificate verified and matches the EK"

say "6. inventory: the AK lives in the same TPM as the EK (MakeCredential/ActivateCredential)"
openssl rand 32 >"$W/secret.bin"
tpm2_makecredential -T none -G rsa -u "$W/ek.pem" -s "$W/secret.bin" -n "$(cat "$W/ak.name")" \
    -o "$W/mkcred.out" 2>/dev/null
[ "$("$BIN/tvpctl" activate-credential --mkcred "$W/mkcred.out")" = "$(od -An -tx1 "$W/secret.bin" | tr -d ' \n')" ] \
    || die "credential activation returned the wrong secret"
ok "secret recovered only this TPM could decrypt: AK bound to EK"

say "7. tenant: quote with a fresh nonce"
NONCE=$(openssl rand -hex 20)
"$BIN/tvpctl" quote --nonce "$NONCE" --pcrs 15,16,23 -o "$W/evidence.json" 2>/dev/null
ok "evidence: $(wc -c <"$W/evidence.json") bytes"

say "8. tenant: verify (AK, signature, nonce, PCR digest, event log, expected platform PCR)"
"$BIN/tvpctl" verify "$W/evidence.json" --nonce "$NONCE" --ak "$W/ak.pem" --expect "$W/expected.json" \
    --ek-name "$(cat "$W/ek.name")" \
    || die "verification failed"

say "9. independent cross-check with tpm2-tools: tpm2_checkquote"
"$BIN/tvpctl" export-tpm2 "$W/evidence.json" "$W/tpm2" --nonce "$NONCE" --ak "$W/ak.pem" >"$W/checkquote.cmd"
(cd "$W/tpm2" && sh "$W/checkquote.cmd" >/dev/null) || die "tpm2_checkquote rejected the quote"
ok "tpm2_checkquote accepts the quote"

say "10. a tampered quote is rejected"
python3 - "$W/evidence.json" "$W/tampered.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
v = e["pcrs"]["sha256"]["16"]
e["pcrs"]["sha256"]["16"] = ("1" if v[0] != "1" else "2") + v[1:]
json.dump(e, open(sys.argv[2], "w"))
PY
if "$BIN/tvpctl" verify "$W/tampered.json" --nonce "$NONCE" --ak "$W/ak.pem" 2>"$W/tampered.err"; then
    die "tampered evidence was accepted"
fi
ok "rejected: $(cat "$W/tampered.err")"

say "11. a measured VM: lease, PCR 23 measurement, tunnel, quote, handover, PCRs reset"
# The tenant's management key and policy travel with the VM and are measured into PCR 23.
openssl genpkey -algorithm ed25519 -out "$W/tenant.key" 2>/dev/null
openssl pkey -in "$W/tenant.key" -pubout -out "$W/tenant.pem"
PUB=$(awk '{printf "%s\\n", $0}' "$W/tenant.pem")
echo '{"v": 1, "allowed_operations": ["pause", "resume", "power-off", "delete"], "reported_operations": ["*"], "on_tampering": "power-off"}' >"$W/policy.json"
cat >"$W/vm.json" <<VM
{"id": "demo-vm", "vip": "10.0.0.2/24", "gateway": "10.0.0.1", "mac": "02:00:00:00:00:01",
 "auth_code": "U-demo-0001", "boot_server": "10.0.0.1:8443", "boot_server_name": "boot.tenant.example",
 "tenant_ca_pem": "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n", "memory_mib": 16,
 "management_public_key": "$PUB", "policy": $(cat "$W/policy.json")}
VM
"$BIN/tvpctl" vm create "$W/vm.json" >/dev/null
for _ in $(seq 300); do
    state=$("$BIN/tvpctl" --json vm show demo-vm | sed -n 's/.*"state": "\([a-z]*\)".*/\1/p' | head -n1)
    case $state in destroyed | failed) break ;; esac
    sleep 0.1
done
"$BIN/tvpctl" vm show demo-vm | sed 's/^/    /' >&2
[ "$state" = destroyed ] || die "the measured VM did not complete (state $state)"
grep -E 'tunnel measurement|quote for the lease holder|handover|PCR lease released' "$W/tvpd.log" | sed 's/^/    /' >&2
"$BIN/tvpctl" expected-pcrs --firmware "$FW" --config-page "$W/state/vms/demo-vm/config.page" \
    --management-key "$W/tenant.pem" --policy "$W/policy.json" >"$W/vm-expected.json" 2>/dev/null
want=$(grep -Eo '[0-9a-f]{64}' "$W/vm-expected.json")
got=$("$BIN/tvpctl" --json vm show demo-vm | sed -n 's/.*"pcr23": "\([0-9a-f]*\)".*/\1/p')
[ "$want" = "$got" ] || die "PCR 23 $got differs from the value computed from the files ($want)"
ok "PCR 23 of the VM = value computed from firmware + configuration page + tenant key and policy: $got"
NONCE=$(openssl rand -hex 16)
"$BIN/tvpctl" quote --nonce "$NONCE" --pcrs 16,23 -o "$W/after.json" 2>/dev/null
grep -q "\"16\": \"$(printf '0%.0s' $(seq 64))\"" "$W/after.json" && grep -q "\"23\": \"$(printf '0%.0s' $(seq 64))\"" "$W/after.json" \
    || die "PCRs 16/23 not reset after the lease"
ok "lease released: PCRs 16 and 23 are zero again"

say "12. tvpd stops cleanly"
kill -TERM "$TVPD_PID"
wait "$TVPD_PID" && ok "tvpd exited 0" || die "tvpd exit code $?"
echo
ok "demo complete: host identity, credential activation, quote verified by tvp and by tpm2-tools, a measured VM through its lease"
