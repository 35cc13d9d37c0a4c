//! Fakes built in Rust (RSA-2048 and P-256 AKs, hand-marshalled TPM structures) and
//! one tampering test per check.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Pkcs1v15Sign, Pss, RsaPrivateKey};
use sha2::{Digest, Sha256};

use super::*;
use crate::eventlog::{extend_sha256, CelDigest, CelRecord, EventContent, EventKind};
use crate::evidence::{HexDigest, PcrBank, QuoteBlobs};
use crate::tpm::alg::{ALG_ECDSA, ALG_NULL, ALG_RSASSA, ALG_SHA256, ECC_NIST_P256};
use crate::tpm::public::{marshal_tpmt, tpm2b_public};
use crate::tpm::{PcrSelection, PublicKey, QuoteInfo, Scheme};

const AK_ATTRS: u32 = 0x0005_0072;

fn rsa_key(i: usize) -> &'static RsaPrivateKey {
    static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let mut rng = rand::thread_rng();
        (0..2)
            .map(|_| RsaPrivateKey::new(&mut rng, 2048).expect("keygen"))
            .collect()
    });
    &keys[i]
}

/// A fake AK: signs like a TPM would.
#[derive(Clone)]
enum FakeAk {
    Rsa(&'static RsaPrivateKey, bool),
    P256(p256::ecdsa::SigningKey),
}

impl FakeAk {
    fn rsa(i: usize) -> Self {
        FakeAk::Rsa(rsa_key(i), false)
    }
    fn rsa_pss() -> Self {
        FakeAk::Rsa(rsa_key(0), true)
    }
    fn p256() -> Self {
        FakeAk::P256(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }
    fn pem(&self) -> String {
        match self {
            FakeAk::Rsa(k, _) => k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
            FakeAk::P256(k) => p256::PublicKey::from(k.verifying_key())
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    }
    fn trusted(&self) -> AkKey {
        AkKey::from_pem(&self.pem()).unwrap()
    }
    fn tpmt(&self, attrs: u32) -> Vec<u8> {
        match self {
            FakeAk::Rsa(k, _) => {
                use rsa::traits::PublicKeyParts;
                let key = PublicKey::Rsa {
                    key_bits: 2048,
                    exponent: 65537,
                    modulus: k.n().to_bytes_be(),
                };
                let scheme = Scheme {
                    alg: ALG_RSASSA,
                    hash: Some(ALG_SHA256),
                };
                marshal_tpmt(ALG_SHA256, attrs, &[], None, scheme, &key)
            }
            FakeAk::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                let key = PublicKey::Ecc {
                    curve: ECC_NIST_P256,
                    kdf: Scheme {
                        alg: ALG_NULL,
                        hash: None,
                    },
                    x: point.x().unwrap().to_vec(),
                    y: point.y().unwrap().to_vec(),
                };
                let scheme = Scheme {
                    alg: ALG_ECDSA,
                    hash: Some(ALG_SHA256),
                };
                marshal_tpmt(ALG_SHA256, attrs, &[], None, scheme, &key)
            }
        }
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let digest = Sha256::digest(msg);
        let sig = match self {
            FakeAk::Rsa(k, false) => Signature::RsaSsa {
                hash: ALG_SHA256,
                sig: k.sign(Pkcs1v15Sign::new::<Sha256>(), &digest).unwrap(),
            },
            FakeAk::Rsa(k, true) => Signature::RsaPss {
                hash: ALG_SHA256,
                sig: k
                    .sign_with_rng(&mut rand::thread_rng(), Pss::new::<Sha256>(), &digest)
                    .unwrap(),
            },
            FakeAk::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(&digest).unwrap();
                let (r, s) = s.split_bytes();
                Signature::Ecdsa {
                    hash: ALG_SHA256,
                    r: r.to_vec(),
                    s: s.to_vec(),
                }
            }
        };
        sig.marshal()
    }
}

fn ek_name() -> Vec<u8> {
    let mut n = vec![0x00, 0x0b];
    n.extend_from_slice(&Sha256::digest(b"fake EK"));
    n
}

fn record(recnum: u64, pcr: u32, what: &str) -> CelRecord {
    CelRecord {
        recnum,
        pcr,
        digests: vec![CelDigest {
            hash_alg: "sha256".into(),
            digest: Sha256::digest(what.as_bytes()).to_vec(),
        }],
        content_type: "tvp".into(),
        content: EventContent {
            event_type: EventKind::PlatformArtefact,
            description: what.into(),
        },
    }
}

/// A consistent scenario: PCR 15 (platform, 2 events), 16 (tunnel, no log record) and
/// 23 (VM, 2 events); a record for unquoted PCR 14 without a sha256 digest.
fn scenario_log() -> Vec<CelRecord> {
    let mut unquoted = record(2, 14, "other bank only");
    unquoted.digests[0].hash_alg = "sha384".into();
    vec![
        record(0, 15, "tvpd"),
        record(1, 23, "firmware"),
        unquoted,
        record(3, 15, "config"),
        record(4, 23, "vm config"),
    ]
}

fn pcrs_of(log: &[CelRecord]) -> BTreeMap<u32, [u8; 32]> {
    let mut pcrs = replay_sha256(log, Some(&[15, 23].into_iter().collect())).unwrap();
    pcrs.insert(16, extend_sha256(&[0; 32], &[0x16; 32]));
    pcrs
}

struct Fake {
    ak: FakeAk,
    attest: Attest,
    ev: Evidence,
}

const NONCE: &[u8] = b"fresh nonce 0123456789abcdef";

impl Fake {
    fn new(ak: FakeAk) -> Self {
        let log = scenario_log();
        let pcrs = pcrs_of(&log);
        let tpmt = ak.tpmt(AK_ATTRS);
        let name = Public::parse_tpmt(&tpmt).unwrap().name().unwrap();
        let ek_qn = qualified_name(&hierarchy_qualified_name(RH_ENDORSEMENT), &ek_name()).unwrap();
        let attest = Attest {
            qualified_signer: qualified_name(&ek_qn, &name).unwrap(),
            extra_data: NONCE.to_vec(),
            clock_info: ClockInfo {
                clock: 123_456,
                reset_count: 7,
                restart_count: 0,
                safe: true,
            },
            firmware_version: 0x2019_1023_0016_3636,
            quote: QuoteInfo {
                selections: vec![PcrSelection::new(
                    ALG_SHA256,
                    &pcrs.keys().copied().collect(),
                )],
                pcr_digest: pcr_composite_digest(&pcrs).to_vec(),
            },
        };
        let bank: PcrBank = pcrs
            .iter()
            .map(|(k, v)| (*k, HexDigest(v.to_vec())))
            .collect();
        let ev = Evidence {
            version: 1,
            host_id: hex::encode(Sha256::digest(b"ek spki")),
            nonce: NONCE.to_vec(),
            quote: QuoteBlobs {
                attest: vec![],
                signature: vec![],
            },
            pcrs: [("sha256".to_string(), bank)].into_iter().collect(),
            ak_public_pem: ak.pem(),
            ak_public: tpm2b_public(&tpmt),
            event_log: log,
            ima_log: None,
        };
        let mut f = Fake { ak, attest, ev };
        f.resign();
        f
    }

