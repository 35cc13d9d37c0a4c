//! The vTPM identity chain with software keys standing in for the TPMs: the good chain
//! verifies, and each attack is refused by its own check.

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};

use super::cert::{key_certificate_for, to_pem};
use super::*;
use crate::tpm::alg::{ALG_ECDSA, ALG_NULL, ALG_SHA256};
use crate::tpm::public::{marshal_tpmt, Scheme, SymDef};
use crate::tpm::reader::Writer;
use crate::tpm::{Attest, PcrSelection, PublicKey, QuoteInfo, Signature};

const HOST: &str = "4f1c0d8e9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d";
const VM: &str = "vm-7";
const NONCE: &[u8] = b"tenant nonce 0123456789abcdef!!!";
const NOT_BEFORE: u64 = 1_796_000_000;

/// fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|sign.
const CA_ATTRS: u32 = 0x0004_0072;
/// The TCG default EK template's: fixedTPM|fixedParent|sensitiveDataOrigin|
/// adminWithPolicy|restricted|decrypt.
const EK_ATTRS: u32 = 0x0003_00b2;
/// fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign.
const AK_ATTRS: u32 = 0x0005_0072;
/// The TCG default EK policy (PolicySecret(TPM_RH_ENDORSEMENT)).
const EK_POLICY: &str = "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32].into()).unwrap()
}

fn ecc(k: &SigningKey) -> PublicKey {
    let p = k.verifying_key().to_encoded_point(false);
    PublicKey::Ecc {
        curve: 3,
        kdf: Scheme {
            alg: ALG_NULL,
            hash: None,
        },
        x: p.x().unwrap().to_vec(),
        y: p.y().unwrap().to_vec(),
    }
}

const ECDSA_SHA256: Scheme = Scheme {
    alg: ALG_ECDSA,
    hash: Some(ALG_SHA256),
};

fn signing_tpmt(k: &SigningKey, attrs: u32) -> Vec<u8> {
    marshal_tpmt(ALG_SHA256, attrs, &[], None, ECDSA_SHA256, &ecc(k))
}

fn ek_tpmt(k: &SigningKey, attrs: u32) -> Vec<u8> {
    let aes128cfb = SymDef {
        alg: 0x0006,
        key_bits: 128,
        mode: 0x0043,
    };
    let null = Scheme {
        alg: ALG_NULL,
        hash: None,
    };
    let policy = hex::decode(EK_POLICY).unwrap();
    marshal_tpmt(ALG_SHA256, attrs, &policy, Some(aes128cfb), null, &ecc(k))
}

/// A software key as the vTPM CA's signer.
struct Soft(SigningKey);

impl CaSigner for Soft {
    fn sign_digest(&mut self, digest: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), String> {
        let sig: p256::ecdsa::Signature = self.0.sign_prehash(digest).map_err(|e| e.to_string())?;
        let (r, s) = sig.split_bytes();
        Ok((r.into(), s.into()))
    }
}

fn tpm_sign(k: &SigningKey, msg: &[u8]) -> Vec<u8> {
    let sig: p256::ecdsa::Signature = k.sign_prehash(&Sha256::digest(msg)).unwrap();
    let (r, s) = sig.split_bytes();
    Signature::Ecdsa {
        hash: ALG_SHA256,
        r: r.to_vec(),
        s: s.to_vec(),
    }
    .marshal()
}

fn name(tpmt: &[u8]) -> Vec<u8> {
    let mut n = ALG_SHA256.to_be_bytes().to_vec();
    n.extend_from_slice(&Sha256::digest(tpmt));
    n
}

/// A TPMS_ATTEST of a TPM2_Certify of the object named `name`.
fn certify_attest(name: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(0xff54_4347)
        .u16(0x8017)
        .tpm2b(&[0x00, 0x0b, 0x11, 0x22])
        .tpm2b(nonce)
        .u64(1000)
        .u32(3)
        .u32(0)
        .u8(1)
        .u64(0x2019_1023)
        .tpm2b(name)
        .tpm2b(&[0x00, 0x0b, 0x33]);
    w.into_bytes()
}

/// Every key of one host and VM.
struct Keys {
    host_ak: SigningKey,
    ca: SigningKey,
    ek: SigningKey,
    ak: SigningKey,
}

fn keys() -> Keys {
    Keys {
        host_ak: key(1),
        ca: key(2),
        ek: key(3),
        ak: key(4),
    }
}

/// What tvpd would build, from parts tests can change.
struct Parts {
    ca_public: Vec<u8>,
    ek_public: Vec<u8>,
    ak_public: Vec<u8>,
}

fn parts(k: &Keys) -> Parts {
    Parts {
        ca_public: signing_tpmt(&k.ca, CA_ATTRS),
        ek_public: ek_tpmt(&k.ek, EK_ATTRS),
        ak_public: signing_tpmt(&k.ak, AK_ATTRS),
    }
}

