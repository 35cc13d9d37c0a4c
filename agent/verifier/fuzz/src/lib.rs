//! Shared pieces of the tvp-verifier fuzz targets: a real, valid evidence document
//! (built from one swtpm session's output: `tpm2_createek`, `tpm2_createak`,
//! `tpm2_pcrextend 16:sha256=00..01`, `tpm2_quote -l sha256:16,23 -q 0011223344556677`),
//! the options that trust its AK, and the invariant every accepted input must satisfy.

use std::sync::OnceLock;

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};
use tvp_verifier::eventlog::{CelRecord, EventKind};
use tvp_verifier::tpm::Public;
use tvp_verifier::{
    verify, AkKey, Evidence, HexDigest, PcrBank, QuoteBlobs, VerifiedEvidence, VerifyOptions,
};

/// `tpm2_quote -m`: marshalled TPMS_ATTEST.
pub const QUOTE_MSG: &str = "ff54434780180022000bc4bb6569c4c907fdb5b91c441d29b002a4b60d1c5f2358f7f23af595040a3edc0008001122334455667700000000000019f0000000010000000001201910230016363600000001000b0300008100206e5a4ff3f84705f86e2ffa660b87b74f3ab7a24c1f17291bfba347e25e08ca08";
/// `tpm2_quote -s`: marshalled TPMT_SIGNATURE.
pub const QUOTE_SIG: &str = "0014000b0100b8469e01f9ddd5c22197cd5a40e7337924d4a75dee7366cbdc46e0f4d5c36b8477e58fb4958bed67cdab0e6bcdcb9851d3d7b2341d497eb78c65034c2dde5d10a3d90c18b306fde7c0c1d3495e4edd68c428d4d78487f2ec8243fa1f7f9791d94187c3c2296faf6a34ccee7be4bbc4791fd90343f2b4712483391d6e8eb24e3ecdee98936603dd3edee2ca3a56b82900e40beafb8152258ca22f8a4d8d209df8c725251ff1a8baef26ff7bd89b966cac65e5181358cf8814eb60aeb239e73d8ee8fa42e45c53cbbb78101829c23d258cf0568c8c1f9f279187d658178dceecbacf8fa1e5b73e147cfbc9e6326c87a472ffce0a518e47ed42cdbee3810bf67231";
/// `tpm2_createak -u`: marshalled TPM2B_PUBLIC of the AK.
pub const AK_PUB: &str = "01180001000b00050072000000100014000b0800000000000100c8f566171d325bd8947981855e2ac7a7329ac2e44270fc04ea027762a5df4aa7035528fb532ded30781ef3bb2cfc6701c835633961a5e33058be6ad980364db1582911ed99534cf8d7e3f94110400181dda04dd9df06a5cd2c4e2ec647e17e5f3d53ecda6be00e8419f57a5a5bfd7d703e853e16cdf6fa222d6df997f7eee2adca3a3b2b101a2c974d6cf93838fe4cafd71181e9e837120f0363a3ce98fd107c68a26e2fb5359d8cc714be75ab1e4f1b6ffa9944205a2ba1163a0a75f2bc0c4d7d267029f15432790678a55dd0b84da9192a6781e40bf5dd8cdd86102f8f9d590f6a31b5cdecb7c93e0f5d76eb84cee978d0356bc88db56edd6502b2dc5da817";
/// Name of the EK (the AK's parent).
pub const EK_NAME: &str = "000b938ba9acc00abe6fbf142e29f0c21a252c55991fa2a96e7ceca96faacc17a9c9";
/// The nonce passed with `-q`.
pub const NONCE: &str = "0011223344556677";
/// PCR 16 after one extend of 00..01 from zero; PCR 23 was zero.
pub const PCR16: &str = "506b129475473baeac753d929992ca34aebdb26fdb854292df0a2e8835d623f4";

