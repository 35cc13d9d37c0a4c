//! Real TPM output: a private swtpm, tpm2-tools for EK/AK/quote, our verifier on the
//! result, and our `tpm2_checkquote` export cross-checked by tpm2-tools itself.
//! Needs swtpm and tpm2-tools (`require!`: a failure under `CI` or `TVP_REQUIRE_ALL=1`,
//! a logged skip otherwise).
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

mod common;
use common::{read, Swtpm};

use sha2::{Digest, Sha256};
use tvp_test_env::require;
use tvp_verifier::eventlog::{extend_sha256, CelDigest, CelRecord, EventContent, EventKind};
use tvp_verifier::tpm::Public;
use tvp_verifier::tpm2_tools::export_for_checkquote;
use tvp_verifier::{verify, AkKey, Check, Evidence, HexDigest, PcrBank, QuoteBlobs, VerifyOptions};

fn record(recnum: u64, pcr: u32, what: &str) -> (CelRecord, [u8; 32]) {
    let digest: [u8; 32] = Sha256::digest(what.as_bytes()).into();
    let rec = CelRecord {
        recnum,
        pcr,
        digests: vec![CelDigest {
            hash_alg: "sha256".into(),
            digest: digest.to_vec(),
        }],
        content_type: "tvp".into(),
        content: EventContent {
            event_type: EventKind::PlatformArtefact,
            description: what.into(),
        },
    };
    (rec, digest)
}

