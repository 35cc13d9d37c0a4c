//! The vTPM identity made by a real TPM and checked by tools nobody here wrote: a
//! private swtpm holds a host AK (RSA) and the vTPM CA key (P-256, unrestricted
//! signing); tpm2-tools certifies the CA key with the AK and signs the certificates;
//! a vTPM EK and AK (ECC) come from the same swtpm standing in for the VM's TPM. Then
//! our verifier accepts the chain and a quote of that AK, and `openssl verify`, `openssl
//! x509` and `openssl dgst` (the host AK's signature over the certification, as
//! tpm2-tools wrote it) agree. Needs swtpm, tpm2-tools and openssl (`require!`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use tvp_test_env::require;
use tvp_verifier::tpm::{Public, Signature};
use tvp_verifier::vtpm::cert::to_pem;
use tvp_verifier::vtpm::{
    ca_certificate, key_certificate, verify_identity, verify_vtpm_quote, CaSigner, KeyRole,
    VtpmExpect, VtpmIdentity, VtpmSubject, VTPM_IDENTITY_VERSION,
};
use tvp_verifier::{AkKey, QuoteBlobs};

mod common;
use common::{read, Swtpm};

const HOST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const VM: &str = "vm-tools";

/// The CA key in the swtpm signs through `tpm2_sign`.
struct TpmSigner<'a> {
    tpm: &'a Swtpm,
    n: u32,
}

fn pad32(v: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[32 - v.len()..].copy_from_slice(v);
    out
}

impl CaSigner for TpmSigner<'_> {
    fn sign_digest(&mut self, digest: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), String> {
        self.n += 1;
        let (d, s) = (
            format!("tbs{}.digest", self.n),
            format!("tbs{}.sig", self.n),
        );
        std::fs::write(self.tpm.path(&d), digest).unwrap();
        self.tpm.tool(&[
            "tpm2_sign",
            "-c",
            "ca.ctx",
            "-g",
            "sha256",
            "-d",
            "-o",
            &s,
            &d,
        ]);
        match Signature::parse(&read(&self.tpm.path(&s))).map_err(|e| e.to_string())? {
            Signature::Ecdsa { r, s, .. } => Ok((pad32(&r), pad32(&s))),
            other => Err(format!("not ECDSA: {other:?}")),
        }
    }
}

/// TPMT_PUBLIC of a `-u` TPM2B_PUBLIC file.
fn tpmt(tpm: &Swtpm, f: &str) -> Vec<u8> {
    read(&tpm.path(f))[2..].to_vec()
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("openssl {args:?} -> {}\n{text}", out.status);
    (out.status.success(), text)
}