/// The valid evidence, the options that accept it, and what they accept it as.
pub struct Base {
    /// A valid evidence document.
    pub evidence: Evidence,
    /// Its JSON.
    pub json: String,
    /// Options trusting the swtpm AK, bound to its EK, with the quote's nonce.
    pub opts: VerifyOptions,
    /// What `verify` returns for it.
    pub verified: VerifiedEvidence,
}

impl Base {
    /// A base from a valid `evidence` and the options it verifies under (`what` names
    /// it if it does not).
    fn new(evidence: Evidence, opts: VerifyOptions, what: &str) -> Base {
        let verified = verify(&evidence, &opts).unwrap_or_else(|e| panic!("{what} verifies: {e}"));
        let json = serde_json::to_string_pretty(&evidence).unwrap();
        Base {
            evidence,
            json,
            opts,
            verified,
        }
    }
}

fn record(recnum: u64, pcr: u32, digest: [u8; 32], kind: EventKind, what: &str) -> CelRecord {
    CelRecord::tvp(recnum, pcr, digest, kind, what.to_string())
}

/// An event log of three records for PCRs 15 and 23 (and one record of PCR 14, which
/// the quotes here do not cover).
pub fn base_log() -> Vec<CelRecord> {
    let d = |s: &[u8]| -> [u8; 32] { Sha256::digest(s).into() };
    vec![
        record(
            0,
            15,
            d(b"tvpd"),
            EventKind::PlatformArtefact,
            "/usr/bin/tvpd",
        ),
        record(1, 14, d(b"other"), EventKind::PlatformArtefact, "unquoted"),
        record(
            2,
            23,
            d(b"firmware"),
            EventKind::VmMeasurement,
            "vm-1 firmware",
        ),
        record(
            3,
            15,
            d(b"config"),
            EventKind::PlatformConfig,
            "tvpd configuration",
        ),
        record(
            4,
            23,
            d(b"vm config"),
            EventKind::VmMeasurement,
            "vm-1 configuration page",
        ),
    ]
}

/// Which valid document a target starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The real swtpm quote; its log has only a record of a PCR the quote does not
    /// cover (the swtpm session's PCR 16 extend is not reproducible from its digest).
    Swtpm,
    /// A quote built and signed like a TPM would, by a fixed P-256 AK, over PCRs 15, 16
    /// and 23, with a log whose records replay to PCRs 15 and 23.
    P256,
}

/// The base case of `which`, built once.
pub fn base_of(which: Which) -> &'static Base {
    match which {
        Which::Swtpm => base(),
        Which::P256 => p256_base(),
    }
}

/// The real swtpm base case, built once.
pub fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let ak_public = hex::decode(AK_PUB).unwrap();
        let trusted = AkKey::from_tpm_public(&Public::parse_tpm2b(&ak_public).unwrap()).unwrap();
        let AkKey::Rsa(rsa_pub) = &trusted else {
            panic!("the fixture AK is RSA")
        };
        let bank: PcrBank = [
            (16, HexDigest(hex::decode(PCR16).unwrap())),
            (23, HexDigest(vec![0; 32])),
        ]
        .into_iter()
        .collect();
        let evidence = Evidence {
            version: 1,
            host_id: hex::encode(Sha256::digest(b"ek spki")),
            nonce: hex::decode(NONCE).unwrap(),
            quote: QuoteBlobs {
                attest: hex::decode(QUOTE_MSG).unwrap(),
                signature: hex::decode(QUOTE_SIG).unwrap(),
            },
            pcrs: [("sha256".to_string(), bank)].into_iter().collect(),
            ak_public_pem: rsa_pub.to_public_key_pem(LineEnding::LF).unwrap(),
            ak_public,
            event_log: vec![record(
                0,
                15,
                Sha256::digest(b"tvpd").into(),
                EventKind::PlatformArtefact,
                "/usr/bin/tvpd",
            )],
            ima_log: None,
        };
        let opts = VerifyOptions::new(evidence.nonce.clone(), trusted)
            .with_ek_name(&hex::decode(EK_NAME).unwrap())
            .unwrap();
        Base::new(evidence, opts, "the base evidence")
    })
}

