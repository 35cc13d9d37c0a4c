//! The TPM core against a real swtpm: provisioning, PCR policy, quotes.

use tvp_agent::tpm::provision::{AkAlgorithm, AkScheme};
use tvp_agent::tpm::{ProvisionConfig, Tpm, TpmError};
use tvp_tests::{require, Swtpm};

fn cfg() -> ProvisionConfig {
    ProvisionConfig {
        ek_handle: 0x8101_0001,
        ak_handle: 0x8101_0002,
        ak_algorithm: AkAlgorithm::EccP256,
    }
}

#[test]
fn provisioning_is_idempotent_and_keeps_the_same_keys() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let first = Tpm::open(&tpm.tcti(), &cfg()).expect("first open");
    let id1 = first.identity().clone();
    assert!(id1.created, "a blank TPM must get new keys");
    assert!(
        id1.ek_certificate_der.is_none(),
        "blank swtpm has no EK certificate"
    );
    drop(first);
    let second = Tpm::open(&tpm.tcti(), &cfg()).expect("second open");
    let id2 = second.identity().clone();
    assert!(!id2.created, "second start must reuse the persistent keys");
    assert_eq!(id1.ak_public_pem, id2.ak_public_pem);
    assert_eq!(id1.ak_name, id2.ak_name);
    assert_eq!(id1.host_id, id2.host_id);
    assert_eq!(id1.host_id.len(), 64);
}

#[test]
fn reset_of_pcr_17_is_refused_while_16_and_23_reset() {
    require!("swtpm");
    let swtpm = Swtpm::blank();
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    for pcr in [16, 23] {
        tpm.pcr_extend(pcr, &[7u8; 32]).expect("extend");
        assert_ne!(tpm.pcr_read(&[pcr]).unwrap()[&pcr], [0u8; 32]);
        tpm.pcr_reset(pcr).expect("reset 16/23");
        assert_eq!(tpm.pcr_read(&[pcr]).unwrap()[&pcr], [0u8; 32]);
    }
    for pcr in [0, 15, 17, 22] {
        // 17..=22 are DRTM PCRs: locality 0 cannot extend them either.
        if pcr < 17 {
            tpm.pcr_extend(pcr, &[9u8; 32]).expect("extend");
        }
        let before = tpm.pcr_read(&[pcr]).unwrap()[&pcr];
        let err = tpm.pcr_reset(pcr).expect_err("reset must be refused");
        assert!(matches!(err, TpmError::Refused(_)), "{err}");
        assert!(err.to_string().contains("only PCRs 16 and 23"), "{err}");
        assert_eq!(
            tpm.pcr_read(&[pcr]).unwrap()[&pcr],
            before,
            "PCR {pcr} changed"
        );
    }
}

#[test]
fn extend_matches_the_tpm_and_quote_digest_matches_values() {
    require!("swtpm");
    let swtpm = Swtpm::blank();
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    let d = [0x42u8; 32];
    tpm.pcr_extend(23, &d).unwrap();
    let expect = tvp_verifier::eventlog::extend_sha256(&[0; 32], &d);
    assert_eq!(tpm.pcr_read(&[23]).unwrap()[&23], expect);
    let q = tpm.quote(b"nonce-123", &[23, 16, 15]).expect("quote");
    assert_eq!(q.pcrs.keys().copied().collect::<Vec<_>>(), vec![15, 16, 23]);
    assert_eq!(q.pcrs[&23], expect);
    // A new AK is ECC P-256: TPMT_SIGNATURE ECDSA (0x0018), SHA-256, r and s.
    assert_eq!(tpm.identity().ak_scheme, AkScheme::EcdsaSha256);
    assert!(q.attest.len() > 100);
    assert_eq!(&q.signature[..4], &[0x00, 0x18, 0x00, 0x0b]);
    assert!(q.signature.len() <= 4 + 2 * 34);

    // The next quote may answer with the last quote's values (no PCR read) only while
    // they still hash to the signed digest: an extend in between must show.
    let again = tpm.quote(b"nonce-124", &[15, 16, 23]).expect("quote again");
    assert_eq!(again.pcrs, q.pcrs);
    tpm.pcr_extend(23, &d).unwrap();
    let expect2 = tvp_verifier::eventlog::extend_sha256(&expect, &d);
    let q2 = tpm
        .quote(b"nonce-125", &[15, 16, 23])
        .expect("quote after extend");
    assert_eq!(q2.pcrs[&23], expect2);
    assert_eq!(tpm.pcr_read(&[23]).unwrap()[&23], expect2);
    let other = tpm
        .quote(b"nonce-126", &[23])
        .expect("quote of another selection");
    assert_eq!(other.pcrs.keys().copied().collect::<Vec<_>>(), vec![23]);
    assert_eq!(other.pcrs[&23], expect2);
    // Each answer's values hash to the digest the AK signed.
    let ak = tvp_verifier::AkKey::from_pem(&tpm.identity().ak_public_pem).unwrap();
    for (n, q) in [
        (&b"nonce-124"[..], &again),
        (b"nonce-125", &q2),
        (b"nonce-126", &other),
    ] {
        let sig = tvp_verifier::tpm::Signature::parse(&q.signature).unwrap();
        ak.verify(&q.attest, &sig).expect("AK signature");
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        for v in q.pcrs.values() {
            sha2::Digest::update(&mut h, v);
        }
        let digest: [u8; 32] = sha2::Digest::finalize(h).into();
        assert!(
            q.attest.windows(32).any(|w| w == digest),
            "values do not match the signed digest"
        );
        assert!(q.attest.windows(n.len()).any(|w| w == n));
    }
}

