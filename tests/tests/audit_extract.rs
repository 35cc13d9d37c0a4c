//! A tenant's audit extract cannot be cut (issue #16, item 2): real swtpm, real tvpd
//! with a real VM, tvpctl as a process. Each cut that verified "OK" before is an
//! attack here, refused with its reason named: `since` past the end, an extract
//! starting after the VM's creation without a checkpoint (or elsewhere than the
//! checkpoint), an old certification replayed, the embedded AK swapped for the
//! attacker's, a truncated tail. The legitimate path: a full extract verifies from
//! the VM's creation (with its management binding), and an incremental one from the
//! checkpoint the previous verification saved (docs/audit.md §4).

use std::path::{Path, PathBuf};

use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::Value;
use tvp_audit::extract::{Extract, ExtractEntry};
use tvp_audit::{anchor, record};
use tvp_tests::guests::build_guest;
use tvp_tests::{nonce_hex, require, Need, Swtpm, Tenant, Tvpd, VmSpec};

const VM: &str = "vm-x";

/// tvpd with one VM of one tenant, and the tenant's files.
struct Setup {
    t: Tvpd,
    dir: PathBuf,
    /// The host's AK from the inventory (here: read from tvpd once, pinned).
    ak: PathBuf,
    policy: PathBuf,
    /// The tenant's management public key.
    key: PathBuf,
    // Dropped last: tvpd needs its TPM until it stops.
    _tpm: Swtpm,
}

impl Setup {
    fn new() -> Setup {
        let tpm = Swtpm::blank();
        let dir = tpm.scratch("a");
        // A guest that halts for good: the VM exists and costs no CPU.
        let fw = build_guest("halt", &tpm.scratch("guest"));
        let t = Tvpd::start(&tpm, &dir, &["--firmware", fw.to_str().unwrap()]);
        // Records before the VM exists: its extract never needs them.
        assert_eq!(t.api("GET", "/v1/host", None).status, 200);
        let tenant = Tenant::new(&["pause", "resume"], "alert");
        let r = t.create_vm(&VmSpec::measured(VM).no_gateway().managed_by(&tenant));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let host = t.api_json("GET", "/v1/host", None);
        let ak = dir.join("ak.pem");
        std::fs::write(&ak, host["ak_public_pem"].as_str().unwrap()).unwrap();
        let policy = dir.join("policy.json");
        std::fs::write(&policy, tenant.policy.to_string()).unwrap();
        let key = dir.join("tenant.pub.pem");
        std::fs::write(&key, tenant.key_pem()).unwrap();
        let s = Setup {
            t,
            dir,
            ak,
            policy,
            key,
            _tpm: tpm,
        };
        s.activity(3);
        s
    }

    /// `n` more records of the VM (read-only requests about it).
    fn activity(&self, n: usize) {
        for _ in 0..n {
            assert_eq!(
                self.t.api("GET", &format!("/v1/vms/{VM}"), None).status,
                200
            );
        }
    }

    /// `tvpctl audit extract --vm VM --nonce N -o FILE [extra]`; the file and N.
    fn extract(&self, name: &str, extra: &[&str]) -> (PathBuf, String) {
        let nonce = nonce_hex(16);
        let f = self.dir.join(name);
        let mut args = vec![
            "audit",
            "extract",
            "--vm",
            VM,
            "--nonce",
            nonce.as_str(),
            "-o",
        ];
        args.push(f.to_str().unwrap());
        args.extend_from_slice(extra);
        let (rc, out, err) = self.t.tvpctl(&args);
        assert_eq!(rc, 0, "{out}{err}");
        (f, nonce)
    }

    /// `tvpctl audit verify FILE --policy P [args]` (offline, as the tenant runs it).
    fn verify(&self, file: &Path, args: &[&str]) -> (i32, String, String) {
        let mut a = vec!["audit", "verify", file.to_str().unwrap()];
        a.extend_from_slice(&["--policy", self.policy.to_str().unwrap()]);
        a.extend_from_slice(args);
        tvp_tests::tvpctl(None, &a)
    }