    /// Re-marshal and re-sign the attest (what a TPM would sign for these contents).
    fn resign(&mut self) {
        self.ev.quote.attest = self.attest.marshal();
        self.ev.quote.signature = self.ak.sign(&self.ev.quote.attest);
    }

    /// Quote `pcr` with `value` too (as a TPM would: selection, digest, signature).
    fn quote_pcr(&mut self, pcr: u32, value: [u8; 32]) {
        let mut pcrs: BTreeMap<u32, [u8; 32]> = self.ev.pcrs["sha256"]
            .iter()
            .map(|(k, v)| (*k, v.0.clone().try_into().unwrap()))
            .collect();
        pcrs.insert(pcr, value);
        self.attest.quote = QuoteInfo {
            selections: vec![PcrSelection::new(
                ALG_SHA256,
                &pcrs.keys().copied().collect(),
            )],
            pcr_digest: pcr_composite_digest(&pcrs).to_vec(),
        };
        let bank: PcrBank = pcrs
            .iter()
            .map(|(k, v)| (*k, HexDigest(v.to_vec())))
            .collect();
        self.ev.pcrs = [("sha256".to_string(), bank)].into_iter().collect();
        self.resign();
    }

    fn opts(&self) -> VerifyOptions {
        VerifyOptions::new(NONCE.to_vec(), self.ak.trusted())
    }

