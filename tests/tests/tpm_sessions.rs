//! What a TPM bus observer sees: the secret-carrying commands (ActivateCredential,
//! the binding key's unwrap, the audit anchor's NV_Extend) run in a session salted to
//! the EK with parameter encryption, so neither the recovered secret, the unwrapped key
//! nor the extended chain head crosses the bus in the clear; quotes from concurrent
//! clients each carry their own nonce.

use tvp_agent::tpm::{ProvisionConfig, Tpm};
use tvp_tests::{require, Swtpm};

const EK: u32 = 0x8101_0001;
const CC_START_AUTH_SESSION: u32 = 0x176;
const CC_RSA_DECRYPT: u32 = 0x159;
const CC_ACTIVATE_CREDENTIAL: u32 = 0x147;
const CC_NV_EXTEND: u32 = 0x136;
const CC_FLUSH_CONTEXT: u32 = 0x165;
const NV_INDEX: u32 = 0x0150_0000;

fn cfg() -> ProvisionConfig {
    ProvisionConfig {
        ek_handle: EK,
        ak_handle: 0x8101_0002,
        ak_algorithm: Default::default(),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn code(cmd: &[u8]) -> u32 {
    u32::from_be_bytes([cmd[6], cmd[7], cmd[8], cmd[9]])
}

/// The StartAuthSession commands sent just before each command with code `cc`:
/// (tpmKey handle, encryptedSalt size).
fn sessions_before(bus: &[(bool, Vec<u8>)], cc: u32) -> Vec<(u32, u16)> {
    let mut last: Option<(u32, u16)> = None;
    let mut out = Vec::new();
    for (is_cmd, b) in bus {
        if !is_cmd || b.len() < 10 {
            continue;
        }
        if code(b) == CC_START_AUTH_SESSION && b.len() >= 20 {
            let tpm_key = u32::from_be_bytes([b[10], b[11], b[12], b[13]]);
            // nonceCaller (TPM2B) follows the two handles, then encryptedSalt (TPM2B).
            let nlen = u16::from_be_bytes([b[18], b[19]]) as usize;
            let at = 20 + nlen;
            let salt = u16::from_be_bytes([b[at], b[at + 1]]);
            last = Some((tpm_key, salt));
        } else if code(b) == cc {
            out.extend(last.take());
        }
    }
    out
}

fn all_bytes(bus: &[(bool, Vec<u8>)]) -> Vec<u8> {
    bus.iter().flat_map(|(_, b)| b.iter().copied()).collect()
}

#[test]
fn unwrapped_binding_key_never_crosses_the_bus_in_the_clear() {
    require!("swtpm");
    use rsa::pkcs8::DecodePublicKey;
    let swtpm = Swtpm::blank_logged();
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    let key = tpm.create_binding_key(&[15]).expect("binding key");
    let pem = tvp_agent::tpm::keys::public_to_pem(&key.public).unwrap();
    let public = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
    let image_key = tvp_image::ImageKey::generate();
    let wrapped = image_key.wrap(&public).unwrap();
    let unwrapped = tpm.binding_unwrap(&key, &wrapped).expect("unwrap");
    // The legitimate path: the right key comes back.
    assert_eq!(&unwrapped[..], image_key.as_bytes());
    drop(tpm);
    let bus = swtpm.bus();
    assert!(
        bus.iter()
            .any(|(c, b)| *c && b.len() >= 10 && code(b) == CC_RSA_DECRYPT),
        "the bus log must show the RSA_Decrypt (swtpm logging works)"
    );
    // The attack: read the bus. Without parameter encryption the key is in the response.
    assert!(
        !contains(&all_bytes(&bus), image_key.as_bytes()),
        "the unwrapped image key crossed the TPM bus in the clear"
    );
    // Nor is the wrapped key visible as sent (command parameter encryption).
    assert!(!contains(&all_bytes(&bus), &wrapped[..64]));
    let s = sessions_before(&bus, CC_RSA_DECRYPT);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].0, EK, "the unwrap session must be salted to the EK");
    assert!(
        s[0].1 >= 256,
        "RSA-2048 encrypted salt expected, got {}",
        s[0].1
    );
}