fn cert(k: &Keys, p: &Parts, role: KeyRole, public: &[u8]) -> String {
    let s = VtpmSubject {
        host_id: HOST,
        vm_id: VM,
        role,
        public,
    };
    let der = key_certificate(&p.ca_public, &s, NOT_BEFORE, &mut Soft(k.ca.clone())).unwrap();
    to_pem(&der)
}

fn identity(k: &Keys, p: &Parts) -> VtpmIdentity {
    let attest = certify_attest(&name(&p.ca_public), NONCE);
    let ca = ca_certificate(&p.ca_public, HOST, NOT_BEFORE, &mut Soft(k.ca.clone())).unwrap();
    VtpmIdentity {
        version: VTPM_IDENTITY_VERSION,
        host_id: HOST.into(),
        vm_id: VM.into(),
        ca_public: p.ca_public.clone(),
        ca_certify: QuoteBlobs {
            signature: tpm_sign(&k.host_ak, &attest),
            attest,
        },
        ca_certificate_pem: to_pem(&ca),
        ek_certificate_pem: cert(k, p, KeyRole::Ek, &p.ek_public),
        ak_certificate_pem: cert(k, p, KeyRole::Ak, &p.ak_public),
    }
}

fn host_ak(k: &Keys) -> AkKey {
    AkKey::P256(k.host_ak.verifying_key().into())
}

const EXPECT: VtpmExpect<'static> = VtpmExpect {
    host_id: Some(HOST),
    vm_id: VM,
};

fn check(id: &VtpmIdentity, k: &Keys) -> Result<VerifiedVtpm, VtpmError> {
    verify_identity(id, &host_ak(k), NONCE, &EXPECT)
}

fn code(r: Result<VerifiedVtpm, VtpmError>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(e) => {
            eprintln!("{e}");
            assert!(e.to_string().starts_with(e.code()));
            e.code()
        }
    }
}

