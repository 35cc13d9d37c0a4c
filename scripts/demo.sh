#!/usr/bin/env bash
# The main job, end to end, on embedded defaults: a local swtpm with a
# manufacturer-style EK certificate plays the host TPM; tvpd provisions it, measures
# the platform and serves its API; a tenant-side verifier checks the host's identity
# and a fresh quote, cross-checked by tpm2-tools; then a measured VM network-boots the
# bundled firmware over a real TAP, the tenant's local boot server attests its TLS
# tunnel (TPM quote of PCRs 15/16/23) and only then delivers the signed demo workload,
# which runs; the tenant verifies the VM's audit trail. Exit 0 only if every check passes.
# Usage: scripts/demo.sh            (installs missing packages, builds, cleans up)
# Everything runs in a private network namespace (bridge br0 = 10.0.0.1/24 for the
# VMs' TAPs, the boot server on 10.0.0.1:8443), deleted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$TVP_ROOT"
BIN=$TVP_ROOT/target/release
NAME=boot.tenant.example

if [ "${1:-}" != --inside ]; then
    say "1. install what is missing and build (release: agent, VMM, boot server; firmware; demo workload)"
    ensure_packages "${TVP_PACKAGES[@]}"
    ensure_rust
    cargo build --release --workspace --bins --quiet
    make_tmpdir W
    FW=$(scripts/build-firmware.sh | tail -n1 | awk '{print $3}')
    cp "$FW" "$W/tvp-firmware.elf"
    ok "firmware $(sha256sum "$W/tvp-firmware.elf" | cut -c1-16)… (reproducible build)"
    NS=tvpdemo-$$
    ip netns add "$NS" || die "cannot create a network namespace (root needed)"
    on_exit "ip netns del $NS"
    ip -n "$NS" link set lo up
    ip -n "$NS" link add br0 type bridge
    ip -n "$NS" addr add 10.0.0.1/24 dev br0
    ip -n "$NS" link set br0 up
    ok "network namespace $NS: br0 10.0.0.1/24 for the VMs' TAPs"
    ip netns exec "$NS" bash "$0" --inside "$W"
    exit 0
fi
W=$2
FW=$W/tvp-firmware.elf

say "2. a host TPM: swtpm with an EK and an EK certificate from its manufacturer CA"
start_swtpm "$W/tpm" ek-cert
ok "swtpm pid $SWTPM_PID on 127.0.0.1:$SWTPM_PORT"

cat >"$W/tvpd.toml" <<CONF
socket = "$W/tvpd.sock"
tcti = "$SWTPM_TCTI"
state_dir = "$W/state"
firmware = "$FW"
platform_artefacts = ["$BIN/tvp-vmm", "$FW"]
vmm_user = "65534:65534"
tap_prefix = "tvpdemo"
vm_bridge = "br0"
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

say "11. tenant: PKI, signed workload, management key and policy, reservation, inventory"
scripts/tenant-pki.sh "$W/tenant" "$NAME"
ELF=$(scripts/build-test-workload.sh "$W/tenant/wl")
"$BIN/tvp-boot-server" sign-workload --elf "$ELF" --key "$W/tenant/workload.key" \
    --cert "$W/tenant/workload.pem" --out "$W/tenant/hello.signed" >/dev/null
# The management key and policy travel with the VM, are measured into PCR 23, and
# decide which operations the cloud's administrators may perform (with a token).
openssl genpkey -algorithm ed25519 -out "$W/tenant.key" 2>/dev/null
openssl pkey -in "$W/tenant.key" -pubout -out "$W/tenant.pem"
echo '{"v": 1, "allowed_operations": ["pause", "resume", "power-off", "delete"], "reported_operations": ["*"], "on_tampering": "power-off"}' >"$W/policy.json"
# The reservation: VIP, U, and what the tenant expects of the VM (docs/boot-server.md):
# 64 MiB, 1 vCPU, no image, the tenant's management key and policy.
echo "10.0.0.2 U-demo-0001 memory=64 vcpus=1 image=none disk=none management=tenant" >"$W/reservations"
"$BIN/tvpctl" inventory --expect "$W/expected.json" -o "$W/inventory.json" 2>/dev/null
ok "tenant CA, boot server certificate ($NAME), workload signed ($(wc -c <"$W/tenant/hello.signed") bytes), host in inventory"

