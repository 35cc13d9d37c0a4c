//! `tvpctl vm vtpm-identity`: fetch a VM's TPM identity for a fresh nonce, verify it
//! against the pinned host AK, and write it as files openssl and tpm2-tools read
//! (docs/vtpm-identity.md).

use std::path::{Path, PathBuf};

use p256::pkcs8::{EncodePublicKey, LineEnding};
use tvp_verifier::tpm::Public;
use tvp_verifier::vtpm::{p256_point, verify_identity, VerifiedVtpm, VtpmExpect, VtpmIdentity};
use tvp_verifier::AkKey;

use super::host::call;
use super::pin::{pinned_ak, PinError};
use super::{exit, Cli};

/// What `tvpctl vm vtpm-identity` was given.
#[derive(Debug)]
pub struct Args<'a> {
    /// The VM id.
    pub vm: &'a str,
    /// Where to write the files (created).
    pub out: &'a Path,
    /// The nonce, hex; random 32 bytes if absent.
    pub nonce: Option<&'a str>,
    /// The host AK, PEM.
    pub ak: Option<&'a Path>,
    /// An inventory to take the host AK from.
    pub inventory: Option<&'a Path>,
    /// Which host (of the inventory; with --ak, the host id the identity must name).
    pub host: Option<&'a str>,
}

/// The files written, in order, with what each holds.
pub const FILES: [(&str, &str); 10] = [
    (
        "ca.pem",
        "vTPM CA certificate (self-signed; its key is in the host TPM)",
    ),
    ("ek.pem", "vTPM EK certificate"),
    ("ak.pem", "vTPM AK certificate"),
    ("ek.pub.pem", "vTPM EK public key"),
    ("ak.pub.pem", "vTPM AK public key (checks the VM's quotes)"),
    ("ca.tpmt", "vTPM CA key's TPMT_PUBLIC in the host TPM"),
    (
        "ca-certify.attest",
        "host AK's TPM2_Certify of the CA key (TPMS_ATTEST)",
    ),
    ("ca-certify.sig", "its signature (TPMT_SIGNATURE)"),
    ("nonce.bin", "the nonce the certification carries"),
    ("identity.json", "the identity as tvpd sent it"),
];

fn key_pem(tpmt: &[u8]) -> Result<String, String> {
    let p = Public::parse_tpmt(tpmt).map_err(|e| e.to_string())?;
    let k = p256_point(&p).ok_or("not a P-256 key")?;
    k.to_public_key_pem(LineEnding::LF)
        .map_err(|e| e.to_string())
}

/// Write a verified identity's files into `dir` (created); returns their paths.
pub fn write_files(
    dir: &Path,
    id: &VtpmIdentity,
    v: &VerifiedVtpm,
    nonce: &[u8],
) -> Result<Vec<PathBuf>, String> {
    let json = serde_json::to_vec_pretty(id).map_err(|e| e.to_string())?;
    let contents: [Vec<u8>; 10] = [
        id.ca_certificate_pem.clone().into_bytes(),
        id.ek_certificate_pem.clone().into_bytes(),
        id.ak_certificate_pem.clone().into_bytes(),
        key_pem(&v.ek_public)?.into_bytes(),
        key_pem(&v.ak_public)?.into_bytes(),
        id.ca_public.clone(),
        id.ca_certify.attest.clone(),
        id.ca_certify.signature.clone(),
        nonce.to_vec(),
        json,
    ];
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for ((name, _), bytes) in FILES.iter().zip(contents) {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        out.push(p);
    }
    Ok(out)
}

fn nonce_of(arg: Option<&str>) -> Result<Vec<u8>, i32> {
    match arg {
        Some(h) => match hex::decode(h.trim()) {
            Ok(n) if (1..=32).contains(&n.len()) => Ok(n),
            _ => {
                eprintln!("tvpctl: --nonce: 1 to 32 bytes, hex");
                Err(exit::USAGE)
            }
        },
        None => {
            let mut n = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut n);
            Ok(n)
        }
    }
}

/// The human summary of a verified identity.
pub fn summary(v: &VerifiedVtpm, dir: &Path) -> String {
    let d = dir.display();
    let mut s = format!(
        "vTPM identity of VM {} verified: every check passed\n  host id:   {}\n  CA key:    {} (certified by the pinned host AK, your nonce)\n  EK name:   {}\n  AK name:   {}\nfiles in {d}:\n",
        v.vm_id,
        v.host_id,
        hex::encode(&v.ca_name),
        hex::encode(&v.ek_name),
        hex::encode(&v.ak_name),
    );
    for (name, what) in FILES {
        s.push_str(&format!("  {name:<18} {what}\n"));
    }
    s.push_str(&format!(
        "check by hand (docs/vtpm-identity.md):\n  openssl verify -CAfile {d}/ca.pem {d}/ek.pem {d}/ak.pem\n  openssl x509 -in {d}/ek.pem -noout -text\n"
    ));
    s
}