/// A TPM provisioned with an RSA-2048 AK (as every host was before ECC AKs, or with
/// `ak_algorithm = "rsa-2048"`) keeps it when tvpd starts with the new default: the
/// same key, quotes and certifications signed RSASSA-SHA256 that verify.
#[test]
fn an_rsa_ak_from_before_is_kept_and_signs_with_its_own_scheme() {
    require!("swtpm");
    let swtpm = Swtpm::blank();
    let rsa = ProvisionConfig {
        ak_algorithm: AkAlgorithm::Rsa2048,
        ..cfg()
    };
    let old = Tpm::open(&swtpm.tcti(), &rsa).expect("provision with an RSA AK");
    let before = old.identity().clone();
    assert!(before.created);
    assert_eq!(before.ak_scheme, AkScheme::RsaSsaSha256);
    drop(old);
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open with the ECC default");
    let id = tpm.identity().clone();
    assert!(!id.created, "the persisted AK must be kept");
    assert_eq!(id.ak_public_pem, before.ak_public_pem);
    assert_eq!(id.ak_name, before.ak_name);
    assert_eq!(id.ak_scheme, AkScheme::RsaSsaSha256);
    let ak = tvp_verifier::AkKey::from_pem(&id.ak_public_pem).unwrap();
    assert_eq!(ak.describe(), "RSA-2048");
    let q = tpm.quote(b"nonce-rsa", &[15, 16, 23]).expect("quote");
    assert_eq!(&q.signature[..4], &[0x00, 0x14, 0x00, 0x0b]);
    let sig = tvp_verifier::tpm::Signature::parse(&q.signature).unwrap();
    ak.verify(&q.attest, &sig).expect("RSA AK signature");
    let key = tpm.create_binding_key(&[15]).expect("binding key");
    let cert = tpm.certify_binding_key(&key, b"nonce-c").expect("certify");
    let sig = tvp_verifier::tpm::Signature::parse(&cert.signature).unwrap();
    ak.verify(&cert.attest, &sig).expect("RSA AK certification");
}

/// The new default AK certifies the binding key with ECDSA too.
#[test]
fn the_ecc_ak_certifies_the_binding_key() {
    require!("swtpm");
    let swtpm = Swtpm::blank();
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    let ak = tvp_verifier::AkKey::from_pem(&tpm.identity().ak_public_pem).unwrap();
    assert_eq!(ak.describe(), "ECDSA P-256");
    let key = tpm.create_binding_key(&[15]).expect("binding key");
    let cert = tpm.certify_binding_key(&key, b"nonce-c").expect("certify");
    assert_eq!(&cert.signature[..4], &[0x00, 0x18, 0x00, 0x0b]);
    let sig = tvp_verifier::tpm::Signature::parse(&cert.signature).unwrap();
    ak.verify(&cert.attest, &sig).expect("ECC AK certification");
}

#[test]
fn quote_nonce_must_be_1_to_32_bytes() {
    require!("swtpm");
    let swtpm = Swtpm::blank();
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    for bad in [vec![], vec![0u8; 33]] {
        let e = tpm.quote(&bad, &[23]).expect_err("bad nonce accepted");
        assert!(matches!(e, TpmError::InvalidArgument(_)), "{e}");
    }
    tpm.quote(&[1u8; 32], &[23]).expect("32-byte nonce");
}