    /// The bound form: pinned AK and the fresh nonce.
    fn verify_bound(&self, file: &Path, nonce: &str, extra: &[&str]) -> (i32, String, String) {
        let mut a = vec!["--ak", self.ak.to_str().unwrap(), "--nonce", nonce];
        a.extend_from_slice(extra);
        self.verify(file, &a)
    }
}

fn read_extract(f: &Path) -> Extract {
    serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()
}

fn write_extract(f: &Path, x: &Extract) {
    std::fs::write(f, serde_json::to_vec(x).unwrap()).unwrap();
}

/// Refused with exit 1, the reason code and a message containing `needle`.
fn assert_refused((rc, out, err): (i32, String, String), reason: &str, needle: &str) {
    assert_eq!(rc, 1, "expected a refusal ({reason}): {out}{err}");
    assert!(
        out.contains(&format!("FAILED ({reason})")),
        "reason {reason}: {out}{err}"
    );
    assert!(out.contains(needle), "{needle}: {out}");
}

#[test]
fn full_extract_verifies_from_creation_and_a_checkpointed_increment_continues_it() {
    require!(Need::Kvm, Need::Root, "swtpm", "gcc", "ld");
    let s = Setup::new();
    let (x, nonce) = s.extract("full.json", &[]);
    let cp = s.dir.join("vm-x.checkpoint");
    let (rc, out, err) = s.verify_bound(
        &x,
        &nonce,
        &[
            "--management-key",
            s.key.to_str().unwrap(),
            "--save-checkpoint",
            cp.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("begins at the VM's creation"), "{out}");
    assert!(
        out.contains("created with your management key and policy"),
        "{out}"
    );
    assert!(out.contains("matches the TPM-certified anchor"), "{out}");
    let full = read_extract(&x);
    let first = match &full.entries[0] {
        ExtractEntry::Record(r) => r.clone(),
        e => panic!("first entry {e:?}"),
    };
    assert_eq!((first.op.as_str(), first.seq), ("create-vm", full.since));
    assert!(full.since > 1, "the host's earlier records are not needed");
    let saved: Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert_eq!(saved["created"], full.since);

    // More happens; the tenant fetches only what is new, from its checkpoint, and
    // checks it with the AK from its inventory file.
    s.activity(2);
    let (y, nonce2) = s.extract("increment.json", &["--checkpoint", cp.to_str().unwrap()]);
    let inc = read_extract(&y);
    assert_eq!(inc.since, saved["seq"].as_u64().unwrap() + 1);
    let host = s.t.api_json("GET", "/v1/host", None);
    let inventory = s.dir.join("inventory.json");
    std::fs::write(
        &inventory,
        serde_json::json!({"hosts": [{"host_id": host["host_id"],
            "ak_public_pem": host["ak_public_pem"], "platform_pcrs": {}}]})
        .to_string(),
    )
    .unwrap();
    let (rc, out, err) = s.verify(
        &y,
        &[
            "--inventory",
            inventory.to_str().unwrap(),
            "--nonce",
            &nonce2,
            "--checkpoint",
            cp.to_str().unwrap(),
            "--save-checkpoint",
            cp.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(rc, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["start"].as_str()),
        (Some(true), Some("checkpoint"))
    );
    // At least the two gets and the previous extract's own record.
    assert!(v["records"].as_u64().unwrap() >= 3, "{v}");
    let saved2: Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert_eq!(saved2["seq"], v["to"]);
    assert_eq!(saved2["created"], saved["created"]);
}

#[test]
fn since_past_the_end_gives_an_empty_extract_that_does_not_verify() {
    require!(Need::Kvm, Need::Root, "swtpm", "gcc", "ld");
    let s = Setup::new();
    // Exactly one past the end (this verified "OK … matches the TPM-certified
    // anchor" before; the VM's state changes may append records meanwhile, so try
    // again until the extract is empty) ...
    let mut tries = 0;
    let (x, nonce) = loop {
        // The GET /v1/audit is recorded after it answered: + 2.
        let since = s.t.audit_records().len() as u64 + 2;
        let (x, nonce) = s.extract("empty.json", &["--since", &since.to_string()]);
        if read_extract(&x).entries.is_empty() {
            break (x, nonce);
        }
        tries += 1;
        assert!(tries < 20, "the log keeps growing");
    };
    assert_refused(
        s.verify_bound(&x, &nonce, &[]),
        "not-from-creation",
        "the extract is empty",
    );
    // ... and far past it: the server answers the empty extract at the end.
    let (x, nonce) = s.extract("empty.json", &["--since", "1099511627776"]);
    let e = read_extract(&x);
    assert!(e.entries.is_empty(), "{:?}", e.entries);
    assert_eq!(e.since, e.anchor.as_ref().unwrap().records + 1);
    assert_refused(
        s.verify_bound(&x, &nonce, &[]),
        "not-from-creation",
        "the extract is empty",
    );
    let (x, nonce) = s.extract("empty.json", &["--since", "1099511627776"]);
    let (rc, out, _) = s.verify_bound(&x, &nonce, &["--json"]);
    assert_eq!(rc, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("not-from-creation"))
    );
}

#[test]
fn an_extract_starting_after_the_creation_needs_the_checkpoint_it_continues() {
    require!(Need::Kvm, Need::Root, "swtpm", "gcc", "ld");
    let s = Setup::new();
    let (x, nonce) = s.extract("full.json", &[]);
    let created = read_extract(&x).since;
    let cp = s.dir.join("cp");
    let (rc, out, err) = s.verify_bound(&x, &nonce, &["--save-checkpoint", cp.to_str().unwrap()]);
    assert_eq!(rc, 0, "{out}{err}");
    // The host serves an extract that begins after the VM's creation (the creation,
    // the VM's first records, cut off): no checkpoint, refused.
    let later = (created + 2).to_string();
    let (y, nonce) = s.extract("later.json", &["--since", &later]);
    assert_refused(
        s.verify_bound(&y, &nonce, &[]),
        "not-from-creation",
        "does not begin at the VM's creation",
    );
    // With the tenant's checkpoint, an extract that begins after it (records between
    // cut off) is refused too.
    s.activity(3);
    let cp_seq = serde_json::from_slice::<Value>(&std::fs::read(&cp).unwrap()).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let gap = (cp_seq + 3).to_string();
    let (z, nonce) = s.extract("gap.json", &["--since", &gap]);
    assert_refused(
        s.verify_bound(&z, &nonce, &["--checkpoint", cp.to_str().unwrap()]),
        "checkpoint-mismatch",
        "does not continue from your checkpoint",
    );
}

#[test]
fn an_old_certification_replayed_is_refused() {
    require!(Need::Kvm, Need::Root, "swtpm", "gcc", "ld");
    let s = Setup::new();
    // The host keeps an extract certified earlier and, after more happened to the VM,
    // hands it out again instead of a fresh one: the newer records are cut off.
    let (old, _old_nonce) = s.extract("old.json", &[]);
    s.activity(3);
    let fresh = nonce_hex(16);
    assert_refused(
        s.verify_bound(&old, &fresh, &[]),
        "wrong-nonce",
        "another nonce (replayed)",
    );
    // Without the nonce the tenant asked for, nothing is accepted (this verified "OK").
    assert_refused(
        s.verify(&old, &["--ak", s.ak.to_str().unwrap()]),
        "no-fresh-nonce",
        "pass --nonce HEX",
    );
    // Only when told explicitly, with a loud warning.
    let (rc, out, err) = s.verify(&old, &["--ak", s.ak.to_str().unwrap(), "--allow-stale"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(err.contains("WARNING: --allow-stale"), "{err}");
}

/// The anchor value after the entries of `x` (what a certification of it must hold).
fn fold(x: &Extract) -> [u8; 32] {
    let mut acc = tvp_audit::digest_from_hex(&x.start_anchor).unwrap();
    for e in &x.entries {
        let (h, grouped) = match e {
            ExtractEntry::Record(r) => (r.hash_bytes().unwrap(), r.grouped),
            ExtractEntry::Skipped(k) => {
                let d = |s: &str| tvp_audit::digest_from_hex(s).unwrap();
                let head = record::head_digest(k.seq, &d(&k.prev), &d(&k.vm_digest), &k.op);
                (record::record_hash(&head, &d(&k.body_digest)), k.grouped)
            }
        };
        acc = anchor::step(&acc, &h, grouped);
    }
    acc
}

#[test]
fn an_extract_with_the_ak_swapped_for_the_attackers_key_is_refused() {
    require!(Need::Kvm, Need::Root, "swtpm", "gcc", "ld");
    let s = Setup::new();
    let (x, nonce) = s.extract("real.json", &[]);
    // The attacker cuts the tail, certifies the shorter extract itself (the tenant's
    // nonce, the real index name, the new value) and signs with its own key, which it
    // puts into the file.
    let mut e = read_extract(&x);
    e.entries.truncate(e.entries.len() - 2);
    let value = fold(&e);
    let b64 = base64::engine::general_purpose::STANDARD;
    let c = e.anchor.as_mut().unwrap();
    let mut attest = b64.decode(&c.attest).unwrap();
    let n = attest.len();
    attest[n - 32..].copy_from_slice(&value); // nvContents, the last TPM2B
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let sig = SigningKey::<Sha256>::new(key.clone())
        .sign(&attest)
        .to_vec();
    let mut tpmt = vec![0x00, 0x14, 0x00, 0x0b];
    tpmt.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    tpmt.extend_from_slice(&sig);
    c.records = e.since + e.entries.len() as u64 - 1;
    c.value = hex::encode(value);
    c.attest = b64.encode(&attest);
    c.signature = b64.encode(&tpmt);
    c.ak_public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let forged = s.dir.join("forged.json");
    write_extract(&forged, &e);
    // Without a pinned AK (this verified "OK" before): refused, the reason named.
    assert_refused(
        s.verify(&forged, &["--nonce", &nonce]),
        "ak-not-pinned",
        "no AK to check the certification with",
    );
    // With the host's AK from the inventory: the signature is not the host's.
    assert_refused(
        s.verify_bound(&forged, &nonce, &[]),
        "bad-signature",
        "does not verify",
    );
    // Trusting the embedded key must be asked for, and says what it risks.
    let (rc, out, err) = s.verify(&forged, &["--nonce", &nonce, "--trust-embedded-ak"]);
    assert_eq!(rc, 0, "the forgery is only caught by pinning: {out}{err}");
    assert!(err.contains("WARNING: --trust-embedded-ak"), "{err}");
}

#[test]
fn a_truncated_tail_is_refused() {
    require!(Need::Kvm, Need::Root, "swtpm", "gcc", "ld");
    let s = Setup::new();
    let (x, nonce) = s.extract("real.json", &[]);
    let mut e = read_extract(&x);
    e.entries.truncate(e.entries.len() - 2);
    let cut = s.dir.join("cut.json");
    write_extract(&cut, &e);
    assert_refused(
        s.verify_bound(&cut, &nonce, &[]),
        "anchor-mismatch",
        "does not match the TPM anchor",
    );
    // Without any certification it cannot be checked at all: refused as such.
    e.anchor = None;
    write_extract(&cut, &e);
    assert_refused(
        s.verify_bound(&cut, &nonce, &[]),
        "uncertified",
        "carries no TPM-certified anchor",
    );
}