say "12. tenant: the boot server listens on 10.0.0.1:8443 (TLS 1.3, tenant CA)"
"$BIN/tvp-boot-server" serve --listen 10.0.0.1:8443 --cert "$W/tenant/server.pem" --key "$W/tenant/server.key" \
    --ca "$W/tenant/ca.pem" --server-name "$NAME" --reservations "$W/reservations" \
    --inventory "$W/inventory.json" --firmware "$FW" --workload "$W/tenant/hello.signed" \
    --management-key "$W/tenant.pem" --policy "$W/policy.json" --max-connections 1 \
    >"$W/boot-server.jsonl" 2>"$W/boot-server.log" &
BS_PID=$!
track_pid "$BS_PID"
for _ in $(seq 100); do grep -q '"listening"' "$W/boot-server.jsonl" && break; sleep 0.05; done
grep -q '"listening"' "$W/boot-server.jsonl" || { cat "$W/boot-server.log" >&2; die "boot server did not start"; }
ok "boot server pid $BS_PID"

say "13. cloud manager: create the measured VM (lease, PCR 23, network boot, attestation, workload)"
python3 - "$W" >"$W/vm.json" <<'PY'
import json, sys
w = sys.argv[1]
print(json.dumps({"id": "demo-vm", "vip": "10.0.0.2/24", "gateway": "10.0.0.1",
    "mac": "02:00:00:00:00:01", "auth_code": "U-demo-0001", "boot_server": "10.0.0.1:8443",
    "boot_server_name": "boot.tenant.example", "tenant_ca_pem": open(f"{w}/tenant/ca.pem").read(),
    "memory_mib": 64, "management_public_key": open(f"{w}/tenant.pem").read(),
    "policy": json.load(open(f"{w}/policy.json"))}))
PY
started=$(date +%s%N)
"$BIN/tvpctl" vm create "$W/vm.json" >/dev/null
last=
for _ in $(seq 1200); do
    state=$("$BIN/tvpctl" --json vm show demo-vm | sed -n 's/.*"state": "\([a-z]*\)".*/\1/p' | head -n1)
    [ "$state" != "$last" ] && printf '    state: %s\n' "$state" >&2 && last=$state
    case $state in destroyed | failed) break ;; esac
    sleep 0.1
done
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
"$BIN/tvpctl" vm show demo-vm | sed 's/^/    /' >&2
grep -E '"delivered"|"refused"' "$W/boot-server.jsonl" | python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print("    boot server:", r["event"], r.get("reason", ""), "tunnel", r.get("tunnel_measurement", "")[:16] + "...",
          "session", r.get("millis"), "ms")' >&2
CONSOLE=$W/state/vms/demo-vm/console.log
sed 's/^/    console| /' "$CONSOLE" >&2 || true
[ "$state" = destroyed ] || die "the measured VM did not complete (state $state)"
grep -q '"event":"delivered"\|"event": "delivered"' "$W/boot-server.jsonl" || die "the boot server did not deliver the workload"
grep -q "tvp-workload: hello from the tenant workload" "$CONSOLE" || die "the workload did not run"
digest=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "delivered" in l][0]["workload_digest"])' "$W/boot-server.jsonl")
"$BIN/tvpctl" --json vm show demo-vm >"$W/vm-final.json"
[ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["handover_digest"])' "$W/vm-final.json")" = "$digest" ] \
    || die "tvpd did not see the handover of the delivered workload ($digest)"
ok "attested by the boot server, workload delivered and run after the handover ($elapsed_ms ms from create)"
"$BIN/tvpctl" expected-pcrs --firmware "$FW" --config-page "$W/state/vms/demo-vm/config.page" \
    --management-key "$W/tenant.pem" --policy "$W/policy.json" >"$W/vm-expected.json" 2>/dev/null