#[test]
fn real_tpm_identity_verifies_here_and_with_openssl() {
    require!(
        "swtpm",
        "openssl",
        "tpm2_createek",
        "tpm2_createak",
        "tpm2_createprimary",
        "tpm2_create",
        "tpm2_load",
        "tpm2_certify",
        "tpm2_sign",
        "tpm2_readpublic",
        "tpm2_quote",
        "tpm2_flushcontext",
    );
    let tpm = Swtpm::start();
    // The host: EK, AK (RSA), the vTPM CA key under the owner's primary.
    tpm.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    tpm.tool(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "hak.ctx",
        "-G",
        "rsa",
        "-g",
        "sha256",
        "-s",
        "rsassa",
        "-u",
        "hak.pub",
    ]);
    tpm.tool(&[
        "tpm2_readpublic",
        "-c",
        "hak.ctx",
        "-f",
        "pem",
        "-o",
        "hak.pem",
    ]);
    tpm.tool(&[
        "tpm2_createprimary",
        "-C",
        "o",
        "-g",
        "sha256",
        "-G",
        "ecc",
        "-c",
        "srk.ctx",
    ]);
    tpm.tool(&[
        "tpm2_create",
        "-C",
        "srk.ctx",
        "-G",
        "ecc256:ecdsa-sha256",
        "-g",
        "sha256",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        "-u",
        "ca.pub",
        "-r",
        "ca.priv",
    ]);
    tpm.tool(&[
        "tpm2_load",
        "-C",
        "srk.ctx",
        "-u",
        "ca.pub",
        "-r",
        "ca.priv",
        "-c",
        "ca.ctx",
    ]);
    // tpm2-tools 5.4's tpm2_certify takes no qualifying data and always passes
    // 00ff55aa: that is the nonce here (tvpd passes the tenant's; the unit tests check
    // that binding).
    let nonce: &[u8] = &[0x00, 0xff, 0x55, 0xaa];
    tpm.tool(&[
        "tpm2_certify",
        "-c",
        "ca.ctx",
        "-C",
        "hak.ctx",
        "-g",
        "sha256",
        "-o",
        "ca-certify.attest",
        "-s",
        "ca-certify.sig",
    ]);
    // The VM's TPM (here the same swtpm): an ECC EK and an ECDSA AK under it.
    tpm.tool(&[
        "tpm2_createek",
        "-c",
        "vek.ctx",
        "-G",
        "ecc",
        "-u",
        "vek.pub",
    ]);
    tpm.tool(&[
        "tpm2_createak",
        "-C",
        "vek.ctx",
        "-c",
        "vak.ctx",
        "-G",
        "ecc",
        "-g",
        "sha256",
        "-s",
        "ecdsa",
        "-u",
        "vak.pub",
    ]);
    tpm.tool(&[
        "tpm2_readpublic",
        "-c",
        "vak.ctx",
        "-f",
        "pem",
        "-o",
        "vak.pem",
    ]);

    let ca_public = tpmt(&tpm, "ca.pub");
    let (ek_public, ak_public) = (tpmt(&tpm, "vek.pub"), tpmt(&tpm, "vak.pub"));
    let mut signer = TpmSigner { tpm: &tpm, n: 0 };
    let now = 1_796_000_000;
    let ca = ca_certificate(&ca_public, HOST, now, &mut signer).unwrap();
    let mut leaf = |role, public: &[u8]| {
        let s = VtpmSubject {
            host_id: HOST,
            vm_id: VM,
            role,
            public,
        };
        to_pem(&key_certificate(&ca_public, &s, now, &mut signer).unwrap())
    };
    let ek_pem = leaf(KeyRole::Ek, &ek_public);
    let ak_pem = leaf(KeyRole::Ak, &ak_public);
    let id = VtpmIdentity {
        version: VTPM_IDENTITY_VERSION,
        host_id: HOST.into(),
        vm_id: VM.into(),
        ca_public: ca_public.clone(),
        ca_certify: QuoteBlobs {
            attest: read(&tpm.path("ca-certify.attest")),
            signature: read(&tpm.path("ca-certify.sig")),
        },
        ca_certificate_pem: to_pem(&ca),
        ek_certificate_pem: ek_pem.clone(),
        ak_certificate_pem: ak_pem.clone(),
    };

    // Our verifier, against the host AK as tpm2-tools exported it.
    let host_ak = AkKey::from_pem(&String::from_utf8(read(&tpm.path("hak.pem"))).unwrap()).unwrap();
    let expect = VtpmExpect {
        host_id: Some(HOST),
        vm_id: VM,
    };
    let v = verify_identity(&id, &host_ak, nonce, &expect).unwrap();
    assert_eq!(v.ek_public, ek_public);
    assert_eq!(
        v.ak_key,
        AkKey::from_pem(&String::from_utf8(read(&tpm.path("vak.pem"))).unwrap()).unwrap()
    );
    assert_eq!(
        Public::parse_tpmt(&ca_public).unwrap().name().unwrap(),
        v.ca_name
    );
    assert_eq!(
        verify_identity(&id, &host_ak, b"another nonce", &expect)
            .unwrap_err()
            .code(),
        "vtpm:ca-certify-nonce"
    );

    // A quote of the vTPM AK.
    tpm.tool(&[
        "tpm2_quote",
        "-c",
        "vak.ctx",
        "-l",
        "sha256:0,7",
        "-q",
        "0badc0de",
        "-g",
        "sha256",
        "-m",
        "q.msg",
        "-s",
        "q.sig",
    ]);
    let (qm, qs) = (read(&tpm.path("q.msg")), read(&tpm.path("q.sig")));
    verify_vtpm_quote(&v, &qm, &qs, &[0x0b, 0xad, 0xc0, 0xde]).unwrap();

    // openssl: the chain, the profile, the certification's signature.
    let dir = tpm.path("");
    std::fs::write(tpm.path("ca.pem"), &id.ca_certificate_pem).unwrap();
    std::fs::write(tpm.path("ek.pem"), &ek_pem).unwrap();
    std::fs::write(tpm.path("ak.pem"), &ak_pem).unwrap();
    let (ok, text) = openssl(&dir, &["verify", "-CAfile", "ca.pem", "ek.pem", "ak.pem"]);
    assert!(ok && text.contains("ek.pem: OK") && text.contains("ak.pem: OK"));
    let (ok, text) = openssl(&dir, &["x509", "-in", "ek.pem", "-noout", "-text"]);
    assert!(ok && text.contains("2.23.133.8.1") && text.contains("Key Agreement"));
    assert!(text.contains("2.25.252904171679513814278122157050319680843"));
    let (ok, text) = openssl(&dir, &["x509", "-in", "ak.pem", "-noout", "-text"]);
    assert!(ok && text.contains("2.23.133.8.3") && text.contains("Digital Signature"));
    let (ok, text) = openssl(&dir, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(ok && text.contains("CA:TRUE, pathlen:0") && text.contains("Certificate Sign"));
    // The certificate holds the key tpm2-tools reads from the TPM.
    let (ok, key) = openssl(&dir, &["x509", "-in", "ak.pem", "-noout", "-pubkey"]);
    assert!(ok);
    assert_eq!(AkKey::from_pem(&key).unwrap(), v.ak_key);
    // The host AK's RSASSA signature over the certification: TPMT_SIGNATURE is
    // sigAlg, hash, size (2 bytes each), then the raw signature.
    let sig = read(&tpm.path("ca-certify.sig"));
    std::fs::write(tpm.path("ca-certify.raw"), &sig[6..]).unwrap();
    let verify_certify = |file: &str| {
        openssl(
            &dir,
            &[
                "dgst",
                "-sha256",
                "-verify",
                "hak.pem",
                "-signature",
                "ca-certify.raw",
                file,
            ],
        )
        .0
    };
    assert!(verify_certify("ca-certify.attest"));
    let mut forged = read(&tpm.path("ca-certify.attest"));
    let last = forged.len() - 1;
    forged[last] ^= 1;
    std::fs::write(tpm.path("forged.attest"), forged).unwrap();
    assert!(!verify_certify("forged.attest"));
    // openssl refuses an EK certificate checked against another CA (ek.pem as CA).
    let (ok, _) = openssl(&dir, &["verify", "-CAfile", "ak.pem", "ek.pem"]);
    assert!(!ok);
}