#[test]
fn wrong_object_at_the_ak_handle_is_reported() {
    require!("swtpm");
    let swtpm = Swtpm::blank();
    // Put the EK at the handle tvpd would use for the AK: it must refuse to use it.
    drop(Tpm::open(&swtpm.tcti(), &cfg()).expect("open"));
    let swapped = ProvisionConfig {
        ek_handle: 0x8101_0002,
        ak_handle: 0x8101_0001,
        ..cfg()
    };
    let e = Tpm::open(&swtpm.tcti(), &swapped)
        .err()
        .expect("must refuse");
    assert!(matches!(e, TpmError::WrongObject { .. }), "{e}");
    assert!(
        e.to_string().contains("0x81010002") || e.to_string().contains("0x81010001"),
        "{e}"
    );
}

fn getcap(tpm: &Swtpm, what: &str) -> String {
    let o = std::process::Command::new("tpm2_getcap")
        .args(["-T", &tpm.tools_tcti(), what])
        .output()
        .expect("tpm2_getcap");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn stale_objects_and_sessions_left_by_a_dead_process_are_flushed() {
    require!(
        "swtpm",
        "tpm2_createprimary",
        "tpm2_startauthsession",
        "tpm2_getcap"
    );
    let swtpm = Swtpm::blank();
    let dir = swtpm.scratch("ctx");
    // tpm2-tools without a resource manager leave these behind, as a killed tvpd would.
    let run = |args: &[&str]| {
        let o = std::process::Command::new(args[0])
            .args(["-T", &swtpm.tools_tcti()])
            .args(&args[1..])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&["tpm2_createprimary", "-C", "o", "-c", "p.ctx"]);
    run(&["tpm2_startauthsession", "--policy-session", "-S", "s1.ctx"]);
    run(&["tpm2_startauthsession", "-S", "s2.ctx"]);
    assert!(getcap(&swtpm, "handles-transient").contains("0x80"));
    assert!(getcap(&swtpm, "handles-saved-session").contains("0x2"));
    let tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    drop(tpm);
    assert!(
        !getcap(&swtpm, "handles-transient").contains("0x"),
        "transient objects left"
    );
    assert!(
        !getcap(&swtpm, "handles-saved-session").contains("0x"),
        "sessions left"
    );
    assert!(
        !getcap(&swtpm, "handles-loaded-session").contains("0x"),
        "sessions left"
    );
}

#[test]
fn binding_key_unwraps_only_while_the_platform_pcr_is_unchanged() {
    require!("swtpm");
    use rsa::pkcs8::DecodePublicKey;
    let swtpm = Swtpm::blank();
    let mut tpm = Tpm::open(&swtpm.tcti(), &cfg()).expect("open");
    tpm.pcr_extend(15, &[5u8; 32]).unwrap();
    let key = tpm.create_binding_key(&[15]).expect("binding key");
    let attrs = key.public.object_attributes();
    assert!(attrs.fixed_tpm() && attrs.fixed_parent() && attrs.decrypt());
    assert!(
        !attrs.user_with_auth(),
        "a password must not stand in for the PCR policy"
    );
    assert!(!attrs.sign_encrypt() && !attrs.restricted());

    // A key-management service wraps an image key to the binding key's public part.
    let pem = tvp_agent::tpm::keys::public_to_pem(&key.public).unwrap();
    let public = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
    let image_key = tvp_image::ImageKey::generate();
    let wrapped = image_key.wrap(&public).unwrap();
    let unwrapped = tpm.binding_unwrap(&key, &wrapped).expect("unwrap");
    assert_eq!(&unwrapped[..], image_key.as_bytes());

    // The AK certifies it: the signed statement names this key and carries the nonce.
    let cert = tpm
        .certify_binding_key(&key, b"kms-nonce-1")
        .expect("certify");
    let bpub = tvp_verifier::tpm::Public::parse_tpm2b(&cert.public_tpm2b).unwrap();
    let name = bpub.name().unwrap();
    assert!(cert
        .attest
        .windows(name.len())
        .any(|w| w == name.as_slice()));
    assert!(cert.attest.windows(11).any(|w| w == b"kms-nonce-1"));
    let ak = tvp_verifier::AkKey::from_pem(&tpm.identity().ak_public_pem).unwrap();
    let sig = tvp_verifier::tpm::Signature::parse(&cert.signature).unwrap();
    ak.verify(&cert.attest, &sig)
        .expect("AK signature over the certification");

    // The platform changes: the TPM refuses to unwrap.
    tpm.pcr_extend(15, &[6u8; 32]).unwrap();
    let e = tpm
        .binding_unwrap(&key, &wrapped)
        .expect_err("must refuse after a PCR change");
    assert!(e.to_string().contains("RSA_Decrypt"), "{e}");
}