want=$(grep -Eo '[0-9a-f]{64}' "$W/vm-expected.json")
got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pcr23"])' "$W/vm-final.json")
[ "$want" = "$got" ] || die "PCR 23 $got differs from the value computed from the files ($want)"
ok "PCR 23 of the VM = value computed from firmware + configuration page + tenant key and policy: $got"
NONCE=$(openssl rand -hex 16)
"$BIN/tvpctl" quote --nonce "$NONCE" --pcrs 16,23 -o "$W/after.json" 2>/dev/null
grep -q "\"16\": \"$(printf '0%.0s' $(seq 64))\"" "$W/after.json" && grep -q "\"23\": \"$(printf '0%.0s' $(seq 64))\"" "$W/after.json" \
    || die "PCRs 16/23 not reset after the lease"
ok "lease released: PCRs 16 and 23 are zero again"

say "14. the cloud's administrator cannot delete the VM without the tenant's authorization"
if "$BIN/tvpctl" vm delete demo-vm 2>"$W/denied.err"; then die "delete without a token was accepted"; fi
ok "refused: $(head -n1 "$W/denied.err")"
# The bound form: the token names this host (the AK name the tenant pinned with the
# host's identity in step 2) and the VM incarnation its boot server attested (SHA-256
# of the configuration page, in the boot server's report), so it is void on any other
# host and for any other VM under this id (docs/audit.md §5.2).
INCARNATION=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "delivered" in l][0]["incarnation"])' "$W/boot-server.jsonl")
TOKEN=$("$BIN/tvpctl" authorize --key "$W/tenant.key" --host "$W/host.json" --incarnation "$INCARNATION" \
    --vm demo-vm --op delete)
"$BIN/tvpctl" vm delete demo-vm --token "$TOKEN" >/dev/null || die "the tenant's authorized delete failed"
ok "deleted with the tenant's signed authorization, bound to this host and the attested incarnation ${INCARNATION:0:16}..."

say "15. tenant: the VM's audit extract, from its creation, anchored in the TPM (AK-certified NV index), verifies"
# The bound form: the tenant's fresh nonce, the AK pinned from its inventory, its
# management key (the VM was created with it); where it ended is kept as a checkpoint
# that the next extract must continue from (docs/audit.md §4).
NONCE=$(openssl rand -hex 16)
"$BIN/tvpctl" audit extract --vm demo-vm --nonce "$NONCE" -o "$W/extract.json"
"$BIN/tvpctl" audit verify "$W/extract.json" --ak "$W/ak.pem" --nonce "$NONCE" --policy "$W/policy.json" \
    --management-key "$W/tenant.pem" --save-checkpoint "$W/demo-vm.checkpoint" 2>&1 \
    | sed 's/^/    /' >&2 || die "the audit extract did not verify"
if "$BIN/tvpctl" audit verify "$W/extract.json" --ak "$W/ak.pem" --policy "$W/policy.json" >"$W/stale.out" 2>&1; then
    die "an extract was accepted without the tenant's fresh nonce"
fi
ok "without the fresh nonce it is refused: $(head -n1 "$W/stale.out")"
python3 - "$W/extract.json" <<'PY' || die "the extract does not show the refused and the authorized delete"
import json, sys
x = json.load(open(sys.argv[1]))
recs = [e["record"] for e in x["entries"] if "record" in e]
d = [r["decision"] for r in recs if r["op"] == "delete" and r["stage"] == "decision"]
assert d == ["deny", "allow"], d
PY
ok "the extract shows the administrator's refused delete and the tenant's authorized one"

say "16. tvpd stops cleanly"
kill -TERM "$TVPD_PID"
wait "$TVPD_PID" && ok "tvpd exited 0" || die "tvpd exit code $?"
echo
ok "demo complete: host identity, credential activation, quote verified by tvp and by tpm2-tools, a measured VM network-booted, attested by the tenant's boot server, its workload run, its audit trail verified"
