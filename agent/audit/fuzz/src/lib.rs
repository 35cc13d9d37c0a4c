//! Shared pieces of the tvp-audit fuzz targets: a real audit log (sealed with
//! `AuditRecord::seal` like tvpd does), its TPM anchor, an NV certification of that
//! anchor signed by a fixed test AK (`fixtures/ak-test-key.pem`, RSASSA-SHA256 as a TPM
//! signs it), a tenant policy and tenant keys derived from fixed bytes.

use std::sync::OnceLock;

use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use sha2::Sha256;
use tvp_audit::anchor::{self, AnchorCertification};
use tvp_audit::chain::verify_chain;
use tvp_audit::checkpoint::Checkpoint;
use tvp_audit::extract::CREATE_OP;
use tvp_audit::record::{AuditRecord, Decision, RecordDraft, Stage, GENESIS};
use tvp_audit::token::TenantSigner;
use tvp_audit::{Digest32, TenantPolicy};

/// The anchor NV index of the seeds.
pub const NV_INDEX: u32 = 0x0150_0a00;
/// The verifier's nonce of the seed certification.
pub const NONCE: &[u8] = b"anchor nonce 0123";

fn draft(op: &str, vm: Option<&str>, stage: Stage, request: u64) -> RecordDraft {
    RecordDraft {
        time_ms: 1_700_000_000_000 + request,
        uid: 0,
        pid: Some(4242),
        vm: vm.map(String::from),
        op: op.into(),
        params_digest: [7; 32],
        stage,
        decision: Decision::Allow,
        reason: "tenant authorization counter 5".into(),
        status: (stage == Stage::Result).then_some(if op == CREATE_OP { 201 } else { 200 }),
        result: (stage == Stage::Result).then(|| "ok".to_string()),
        state_before: (stage == Stage::Event).then(|| "running".to_string()),
        state_after: (stage == Stage::Event).then(|| "paused".to_string()),
        request,
    }
}

/// The seed log: requests and events of VMs `a` and `b` and host-level requests.
pub fn log() -> &'static Vec<AuditRecord> {
    static L: OnceLock<Vec<AuditRecord>> = OnceLock::new();
    L.get_or_init(|| {
        let spec: [(&str, Option<&str>, Stage, u64); 9] = [
            (CREATE_OP, Some("a"), Stage::Decision, 0),
            (CREATE_OP, Some("a"), Stage::Result, 1),
            ("pause", Some("b"), Stage::Decision, 0),
            ("pause", Some("a"), Stage::Decision, 0),
            ("pause", Some("a"), Stage::Event, 0),
            ("quote", None, Stage::Result, 0),
            ("get", Some("a"), Stage::Result, 0),
            ("http:GET /x", None, Stage::Result, 0),
            ("résumé", Some("a"), Stage::Decision, 0),
        ];
        let mut prev = GENESIS;
        spec.iter()
            .enumerate()
            .map(|(i, (op, vm, stage, req))| {
                let seq = i as u64 + 1;
                let r = AuditRecord::seal(draft(op, *vm, *stage, *req), seq, &prev);
                prev = r.hash_bytes().unwrap();
                r
            })
            .collect()
    })
}

/// The log as tvpd stores it (JSON lines).
pub fn log_text() -> String {
    log().iter().map(|r| r.to_line() + "\n").collect()
}

/// The anchor of the whole seed log.
pub fn log_anchor() -> Digest32 {
    verify_chain(log(), None).unwrap().anchor
}

/// A tenant's checkpoint of VM `a` after seed record `seq` (VM `a` is created at 1).
pub fn checkpoint(seq: usize) -> Checkpoint {
    let l = &log()[..seq];
    let anchor = verify_chain(l, None).unwrap().anchor;
    Checkpoint::new(
        "a",
        1,
        seq as u64,
        &l[seq - 1].hash_bytes().unwrap(),
        &anchor,
    )
}

/// The tenant policy of the seeds: everything but `get` is reported.
pub fn policy() -> &'static TenantPolicy {
    static P: OnceLock<TenantPolicy> = OnceLock::new();
    P.get_or_init(|| {
        TenantPolicy::from_json(
            br#"{"v":1,"allowed_operations":["pause","resume"],"reported_operations":["pause","quote","resume","r\u00e9sum\u00e9"],"management_key_lease_secs":1000,"on_tampering":"alert"}"#,
        )
        .unwrap()
    })
}

/// The test AK.
pub fn ak() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| {
        RsaPrivateKey::from_pkcs8_pem(include_str!("../fixtures/ak-test-key.pem")).unwrap()
    })
}