#[test]
fn audit_anchor_extend_is_encrypted_on_the_bus_in_one_reused_salted_session() {
    require!("swtpm");
    use tvp_agent::tpm::nv::NvAnchor;
    let swtpm = Swtpm::blank_logged();
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    assert_eq!(
        tpm.nv_anchor_open(NV_INDEX).expect("define"),
        NvAnchor::Unwritten
    );
    let digests: Vec<[u8; 32]> = (0..3).map(|_| rand::random()).collect();
    let mut want = [0u8; 32];
    for d in &digests {
        tpm.nv_anchor_extend(NV_INDEX, d).expect("extend");
        want = tvp_audit::anchor::extend(&want, d);
    }
    // The legitimate path: the TPM extended exactly these digests (the first extend
    // names the index unwritten, the later ones written: both HMACs verified).
    assert_eq!(
        tpm.nv_anchor_read(NV_INDEX).expect("read"),
        NvAnchor::Value(want)
    );
    // A fresh process (no cached state) extends through a new session too.
    drop(tpm);
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("reopen");
    assert_eq!(
        tpm.nv_anchor_open(NV_INDEX).expect("open"),
        NvAnchor::Value(want)
    );
    let last: [u8; 32] = rand::random();
    tpm.nv_anchor_extend(NV_INDEX, &last)
        .expect("extend after reopen");
    want = tvp_audit::anchor::extend(&want, &last);
    assert_eq!(
        tpm.nv_anchor_read(NV_INDEX).expect("read"),
        NvAnchor::Value(want)
    );
    drop(tpm);

    let bus = swtpm.bus();
    let extends: Vec<&Vec<u8>> = bus
        .iter()
        .filter(|(c, b)| *c && b.len() >= 10 && code(b) == CC_NV_EXTEND)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(extends.len(), 4, "the bus log must show each NV_Extend");
    // The attack: read the bus. With the empty-password session the digest is the
    // command's last 32 bytes, in the clear.
    let bytes = all_bytes(&bus);
    for d in digests.iter().chain([&last]) {
        assert!(
            !contains(&bytes, d),
            "an extended chain head crossed the TPM bus in the clear"
        );
    }
    for e in &extends {
        // authorizationSize, then the session handle: an HMAC session (0x02......),
        // not TPM_RS_PW, with the decrypt attribute set.
        let session = u32::from_be_bytes([e[22], e[23], e[24], e[25]]);
        assert_eq!(session >> 24, 0x02, "NV_Extend not in an HMAC session");
        let nlen = u16::from_be_bytes([e[26], e[27]]) as usize;
        assert_eq!(e[28 + nlen] & 0x20, 0x20, "parameter encryption off");
    }
    // The process flushes its session when it closes the TPM (no slot left held):
    // after the last extend, the bus shows a FlushContext of its session.
    let last_at = bus
        .iter()
        .rposition(|(c, b)| *c && b.len() >= 10 && code(b) == CC_NV_EXTEND)
        .unwrap();
    let e = &bus[last_at].1;
    let handle = [e[22], e[23], e[24], e[25]];
    assert!(
        bus[last_at..].iter().any(|(c, b)| *c
            && b.len() >= 14
            && code(b) == CC_FLUSH_CONTEXT
            && b[10..14] == handle),
        "the NV session was left loaded in the TPM"
    );
    // One salted session per process: three extends share the first one.
    let s = sessions_before(&bus, CC_NV_EXTEND);
    assert_eq!(s.len(), 2, "one session start per process expected: {s:?}");
    for (key, salt) in s {
        assert_eq!(key, EK, "the NV session must be salted to the EK");
        assert!(salt >= 256, "RSA-2048 encrypted salt expected, got {salt}");
    }
}

#[test]
fn activate_credential_runs_in_a_session_salted_to_the_ek() {
    require!("swtpm", "tpm2_makecredential");
    let swtpm = Swtpm::blank_logged();
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    let id = tpm.identity().clone();
    let secret: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let (blob, enc) = tvp_tests::make_credential(
        &swtpm.scratch("cred"),
        &id.ek_public_pem,
        &hex::encode(&id.ak_name),
        &secret,
    );
    let got = tpm.activate_credential(&blob, &enc).expect("activate");
    assert_eq!(got, secret);
    drop(tpm);
    let bus = swtpm.bus();
    assert!(!contains(&all_bytes(&bus), &secret));
    let s = sessions_before(&bus, CC_ACTIVATE_CREDENTIAL);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(
        s[0].0, EK,
        "the credential session must be salted to the EK"
    );
    assert!(
        s[0].1 >= 256,
        "RSA-2048 encrypted salt expected, got {}",
        s[0].1
    );
}

#[test]
fn quotes_from_16_concurrent_clients_each_carry_their_own_nonce() {
    require!("swtpm");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let swtpm = Swtpm::blank();
    let t = tvp_tests::Tvpd::start(&swtpm, &swtpm.scratch("a"), &[]);
    let host = t.api_json("GET", "/v1/host", None);
    let ak = tvp_verifier::AkKey::from_pem(host["ak_public_pem"].as_str().unwrap()).unwrap();
    let results: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let mut got = Vec::new();
                    for _ in 0..4 {
                        let nonce: Vec<u8> = (0..20).map(|_| rand::random::<u8>()).collect();
                        let ev = t.api_json(
                            "POST",
                            "/v1/host/quote",
                            Some(&format!(
                                "{{\"nonce\":\"{}\",\"pcrs\":[15,16,23]}}",
                                hex::encode(&nonce)
                            )),
                        );
                        assert_eq!(ev["nonce"], hex::encode(&nonce));
                        let q = &ev["quote"];
                        let attest = b64.decode(q["attest"].as_str().unwrap()).unwrap();
                        let sig = b64.decode(q["signature"].as_str().unwrap()).unwrap();
                        got.push((nonce, attest, sig));
                    }
                    got
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(results.len(), 64);
    for (i, (nonce, attest, sig)) in results.iter().enumerate() {
        let sig = tvp_verifier::tpm::Signature::parse(sig).unwrap();
        ak.verify(attest, &sig)
            .expect("AK signature over each quote");
        // TPMS_ATTEST: magic, type, qualifiedSigner (TPM2B), extraData (TPM2B).
        let n = u16::from_be_bytes([attest[6], attest[7]]) as usize;
        let at = 8 + n;
        let len = u16::from_be_bytes([attest[at], attest[at + 1]]) as usize;
        assert_eq!(
            &attest[at + 2..at + 2 + len],
            &nonce[..],
            "quote {i} is bound to another client's nonce"
        );
    }
}