/// Run `tvpctl vm vtpm-identity`; returns the exit code.
pub fn run(cli: &Cli, a: &Args<'_>) -> i32 {
    let pinned = match pinned_ak(a.ak, a.inventory, a.host) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("tvpctl: no host AK to check the identity with: pass the host's AK from your inventory (--ak PEM, or --inventory FILE [--host ID])");
            return exit::USAGE;
        }
        Err(PinError::Exit(code)) => return code,
        Err(PinError::NotInInventory(m)) => {
            eprintln!("tvpctl: {m}");
            return exit::VERIFY_FAILED;
        }
    };
    let host_ak = match AkKey::from_pem(&pinned.pem) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("tvpctl: the pinned host AK: {e}");
            return exit::IO;
        }
    };
    let nonce = match nonce_of(a.nonce) {
        Ok(n) => n,
        Err(c) => return c,
    };
    let body = serde_json::json!({ "nonce": hex::encode(&nonce) })
        .to_string()
        .into_bytes();
    let path = format!("/v1/vms/{}/vtpm/identity", a.vm);
    let id: VtpmIdentity = match call(cli, "POST", &path, Some(body)) {
        Ok((id, _)) => id,
        Err(c) => return c,
    };
    let expect = VtpmExpect {
        host_id: pinned.host_id.as_deref().or(a.host),
        vm_id: a.vm,
    };
    let v = match verify_identity(&id, &host_ak, &nonce, &expect) {
        Ok(v) => v,
        Err(e) => {
            if cli.json {
                println!(
                    "{:#}",
                    serde_json::json!({"ok": false, "check": e.code(), "message": e.to_string()})
                );
            }
            eprintln!("vTPM identity verification FAILED: {e}");
            return exit::VERIFY_FAILED;
        }
    };
    let files = match write_files(a.out, &id, &v, &nonce) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tvpctl: {e}");
            return exit::IO;
        }
    };
    if cli.json {
        println!(
            "{:#}",
            serde_json::json!({"ok": true, "host_id": v.host_id, "vm_id": v.vm_id,
                "ca_name": hex::encode(&v.ca_name), "ek_name": hex::encode(&v.ek_name),
                "ak_name": hex::encode(&v.ak_name), "nonce": hex::encode(&nonce),
                "files": files})
        );
    } else {
        print!("{}", summary(&v, a.out));
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Fixture {
        identity: VtpmIdentity,
        host_ak_pem: String,
        nonce: String,
        host_id: String,
        vm_id: String,
    }

    /// The verifier's fixture identity (agent/verifier/src/vtpm/tests.rs keeps it
    /// current), verified, written: every file holds what its name says.
    #[test]
    fn writes_the_files_of_a_verified_identity() {
        let f: Fixture =
            serde_json::from_str(include_str!("../tests/data/vtpm-identity.json")).unwrap();
        let ak = AkKey::from_pem(&f.host_ak_pem).unwrap();
        let nonce = hex::decode(&f.nonce).unwrap();
        let expect = VtpmExpect {
            host_id: Some(&f.host_id),
            vm_id: &f.vm_id,
        };
        let v = verify_identity(&f.identity, &ak, &nonce, &expect).unwrap();
        let dir = std::env::temp_dir().join(format!("tvpctl-vtpm-{}", std::process::id()));
        let files = write_files(&dir.join("out"), &f.identity, &v, &nonce).unwrap();
        assert_eq!(files.len(), FILES.len());
        let read = |n: &str| std::fs::read(dir.join("out").join(n)).unwrap();
        assert_eq!(read("ca.pem"), f.identity.ca_certificate_pem.as_bytes());
        assert_eq!(read("ek.pem"), f.identity.ek_certificate_pem.as_bytes());
        assert_eq!(read("ak.pem"), f.identity.ak_certificate_pem.as_bytes());
        assert_eq!(read("ca.tpmt"), f.identity.ca_public);
        assert_eq!(read("ca-certify.attest"), f.identity.ca_certify.attest);
        assert_eq!(read("ca-certify.sig"), f.identity.ca_certify.signature);
        assert_eq!(read("nonce.bin"), nonce);
        let again: VtpmIdentity = serde_json::from_slice(&read("identity.json")).unwrap();
        assert_eq!(again, f.identity);
        // The AK public key file is the certified vTPM AK.
        let ak_pem = String::from_utf8(read("ak.pub.pem")).unwrap();
        assert_eq!(AkKey::from_pem(&ak_pem).unwrap(), v.ak_key);
        assert!(String::from_utf8(read("ek.pub.pem"))
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(summary(&v, &dir).contains("openssl verify -CAfile"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nonce_argument() {
        assert_eq!(nonce_of(Some("0a0b")), Ok(vec![10, 11]));
        assert_eq!(nonce_of(Some("")), Err(exit::USAGE));
        assert_eq!(nonce_of(Some(&"00".repeat(33))), Err(exit::USAGE));
        assert_eq!(nonce_of(None).unwrap().len(), 32);
    }
}