/// The test AK's public key, PEM.
pub fn ak_pem() -> String {
    ak().to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

fn tpm2b(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// A TPMS_ATTEST of TPM2_NV_Certify over the anchor index holding `value`.
pub fn nv_attest(index: u32, nonce: &[u8], value: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&0xff54_4347u32.to_be_bytes());
    a.extend_from_slice(&0x8014u16.to_be_bytes());
    tpm2b(&mut a, &[0x00, 0x0b, 1, 2, 3, 4]);
    tpm2b(&mut a, nonce);
    a.extend_from_slice(&[0u8; 17]);
    a.extend_from_slice(&[0u8; 8]);
    tpm2b(&mut a, &anchor::expected_nv_name(index));
    a.extend_from_slice(&0u16.to_be_bytes());
    tpm2b(&mut a, value);
    a
}

/// The AK's TPMT_SIGNATURE (RSASSA, SHA-256) over `attest`.
pub fn sign(attest: &[u8]) -> Vec<u8> {
    let sig = SigningKey::<Sha256>::new(ak().clone())
        .sign(attest)
        .to_vec();
    let mut s = vec![0x00, 0x14, 0x00, 0x0b];
    tpm2b(&mut s, &sig);
    s
}

/// The certification of the whole seed log's anchor, as tvpd serves it.
pub fn certification() -> AnchorCertification {
    let b64 = base64::engine::general_purpose::STANDARD;
    let value = log_anchor();
    let attest = nv_attest(NV_INDEX, NONCE, &value);
    AnchorCertification {
        nv_index: NV_INDEX,
        records: log().len() as u64,
        head: log().last().unwrap().hash.clone(),
        value: hex::encode(value),
        nonce: hex::encode(NONCE),
        signature: b64.encode(sign(&attest)),
        attest: b64.encode(attest),
        ak_public_pem: ak_pem(),
    }
}

/// The tenant's Ed25519 and P-256 management keys.
pub fn signers() -> [TenantSigner; 2] {
    [
        TenantSigner::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[0x11; 32])),
        TenantSigner::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[0x22; 32]).unwrap()),
    ]
}

/// The host and VM incarnation the seed tokens are bound to.
pub fn target() -> tvp_audit::token::Target {
    let mut host = vec![0x00, 0x0b];
    host.extend_from_slice(&[0x33; 32]);
    tvp_audit::token::Target {
        host,
        vm: "a".into(),
        incarnation: [0x23; 32],
    }
}

/// When the seed tokens expire (Unix seconds; the fuzz target checks them at 1000).
pub const SEED_EXPIRES: u64 = 2000;

/// The parameters digest the seed tokens sign.
pub fn params_digest() -> Digest32 {
    let p = tvp_audit::params::parse_kv(&["reason=maintenance".to_string()]).unwrap();
    tvp_audit::params::digest(&p)
}

/// Writes the seed corpora (real log, extracts, certification, tokens):
/// `cargo test --manifest-path agent/audit/fuzz/Cargo.toml -- --ignored write_seeds`.
#[cfg(test)]
mod seeds {
    use super::*;
    use tvp_audit::extract;

    fn put(target: &str, name: &str, bytes: &[u8]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    #[ignore]
    fn write_seeds() {
        put("audit_log", "log.jsonl", log_text().as_bytes());
        let reported = |op: &str| policy().reports(op);
        for (vm, since) in [("a", 1), ("b", 1), ("a", 4)] {
            let mut x = extract::build(log(), vm, since, &reported);
            x.anchor = Some(certification());
            let text = serde_json::to_string_pretty(&x).unwrap();
            put(
                "audit_extract",
                &format!("extract-{vm}-{since}.json"),
                text.as_bytes(),
            );
        }
        let cert = serde_json::to_string_pretty(&certification()).unwrap();
        put("audit_anchor", "certification.json", cert.as_bytes());
        for (i, s) in signers().iter().enumerate() {
            let t = s.authorize("pause", &target(), &params_digest(), 5, SEED_EXPIRES);
            put("audit_token", &format!("token-{i}"), t.encode().as_bytes());
        }
        put(
            "audit_token",
            "policy.json",
            br#"{"v":1,"allowed_operations":["pause"],"reported_operations":["*"],"key_lease_secs":30,"allow_plaintext_images":true,"on_platform_change":"power-off","on_tampering":"alert"}"#,
        );
    }

    #[test]
    fn seeds_verify() {
        let c = certification();
        assert_eq!(
            c.verify(Some(&ak_pem()), Some(NONCE)).unwrap(),
            log_anchor()
        );
        let reported = |op: &str| policy().reports(op);
        let certified = (log_anchor(), log().len() as u64);
        let x = extract::build(log(), "a", 1, &reported);
        let creation = extract::Start::Creation { management: None };
        let s = x.verify(&reported, creation, certified).unwrap();
        // The seed extract from seq 4 continues from the checkpoint after seq 3.
        assert_eq!(s.checkpoint.created, 1);
        let y = extract::build(log(), "a", 4, &reported);
        y.verify(
            &reported,
            extract::Start::Checkpoint(&checkpoint(3)),
            certified,
        )
        .unwrap();
    }
}