    fn verify(&self) -> Result<VerifiedEvidence, VerifyError> {
        verify(&self.ev, &self.opts())
    }
}

fn fails(r: Result<VerifiedEvidence, VerifyError>, check: Check) -> VerifyError {
    match r {
        Ok(_) => panic!("expected {check} failure, got success"),
        Err(e) => {
            assert_eq!(e.check(), check, "wrong check: {e}");
            assert!(
                e.to_string().starts_with(&format!("{}: ", check.name())),
                "{e}"
            );
            e
        }
    }
}

fn rsa() -> Fake {
    Fake::new(FakeAk::rsa(0))
}

#[test]
fn good_evidence_verifies_rsa_pss_and_ecdsa() {
    for ak in [FakeAk::rsa(0), FakeAk::rsa_pss(), FakeAk::p256()] {
        let f = Fake::new(ak);
        let v = f.verify().unwrap();
        assert_eq!(v.reset_count, 7);
        assert_eq!(v.pcrs.keys().copied().collect::<Vec<_>>(), vec![15, 16, 23]);
        assert_eq!(v.replayed.keys().copied().collect::<Vec<_>>(), vec![15, 23]);
        assert_eq!(
            v.ak_name,
            Public::parse_tpm2b(&f.ev.ak_public)
                .unwrap()
                .name()
                .unwrap()
        );
        // Bound to the EK too, and through JSON.
        let opts = f.opts().with_ek_name(&ek_name()).unwrap();
        let json = serde_json::to_string(&f.ev).unwrap();
        verify_json(&json, &opts).unwrap();
    }
}

#[test]
fn wrong_ek_parent_is_ak_mismatch() {
    let f = rsa();
    let mut other = ek_name();
    other[5] ^= 1;
    let opts = f.opts().with_ek_name(&other).unwrap();
    fails(verify(&f.ev, &opts), Check::AkMismatch);
}

#[test]
fn version_and_format() {
    let mut f = rsa();
    f.ev.version = 2;
    fails(f.verify(), Check::Version);
    fails(verify_json("{\"version\":1", &f.opts()), Check::Format);
    fails(verify_json("{}", &f.opts()), Check::Format);
}

#[test]
fn truncated_oversized_garbage_attest_is_format() {
    let good = rsa();
    let attest = good.ev.quote.attest.clone();
    for n in [0, 1, 6, attest.len() / 2, attest.len() - 1] {
        let mut f = rsa();
        f.ev.quote.attest = attest[..n].to_vec();
        fails(f.verify(), Check::Format);
    }
    let mut f = rsa();
    f.ev.quote.attest.extend_from_slice(&[0; 16]);
    fails(f.verify(), Check::Format);
    let mut f = rsa();
    f.ev.quote.attest = vec![0xA5; 300];
    fails(f.verify(), Check::Format);
    let mut f = rsa();
    // A huge TPM2B size in qualifiedSigner.
    f.ev.quote.attest[6] = 0xff;
    fails(f.verify(), Check::Format);
    let mut f = rsa();
    f.ev.quote.signature.truncate(10);
    fails(f.verify(), Check::Format);
    let mut f = rsa();
    f.ev.ak_public = vec![0, 4, 0, 1, 0, 0xb];
    fails(f.verify(), Check::Format);
    let mut f = rsa();
    f.ev.ak_public_pem = "not a key".into();
    fails(f.verify(), Check::Format);
}

#[test]
fn different_ak_is_ak_mismatch() {
    // Evidence from another (self-consistent) AK.
    let f = Fake::new(FakeAk::rsa(1));
    fails(verify(&f.ev, &rsa().opts()), Check::AkMismatch);
    let f = Fake::new(FakeAk::p256());
    fails(verify(&f.ev, &rsa().opts()), Check::AkMismatch);
    // PEM and TPM public disagree.
    let mut f = rsa();
    f.ev.ak_public = Fake::new(FakeAk::rsa(1)).ev.ak_public;
    fails(f.verify(), Check::AkMismatch);
    let mut f = rsa();
    f.ev.ak_public_pem = Fake::new(FakeAk::rsa(1)).ev.ak_public_pem;
    fails(f.verify(), Check::AkMismatch);
}

#[test]
fn unrestricted_key_or_foreign_signer_is_ak_mismatch() {
    let mut f = rsa();
    f.ev.ak_public = tpm2b_public(&f.ak.tpmt(AK_ATTRS & !(1 << 16)));
    fails(f.verify(), Check::AkMismatch);
    let mut f = rsa();
    f.attest.qualified_signer = vec![0x00, 0x04, 1, 2, 3];
    f.resign();
    fails(f.verify(), Check::AkMismatch);
}

#[test]
fn flipped_signature_or_attest_byte_is_signature() {
    let mut f = rsa();
    let n = f.ev.quote.signature.len();
    f.ev.quote.signature[n - 5] ^= 0x01;
    fails(f.verify(), Check::Signature);
    // A byte inside clockInfo: still parses, no longer signed.
    let mut f = rsa();
    let off = 4 + 2 + 2 + f.attest.qualified_signer.len() + 2 + NONCE.len() + 3;
    f.ev.quote.attest[off] ^= 0x01;
    fails(f.verify(), Check::Signature);
    let mut f = Fake::new(FakeAk::p256());
    let n = f.ev.quote.signature.len();
    f.ev.quote.signature[n - 1] ^= 0x01;
    fails(f.verify(), Check::Signature);
    // Signed by a different key than the (trusted, consistent) AK in the evidence.
    let mut f = rsa();
    f.ev.quote.signature = FakeAk::rsa(1).sign(&f.ev.quote.attest);
    fails(f.verify(), Check::Signature);
}

#[test]
fn nonce_mismatches() {
    let f = rsa();
    let mut opts = f.opts();
    opts.nonce = b"another nonce".to_vec();
    fails(verify(&f.ev, &opts), Check::Nonce);
    let mut f = rsa();
    f.ev.nonce = b"x".to_vec();
    fails(f.verify(), Check::Nonce);
    // The TPM signed a different nonce (replayed quote).
    let mut f = rsa();
    f.attest.extra_data = b"old nonce".to_vec();
    f.resign();
    fails(f.verify(), Check::Nonce);
}

#[test]
fn changed_pcr_value_is_pcr_digest() {
    let mut f = rsa();
    f.ev.pcrs.get_mut("sha256").unwrap().get_mut(&16).unwrap().0[0] ^= 1;
    let e = fails(f.verify(), Check::PcrDigest);
    assert!(e
        .to_string()
        .contains("does not match SHA-256 of the reported PCR values"));
    let mut f = rsa();
    f.attest.quote.pcr_digest = vec![0; 32];
    f.resign();
    fails(f.verify(), Check::PcrDigest);
}

#[test]
fn selection_differs_is_pcr_selection() {
    let mut f = rsa();
    f.ev.pcrs.get_mut("sha256").unwrap().remove(&16);
    fails(f.verify(), Check::PcrSelection);
    let mut f = rsa();
    f.attest.quote.selections = vec![PcrSelection::new(
        ALG_SHA256,
        &[15, 23].into_iter().collect(),
    )];
    f.resign();
    fails(f.verify(), Check::PcrSelection);
    let mut f = rsa();
    f.attest.quote.selections.push(PcrSelection::new(
        crate::tpm::alg::ALG_SHA1,
        &[0].into_iter().collect(),
    ));
    f.resign();
    fails(f.verify(), Check::PcrSelection);
    let mut f = rsa();
    f.ev.pcrs.insert("sha1".into(), f.ev.pcrs["sha256"].clone());
    fails(f.verify(), Check::PcrSelection);
}

#[test]
fn event_log_tampering_is_event_log() {
    // Altered digest.
    let mut f = rsa();
    f.ev.event_log[3].digests[0].digest[0] ^= 1;
    let e = fails(f.verify(), Check::EventLog);
    assert!(e.to_string().contains("PCR 15"), "{e}");
    // Reordered records (recnums out of order).
    let mut f = rsa();
    f.ev.event_log.swap(0, 3);
    fails(f.verify(), Check::EventLog);
    // Reordered and renumbered: the replay differs.
    let mut f = rsa();
    f.ev.event_log.swap(0, 3);
    for (i, r) in f.ev.event_log.iter_mut().enumerate() {
        r.recnum = i as u64;
    }
    fails(f.verify(), Check::EventLog);
    // Recnum gap.
    let mut f = rsa();
    f.ev.event_log.remove(2);
    fails(f.verify(), Check::EventLog);
    // A quoted PCR's record without a sha256 digest.
    let mut f = rsa();
    f.ev.event_log[1].digests[0].hash_alg = "sha1".into();
    fails(f.verify(), Check::EventLog);
    // A dropped record (renumbered) no longer replays.
    let mut f = rsa();
    f.ev.event_log.remove(4);
    fails(f.verify(), Check::EventLog);
}

#[test]
fn expected_pcrs() {
    let f = rsa();
    let bank = |pcr: u32, v: Vec<u8>| ExpectedPcrs {
        pcrs: [(
            "sha256".to_string(),
            [(pcr, HexDigest(v))].into_iter().collect(),
        )]
        .into_iter()
        .collect(),
    };
    let good = f.ev.pcrs["sha256"][&23].0.clone();
    verify(&f.ev, &f.opts().with_expected(bank(23, good.clone()))).unwrap();
    let mut bad = good.clone();
    bad[31] ^= 1;
    fails(
        verify(&f.ev, &f.opts().with_expected(bank(23, bad))),
        Check::ExpectedPcrs,
    );
    let e = fails(
        verify(&f.ev, &f.opts().with_expected(bank(7, good))),
        Check::ExpectedPcrs,
    );
    assert!(e.to_string().contains("PCR 7"), "{e}");
}

/// Real swtpm output (see `tpm::fixture`) as evidence: verifies, bound to its EK.
#[test]
fn real_swtpm_evidence_verifies() {
    use crate::tpm::fixture as fx;
    let ak_public = hex::decode(fx::AK_PUB).unwrap();
    let trusted = AkKey::from_tpm_public(&Public::parse_tpm2b(&ak_public).unwrap()).unwrap();
    let AkKey::Rsa(rsa_pub) = &trusted else {
        panic!("fixture AK is RSA")
    };
    let bank: PcrBank = [
        (16, HexDigest(hex::decode(fx::PCR16).unwrap())),
        (23, HexDigest(vec![0; 32])),
    ]
    .into_iter()
    .collect();
    let ev = Evidence {
        version: 1,
        host_id: "00".into(),
        nonce: hex::decode(fx::NONCE).unwrap(),
        quote: QuoteBlobs {
            attest: hex::decode(fx::QUOTE_MSG).unwrap(),
            signature: hex::decode(fx::QUOTE_SIG).unwrap(),
        },
        pcrs: [("sha256".to_string(), bank)].into_iter().collect(),
        ak_public_pem: rsa_pub.to_public_key_pem(LineEnding::LF).unwrap(),
        ak_public,
        event_log: vec![],
        ima_log: None,
    };
    let opts = VerifyOptions::new(ev.nonce.clone(), trusted)
        .with_ek_name(&hex::decode(fx::EK_NAME).unwrap())
        .unwrap();
    let v = verify(&ev, &opts).unwrap();
    assert_eq!(hex::encode(&v.ak_name), fx::AK_NAME);
    assert_eq!(hex::encode(&v.ak_qualified_name), fx::AK_QUALIFIED_NAME);
    assert_eq!(v.reset_count, 1);
}

/// The host's IMA list rides in the evidence; it is replayed against the quoted PCR 10
/// and judged by the allowlist when the caller (the inventory) asks, and the result
/// says when it was not.
#[test]
fn the_ima_list_is_judged_by_the_allowlist_the_caller_gives() {
    use crate::ima::list::{encode_binary, ima_ng_entry};
    use crate::ima::{AllowEntry, Allowlist, RuntimeIntegrity, RuntimeIntegrityReport};
    let entries = vec![
        ima_ng_entry("sha256", &[0xa0; 32], "boot_aggregate"),
        ima_ng_entry("sha256", &[1; 32], "/usr/local/bin/tvpd"),
        ima_ng_entry("sha256", &[2; 32], "/usr/bin/tpm2"),
    ];
    let pcr10 = entries
        .iter()
        .fold([0; 32], |p, e| extend_sha256(&p, &e.extended_sha256()));
    let mut f = rsa();
    f.quote_pcr(10, pcr10);
    f.ev.ima_log = Some(encode_binary(&entries));
    let allow = |bytes: &[u8]| {
        RuntimeIntegrity::Ima(Allowlist {
            entries: bytes
                .iter()
                .map(|b| AllowEntry {
                    digest: format!("sha256:{}", hex::encode([*b; 32])),
                    path: String::new(),
                })
                .collect(),
            boot_pcrs: Default::default(),
        })
    };
    let with = |f: &Fake, p: RuntimeIntegrity| verify(&f.ev, &f.opts().with_runtime_integrity(p));
    // No allowlist: verified, and the result says runtime integrity was not checked.
    assert_eq!(
        f.verify().unwrap().runtime_integrity,
        RuntimeIntegrityReport::NotChecked
    );
    assert_eq!(
        with(&f, allow(&[1, 2])).unwrap().runtime_integrity,
        RuntimeIntegrityReport::Ima {
            measured: 3,
            after_quote: 0,
            boot_aggregate_checked: false,
            boot_pcrs_pinned: 0
        }
    );
    let e = fails(with(&f, allow(&[1])), Check::Ima);
    assert!(
        e.to_string().starts_with(&format!(
            "ima: not-allowed /usr/bin/tpm2 sha256:{}",
            "02".repeat(32)
        )),
        "{e}"
    );
    // A list that does not replay to the quoted PCR 10 (tpm2's entry cut out).
    let mut cut = entries.clone();
    cut.remove(2);
    f.ev.ima_log = Some(encode_binary(&cut));
    let e = fails(with(&f, allow(&[1, 2])), Check::Ima);
    assert!(e.to_string().starts_with("ima: replay: "), "{e}");
    // No list, or PCR 10 not quoted, while the inventory requires IMA.
    f.ev.ima_log = None;
    let e = fails(with(&f, allow(&[1, 2])), Check::Ima);
    assert!(e.to_string().starts_with("ima: no-list"), "{e}");
    let mut g = rsa();
    g.ev.ima_log = Some(encode_binary(&entries));
    let e = fails(with(&g, allow(&[1, 2])), Check::Ima);
    assert!(e.to_string().starts_with("ima: pcr10-not-quoted"), "{e}");
    // The field round-trips through JSON as base64 and is left out when absent.
    let json = serde_json::to_string(&g.ev).unwrap();
    assert!(json.contains("\"ima_log\":\""));
    assert_eq!(serde_json::from_str::<Evidence>(&json).unwrap(), g.ev);
    assert!(!serde_json::to_string(&f.ev).unwrap().contains("ima_log"));
}