/// tvpctl's tests read a fixture identity (agent/ctl/tests/data/vtpm-identity.json):
/// it must be what this chain makes (the keys and ECDSA are deterministic), and it must
/// verify. `TVP_UPDATE_FIXTURES=1` rewrites it.
#[test]
fn tvpctl_fixture_is_current() {
    let k = keys();
    let id = identity(&k, &parts(&k));
    let fixture = serde_json::json!({
        "identity": id,
        "host_ak_pem": p256::pkcs8::EncodePublicKey::to_public_key_pem(
            &k.host_ak.verifying_key().to_owned(), p256::pkcs8::LineEnding::LF).unwrap(),
        "nonce": hex::encode(NONCE),
        "host_id": HOST,
        "vm_id": VM,
    });
    let text = format!("{fixture:#}\n");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ctl/tests/data/vtpm-identity.json");
    if std::env::var_os("TVP_UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(committed, text, "run with TVP_UPDATE_FIXTURES=1 to rewrite");
    check(&id, &k).unwrap();
}

#[test]
fn good_chain_verifies_and_its_quotes_check() {
    let k = keys();
    let p = parts(&k);
    let id = identity(&k, &p);
    let v = check(&id, &k).unwrap();
    assert_eq!(v.ek_public, p.ek_public);
    assert_eq!(v.ak_public, p.ak_public);
    assert_eq!(v.ek_name, name(&p.ek_public));
    assert_eq!(v.ak_name, name(&p.ak_public));
    assert_eq!(v.ca_name, name(&p.ca_public));
    // The JSON form round-trips.
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(serde_json::from_str::<VtpmIdentity>(&json).unwrap(), id);
    // Without an expected host, the chain still names one host throughout.
    let any_host = VtpmExpect {
        host_id: None,
        vm_id: VM,
    };
    verify_identity(&id, &host_ak(&k), NONCE, &any_host).unwrap();

    // A quote of the vTPM, signed by its AK.
    let quote = Attest {
        qualified_signer: name(&p.ak_public),
        extra_data: b"quote nonce".to_vec(),
        clock_info: crate::tpm::ClockInfo {
            clock: 1,
            reset_count: 0,
            restart_count: 0,
            safe: true,
        },
        firmware_version: 1,
        quote: QuoteInfo {
            selections: vec![PcrSelection::new(ALG_SHA256, &[0u32, 7].into())],
            pcr_digest: vec![9; 32],
        },
    }
    .marshal();
    let sig = tpm_sign(&k.ak, &quote);
    let q = verify_vtpm_quote(&v, &quote, &sig, b"quote nonce").unwrap();
    assert_eq!(q.quote.pcr_digest, vec![9; 32]);
    let err = |r: Result<Attest, VtpmError>| r.unwrap_err().code();
    assert_eq!(
        err(verify_vtpm_quote(&v, &quote, &sig, b"old")),
        "vtpm:quote-nonce"
    );
    let by_ca = tpm_sign(&k.ca, &quote);
    assert_eq!(
        err(verify_vtpm_quote(&v, &quote, &by_ca, b"quote nonce")),
        "vtpm:quote-signature"
    );
}

#[test]
fn certify_by_another_ak_is_refused() {
    let k = keys();
    let mut id = identity(&k, &parts(&k));
    id.ca_certify.signature = tpm_sign(&key(9), &id.ca_certify.attest);
    assert_eq!(code(check(&id, &k)), "vtpm:ca-certify-signature");
    // The genuine certification checked against another pinned AK.
    let id = identity(&k, &parts(&k));
    let other = AkKey::P256(key(9).verifying_key().into());
    assert_eq!(
        code(verify_identity(&id, &other, NONCE, &EXPECT)),
        "vtpm:ca-certify-signature"
    );
}

#[test]
fn replayed_nonce_is_refused() {
    let k = keys();
    let id = identity(&k, &parts(&k));
    assert_eq!(
        code(verify_identity(
            &id,
            &host_ak(&k),
            b"a fresh nonce",
            &EXPECT
        )),
        "vtpm:ca-certify-nonce"
    );
}

#[test]
fn certify_of_another_key_is_refused() {
    let k = keys();
    let p = parts(&k);
    let mut id = identity(&k, &p);
    // The host AK genuinely certified some other key; the CA key presented is another.
    let attest = certify_attest(&name(&signing_tpmt(&key(8), CA_ATTRS)), NONCE);
    id.ca_certify = QuoteBlobs {
        signature: tpm_sign(&k.host_ak, &attest),
        attest,
    };
    assert_eq!(code(check(&id, &k)), "vtpm:ca-certify-name");
}

#[test]
fn ca_key_that_is_restricted_decrypt_or_not_fixed_is_refused() {
    let k = keys();
    for (attrs, why) in [
        (CA_ATTRS | 1 << 16, "restricted"),
        (CA_ATTRS | 1 << 17, "decrypt"),
        (CA_ATTRS & !(1 << 1), "not fixedTPM"),
        (CA_ATTRS & !(1 << 4), "not fixedParent"),
        (CA_ATTRS & !(1 << 5), "not sensitiveDataOrigin"),
    ] {
        let mut p = parts(&k);
        p.ca_public = signing_tpmt(&k.ca, attrs);
        let id = identity(&k, &p);
        assert_eq!(code(check(&id, &k)), "vtpm:ca-key", "{why}");
    }
}

#[test]
fn forged_ca_is_refused() {
    let k = keys();
    let p = parts(&k);
    let mut id = identity(&k, &p);
    // An EK certificate made by another key with the CA's name.
    let forger = Keys {
        ca: key(7),
        ..keys()
    };
    let fp = Parts {
        ca_public: signing_tpmt(&forger.ca, CA_ATTRS),
        ..parts(&k)
    };
    id.ek_certificate_pem = cert(&forger, &fp, KeyRole::Ek, &p.ek_public);
    assert_eq!(code(check(&id, &k)), "vtpm:cert-signature");
    // A whole forged CA: its certificate does not hold the certified key.
    let mut id = identity(&k, &p);
    id.ca_certificate_pem = identity(&forger, &fp).ca_certificate_pem;
    assert_eq!(code(check(&id, &k)), "vtpm:ca-certificate");
}

#[test]
fn certificate_naming_another_vm_or_host_is_refused() {
    let k = keys();
    let p = parts(&k);
    let mut id = identity(&k, &p);
    let other_vm = VtpmSubject {
        host_id: HOST,
        vm_id: "vm-8",
        role: KeyRole::Ek,
        public: &p.ek_public,
    };
    let der =
        key_certificate(&p.ca_public, &other_vm, NOT_BEFORE, &mut Soft(k.ca.clone())).unwrap();
    id.ek_certificate_pem = to_pem(&der);
    assert_eq!(code(check(&id, &k)), "vtpm:vm");

    let mut id = identity(&k, &p);
    let other_host = "00".repeat(32);
    let s = VtpmSubject {
        host_id: &other_host,
        ..other_vm
    };
    let s = VtpmSubject { vm_id: VM, ..s };
    let der = key_certificate(&p.ca_public, &s, NOT_BEFORE, &mut Soft(k.ca.clone())).unwrap();
    id.ek_certificate_pem = to_pem(&der);
    // Issued under another host's CA name: the issuer is not this CA's subject.
    assert_eq!(code(check(&id, &k)), "vtpm:cert-issuer");

    // The identity itself says another VM or host than the tenant asked about.
    let id = identity(&k, &p);
    let other = VtpmExpect {
        host_id: Some(HOST),
        vm_id: "vm-8",
    };
    assert_eq!(
        code(verify_identity(&id, &host_ak(&k), NONCE, &other)),
        "vtpm:vm"
    );
    let other = VtpmExpect {
        host_id: Some(&other_host),
        vm_id: VM,
    };
    assert_eq!(
        code(verify_identity(&id, &host_ak(&k), NONCE, &other)),
        "vtpm:host"
    );
}

#[test]
fn ak_certificate_presented_as_ek_is_refused() {
    let k = keys();
    let mut id = identity(&k, &parts(&k));
    std::mem::swap(&mut id.ek_certificate_pem, &mut id.ak_certificate_pem);
    assert_eq!(code(check(&id, &k)), "vtpm:role");
}

#[test]
fn tpmt_public_not_matching_the_certified_key_is_refused() {
    let k = keys();
    let p = parts(&k);
    let mut id = identity(&k, &p);
    // The certificate's key is another EK than the TPMT_PUBLIC it carries.
    let s = VtpmSubject {
        host_id: HOST,
        vm_id: VM,
        role: KeyRole::Ek,
        public: &p.ek_public,
    };
    let other_ek = ek_tpmt(&key(6), EK_ATTRS);
    let der = key_certificate_for(
        &p.ca_public,
        &s,
        &other_ek,
        NOT_BEFORE,
        &mut Soft(k.ca.clone()),
    )
    .unwrap();
    id.ek_certificate_pem = to_pem(&der);
    assert_eq!(code(check(&id, &k)), "vtpm:cert-key");
}

#[test]
fn ek_that_is_a_signing_key_is_refused() {
    let k = keys();
    let mut p = parts(&k);
    p.ek_public = ek_tpmt(&k.ek, (EK_ATTRS & !(1 << 17)) | 1 << 18);
    assert_eq!(code(check(&identity(&k, &p), &k)), "vtpm:ek-key");
    // An unrestricted AK (it could sign anything, e.g. a forged quote) likewise.
    let mut p = parts(&k);
    p.ak_public = signing_tpmt(&k.ak, AK_ATTRS & !(1 << 16));
    assert_eq!(code(check(&identity(&k, &p), &k)), "vtpm:ak-key");
}

#[test]
fn malformed_input_is_format_never_panic() {
    let k = keys();
    let id = identity(&k, &parts(&k));
    let der = parse::pem_to_der(&id.ek_certificate_pem).unwrap();
    let ca = k.ca.verifying_key().into();
    for i in 0..der.len() {
        let mut b = der.clone();
        b[i] ^= 0x01;
        // Anything but acceptance of a changed certificate (the whole chain for some
        // bytes: ECDSA in a debug build is slow).
        let signed = parse::parse_certificate(&b).map(|c| c.signed_by(&ca));
        assert!(
            !matches!(signed, Ok(true)),
            "byte {i} changed, still signed"
        );
        if i % 16 == 0 {
            let mut bad = id.clone();
            bad.ek_certificate_pem = to_pem(&b);
            assert!(check(&bad, &k).is_err(), "byte {i} changed, accepted");
        }
    }
    for n in 0..der.len() {
        assert!(parse::parse_certificate(&der[..n]).is_err());
    }
    let mut bad = id.clone();
    bad.version = 2;
    assert_eq!(code(check(&bad, &k)), "vtpm:version");
    let mut bad = id;
    bad.ca_certificate_pem = "not pem".into();
    assert_eq!(code(check(&bad, &k)), "vtpm:format");
}

#[test]
fn profile_fields() {
    let k = keys();
    let p = parts(&k);
    let id = identity(&k, &p);
    let der = parse::pem_to_der(&id.ek_certificate_pem).unwrap();
    let c = parse::parse_certificate(&der).unwrap();
    let mut serial: Vec<u8> =
        Sha256::digest([b"ek".as_slice(), VM.as_bytes(), &p.ek_public].concat())[..16].to_vec();
    serial[0] &= 0x7f;
    let start = serial.iter().position(|&b| b != 0).unwrap();
    let serial = &serial[start..];
    let got = c
        .serial
        .strip_prefix(&[0u8][..])
        .filter(|s| s.first().is_some_and(|b| b & 0x80 != 0))
        .unwrap_or(c.serial);
    assert_eq!(got, serial);
    assert_eq!(c.subject, cert::cn_name("tvp vTPM EK vm-7").as_slice());
    assert_eq!(
        c.issuer,
        cert::cn_name(&format!("tvp vTPM CA {HOST}")).as_slice()
    );
    let b = c.binding().unwrap().unwrap();
    assert_eq!(
        (b.host_id.as_str(), b.vm_id.as_str(), b.role),
        (HOST, VM, KeyRole::Ek)
    );
    assert_eq!(
        tvp_extension_oid(),
        "2.25.252904171679513814278122157050319680843"
    );
}