/// SHA-256 digests of the records of `pcr`, in log order.
fn sha256_digests(log: &[CelRecord], pcr: u32) -> Vec<Vec<u8>> {
    log.iter()
        .filter(|r| r.pcr == pcr)
        .flat_map(|r| r.digests.iter().filter(|d| d.hash_alg == "sha256"))
        .map(|d| d.digest.clone())
        .collect()
}

/// The invariant of an accepted document: everything the verifier vouches for is what
/// the TPM signed. Only what no signature covers may differ from the base: `host_id`
/// (bound by the caller's choice of AK), the signature's and the PEM's encodings, the
/// records of PCRs the quote does not cover, and record descriptions. A quoted PCR may
/// lose all its records (docs/evidence.md: "a quoted PCR without records is not
/// checked by `event-log`"), which the result shows: it is then not in `replayed`.
pub fn assert_justified(which: Which, ev: &Evidence, v: &VerifiedEvidence) {
    let b = base_of(which);
    assert_eq!(
        ev.quote.attest, b.evidence.quote.attest,
        "accepted an attest the TPM did not sign"
    );
    let mut want = b.verified.clone();
    want.host_id = ev.host_id.clone();
    want.replayed.retain(|pcr, _| v.replayed.contains_key(pcr));
    assert_eq!(
        *v, want,
        "accepted evidence says something the quote does not"
    );
    assert_eq!(ev.nonce, b.evidence.nonce);
    for pcr in v.pcrs.keys() {
        let got = sha256_digests(&ev.event_log, *pcr);
        if v.replayed.contains_key(pcr) {
            assert_eq!(
                got,
                sha256_digests(&b.evidence.event_log, *pcr),
                "accepted a different event sequence for quoted PCR {pcr}"
            );
        } else {
            assert!(
                got.is_empty(),
                "quoted PCR {pcr} has records but was not replayed"
            );
        }
    }
}

/// The P-256 base case, built once.
pub fn p256_base() -> &'static Base {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use tvp_verifier::tpm::alg::{ALG_ECDSA, ALG_NULL, ALG_SHA256, ECC_NIST_P256, RH_ENDORSEMENT};
    use tvp_verifier::tpm::public::{marshal_tpmt, tpm2b_public};
    use tvp_verifier::tpm::{
        hierarchy_qualified_name, qualified_name, Attest, ClockInfo, PcrSelection, PublicKey,
        QuoteInfo, Scheme, Signature,
    };
    use tvp_verifier::verify::pcr_composite_digest;
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let key = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let tpmt = marshal_tpmt(
            ALG_SHA256,
            0x0005_0072,
            &[],
            None,
            Scheme {
                alg: ALG_ECDSA,
                hash: Some(ALG_SHA256),
            },
            &PublicKey::Ecc {
                curve: ECC_NIST_P256,
                kdf: Scheme {
                    alg: ALG_NULL,
                    hash: None,
                },
                x: point.x().unwrap().to_vec(),
                y: point.y().unwrap().to_vec(),
            },
        );
        let name = Public::parse_tpmt(&tpmt).unwrap().name().unwrap();
        let mut ek_name = vec![0x00, 0x0b];
        ek_name.extend_from_slice(&Sha256::digest(b"fuzz EK"));
        let ek_qn = qualified_name(&hierarchy_qualified_name(RH_ENDORSEMENT), &ek_name).unwrap();
        let log = base_log();
        let mut pcrs =
            tvp_verifier::replay_sha256(&log, Some(&[15, 23].into_iter().collect())).unwrap();
        pcrs.insert(16, [0x16; 32]);
        let nonce = b"fuzz nonce 0123456789".to_vec();
        let attest = Attest {
            qualified_signer: qualified_name(&ek_qn, &name).unwrap(),
            extra_data: nonce.clone(),
            clock_info: ClockInfo {
                clock: 1000,
                reset_count: 3,
                restart_count: 0,
                safe: true,
            },
            firmware_version: 7,
            quote: QuoteInfo {
                selections: vec![PcrSelection::new(
                    ALG_SHA256,
                    &pcrs.keys().copied().collect(),
                )],
                pcr_digest: pcr_composite_digest(&pcrs).to_vec(),
            },
        }
        .marshal();
        let sig: p256::ecdsa::Signature = key.sign_prehash(&Sha256::digest(&attest)).unwrap();
        let (r, s) = sig.split_bytes();
        let signature = Signature::Ecdsa {
            hash: ALG_SHA256,
            r: r.to_vec(),
            s: s.to_vec(),
        };
        let pem = {
            use p256::pkcs8::EncodePublicKey as _;
            p256::PublicKey::from(key.verifying_key())
                .to_public_key_pem(LineEnding::LF)
                .unwrap()
        };
        let evidence = Evidence {
            version: 1,
            host_id: hex::encode(Sha256::digest(b"fuzz ek spki")),
            nonce: nonce.clone(),
            quote: QuoteBlobs {
                attest,
                signature: signature.marshal(),
            },
            pcrs: [(
                "sha256".to_string(),
                pcrs.iter()
                    .map(|(k, v)| (*k, HexDigest(v.to_vec())))
                    .collect(),
            )]
            .into_iter()
            .collect(),
            ak_public_pem: pem.clone(),
            ak_public: tpm2b_public(&tpmt),
            event_log: log,
            ima_log: None,
        };
        let opts = VerifyOptions::new(nonce, AkKey::from_pem(&pem).unwrap())
            .with_ek_name(&ek_name)
            .unwrap();
        Base::new(evidence, opts, "the P-256 base evidence")
    })
}