/// Run `tpm2_checkquote` on our export of `ev`; true if it accepts.
fn checkquote(tpm: &Swtpm, ev: &Evidence, sub: &str, trusted_pem: &str) -> bool {
    let dir = tpm.path(sub);
    std::fs::create_dir(&dir).unwrap();
    let files = export_for_checkquote(ev, &dir, Some(trusted_pem)).unwrap();
    let out = Command::new("tpm2_checkquote")
        .args(&files.args)
        .output()
        .unwrap();
    eprintln!(
        "tpm2_checkquote {:?} -> {}\n{}",
        files.args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

#[test]
fn swtpm_quote_verifies_and_matches_tpm2_checkquote() {
    require!(
        "swtpm",
        "tpm2_createek",
        "tpm2_createak",
        "tpm2_readpublic",
        "tpm2_flushcontext",
        "tpm2_pcrextend",
        "tpm2_pcrread",
        "tpm2_quote",
        "tpm2_checkquote",
    );
    // The VM quote's PCRs, and an IMA host's (0-10 as well: more than the 8 values one
    // TPML_DIGEST holds, which tpm2-tools' raw values format cannot take).
    let vm: Vec<u32> = vec![16, 23];
    let ima: Vec<u32> = (0..=10).chain([16, 23]).collect();
    for (key_alg, scheme, pcrs) in [("rsa", "rsassa", &vm), ("ecc", "ecdsa", &ima)] {
        eprintln!("--- AK {key_alg}/{scheme}, PCRs {pcrs:?}");
        quote_round_trip(key_alg, scheme, pcrs);
    }
}

/// One fresh swtpm: EK, an AK of `key_alg` signing with `scheme`, a quote over `pcrs`
/// (ascending, ending with 16 and 23), checks.
fn quote_round_trip(key_alg: &str, scheme: &str, pcrs: &[u32]) {
    let tpm = Swtpm::start();

    tpm.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    tpm.tool(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        key_alg,
        "-g",
        "sha256",
        "-s",
        scheme,
        "-u",
        "ak.pub",
        "-n",
        "ak.name",
    ]);
    tpm.tool(&[
        "tpm2_readpublic",
        "-c",
        "ak.ctx",
        "-f",
        "pem",
        "-o",
        "ak.pem",
    ]);

    // Measure into PCR 23 (two events) and 16 (one), logging each.
    let events = [
        (23, "firmware image"),
        (23, "vm configuration"),
        (16, "tunnel"),
    ];
    let mut log = Vec::new();
    for (i, (pcr, what)) in events.iter().enumerate() {
        let (rec, digest) = record(i as u64, *pcr, what);
        tpm.tool(&[
            "tpm2_pcrextend",
            &format!("{pcr}:sha256={}", hex::encode(digest)),
        ]);
        log.push(rec);
    }
    let nonce: [u8; 20] = Sha256::digest(b"swtpm test nonce")[..20]
        .try_into()
        .unwrap();
    let nonce_hex = hex::encode(nonce);
    let list = format!(
        "sha256:{}",
        pcrs.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    tpm.tool(&[
        "tpm2_quote",
        "-c",
        "ak.ctx",
        "-l",
        &list,
        "-q",
        &nonce_hex,
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-o",
        "quote.pcrs",
        "-g",
        "sha256",
    ]);
    tpm.tool(&["tpm2_pcrread", &list, "-o", "pcrs.bin"]);

    let values = read(&tpm.path("pcrs.bin"));
    assert_eq!(values.len(), 32 * pcrs.len());
    let bank: PcrBank = pcrs
        .iter()
        .zip(values.chunks(32))
        .map(|(&pcr, v)| (pcr, HexDigest(v.to_vec())))
        .collect();
    // Our replay agrees with the TPM independently of the verifier.
    let mut p23 = [0u8; 32];
    for r in &log[..2] {
        p23 = extend_sha256(&p23, &r.sha256().unwrap());
    }
    assert_eq!(&values[values.len() - 32..], &p23);

    let ak_pem = String::from_utf8(read(&tpm.path("ak.pem"))).unwrap();
    let ev = Evidence {
        version: 1,
        host_id: hex::encode(Sha256::digest(read(&tpm.path("ek.pub")))),
        nonce: nonce.to_vec(),
        quote: QuoteBlobs {
            attest: read(&tpm.path("quote.msg")),
            signature: read(&tpm.path("quote.sig")),
        },
        pcrs: [("sha256".to_string(), bank)].into_iter().collect(),
        ak_public_pem: ak_pem.clone(),
        ak_public: read(&tpm.path("ak.pub")),
        event_log: log,
        ima_log: None,
    };

    let ek = Public::parse_tpm2b(&read(&tpm.path("ek.pub"))).unwrap();
    let opts = VerifyOptions::new(nonce.to_vec(), AkKey::from_pem(&ak_pem).unwrap())
        .with_ek_name(&ek.name().unwrap())
        .unwrap();
    let verified = verify(&ev, &opts).expect("real swtpm evidence verifies");
    assert_eq!(verified.ak_name, read(&tpm.path("ak.name")));
    assert_eq!(verified.replayed.len(), 2);

    // Through JSON, as it travels.
    let json = serde_json::to_string(&ev).unwrap();
    tvp_verifier::verify_json(&json, &opts).unwrap();

    // Tampering is rejected by us...
    let mut bad_pcr = ev.clone();
    bad_pcr
        .pcrs
        .get_mut("sha256")
        .unwrap()
        .get_mut(&16)
        .unwrap()
        .0[0] ^= 1;
    assert_eq!(
        verify(&bad_pcr, &opts).unwrap_err().check(),
        Check::PcrDigest
    );
    let mut bad_sig = ev.clone();
    let n = bad_sig.quote.signature.len();
    bad_sig.quote.signature[n - 1] ^= 1;
    assert_eq!(
        verify(&bad_sig, &opts).unwrap_err().check(),
        Check::Signature
    );
    let mut bad_log = ev.clone();
    bad_log.event_log[2].digests[0].digest[0] ^= 1;
    assert_eq!(
        verify(&bad_log, &opts).unwrap_err().check(),
        Check::EventLog
    );
    let mut other_nonce = opts.clone();
    other_nonce.nonce[0] ^= 1;
    assert_eq!(verify(&ev, &other_nonce).unwrap_err().check(), Check::Nonce);

    // ...and by tpm2_checkquote on our export, which accepts the good evidence.
    assert!(
        checkquote(&tpm, &ev, "good", &ak_pem),
        "good evidence rejected"
    );
    assert!(!checkquote(&tpm, &bad_pcr, "bad-pcr", &ak_pem));
    assert!(!checkquote(&tpm, &bad_sig, "bad-sig", &ak_pem));
    let mut bad_nonce = ev.clone();
    bad_nonce.nonce[0] ^= 1;
    assert!(!checkquote(&tpm, &bad_nonce, "bad-nonce", &ak_pem));
    // Our export of the message and signature is byte-identical to tpm2_quote's.
    assert_eq!(
        read(&tpm.path("good/quote.msg")),
        read(&tpm.path("quote.msg"))
    );
    assert_eq!(
        read(&tpm.path("good/quote.sig")),
        read(&tpm.path("quote.sig"))
    );
    // And so is the PCR file: selection and values as `tpm2_quote -o` writes them.
    assert_eq!(
        read(&tpm.path("good/quote.pcrs")),
        read(&tpm.path("quote.pcrs"))
    );
}