/// The PEM of an RSA key that is not the AK (its modulus differs in one byte).
pub fn other_ak_pem() -> String {
    use rsa::traits::PublicKeyParts;
    let AkKey::Rsa(k) = &base().opts.trusted_ak else {
        panic!("the fixture AK is RSA")
    };
    let mut n = k.n().to_bytes_be();
    n[5] ^= 0x10;
    rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(&n), k.e().clone())
        .unwrap()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// Writes the seed corpora of this crate's targets (real formats) into `corpus/`:
/// `cargo test --manifest-path agent/verifier/fuzz/Cargo.toml -- --ignored write_seeds`.
#[cfg(test)]
mod seeds {
    use super::*;

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
        let b = base();
        put("evidence_json", "swtpm-evidence.json", b.json.as_bytes());
        let compact = serde_json::to_string(&b.evidence).unwrap();
        put(
            "evidence_json",
            "swtpm-evidence-compact.json",
            compact.as_bytes(),
        );
        put(
            "evidence_json",
            "p256-evidence.json",
            p256_base().json.as_bytes(),
        );
        let log = serde_json::to_string_pretty(&base_log()).unwrap();
        put("eventlog_replay", "log.json", log.as_bytes());
        put("eventlog_replay", "empty.json", b"[]");
        let mut t = vec![0u8];
        t.extend(hex::decode(QUOTE_MSG).unwrap());
        put("tpm_structs", "attest-quote", &t);
        let mut t = vec![1u8];
        t.extend(hex::decode(QUOTE_SIG).unwrap());
        put("tpm_structs", "signature-rsassa", &t);
        let mut t = vec![2u8];
        t.extend(hex::decode(AK_PUB).unwrap());
        put("tpm_structs", "public-ak", &t);
        put("evidence_mutate", "no-edit", b"");
        put("evidence_mutate", "p256-no-edit", b"\x01");
    }

    #[test]
    fn base_verifies_and_other_key_differs() {
        let _ = base();
        let _ = p256_base();
        assert_ne!(other_ak_pem(), base().evidence.ak_public_pem);
    }
}
