//! The vTPM certificates (X.509 v3, DER, ECDSA with SHA-256), signed by the vTPM CA
//! key in the host TPM through a [`CaSigner`]. Profile: docs/vtpm-identity.md.

use base64::Engine;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

use super::der::{self, cons, oid_value, tlv, uint};
use super::{ca_common_name, p256_point, KeyRole, TVP_EXTENSION_UUID};
use crate::tpm::Public;

/// Signs the SHA-256 digest of a TBSCertificate with the vTPM CA key: returns (r, s),
/// big-endian, 32 bytes each.
pub trait CaSigner {
    /// Sign `digest`.
    fn sign_digest(&mut self, digest: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), String>;
}

/// The vTPM key a certificate is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtpmSubject<'a> {
    /// The host's id (64 lowercase hex characters).
    pub host_id: &'a str,
    /// The VM's id.
    pub vm_id: &'a str,
    /// EK or AK.
    pub role: KeyRole,
    /// The key's TPMT_PUBLIC as the vTPM marshals it (ECC P-256).
    pub public: &'a [u8],
}

/// Why a certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// A TPMT_PUBLIC does not parse or is not an ECC P-256 key.
    #[error("vTPM certificate: the {what} key: {msg}")]
    Key {
        /// Which key (`CA`, `EK`, `AK`).
        what: &'static str,
        /// Why it cannot be used.
        msg: String,
    },
    /// A host or VM id cannot be put in a certificate.
    #[error("vTPM certificate: {0}")]
    Subject(String),
    /// The signer failed, or its signature does not verify with the CA key.
    #[error("vTPM certificate: signing with the vTPM CA key: {0}")]
    Sign(String),
}

/// Largest VM id put in a certificate.
const MAX_VM_ID: usize = 256;

/// ecdsa-with-SHA256 (1.2.840.10045.4.3.2), no parameters.
pub(crate) fn ecdsa_sha256_alg() -> Vec<u8> {
    cons(
        der::SEQUENCE,
        &[&tlv(der::OID, &oid_value(&[1, 2, 840, 10045, 4, 3, 2]))],
    )
}

/// A Name with one common name (2.5.4.3, UTF8String).
pub(crate) fn cn_name(cn: &str) -> Vec<u8> {
    let atv = cons(
        der::SEQUENCE,
        &[
            &tlv(der::OID, &oid_value(&[2, 5, 4, 3])),
            &tlv(der::UTF8_STRING, cn.as_bytes()),
        ],
    );
    cons(der::SEQUENCE, &[&tlv(der::SET, &atv)])
}

/// The private extension's value: SEQUENCE { hostId UTF8String, vmId UTF8String,
/// role ENUMERATED { ek(0), ak(1) }, tpmtPublic OCTET STRING }.
pub(crate) fn binding_value(host_id: &str, vm_id: &str, role: KeyRole, tpmt: &[u8]) -> Vec<u8> {
    cons(
        der::SEQUENCE,
        &[
            &tlv(der::UTF8_STRING, host_id.as_bytes()),
            &tlv(der::UTF8_STRING, vm_id.as_bytes()),
            &tlv(der::ENUMERATED, &[role.number()]),
            &tlv(der::OCTET_STRING, tpmt),
        ],
    )
}

fn extension(arcs: &[u128], critical: bool, value: &[u8]) -> Vec<u8> {
    let oid = tlv(der::OID, &oid_value(arcs));
    let value = tlv(der::OCTET_STRING, value);
    if critical {
        cons(der::SEQUENCE, &[&oid, &tlv(der::BOOLEAN, &[0xff]), &value])
    } else {
        cons(der::SEQUENCE, &[&oid, &value])
    }
}

/// keyUsage BIT STRING with the one named bit `bit` (0 = digitalSignature).
fn key_usage(bit: u8) -> Vec<u8> {
    tlv(der::BIT_STRING, &[7 - bit, 0x80 >> bit])
}

/// A key identifier: the first 160 bits of SHA-256 of the public key's point
/// (RFC 7093, method 1).
fn key_id(point: &[u8]) -> Vec<u8> {
    Sha256::digest(point).get(..20).unwrap_or_default().to_vec()
}

fn serial(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut s: Vec<u8> = h.finalize().get(..16).unwrap_or_default().to_vec();
    if let Some(b) = s.first_mut() {
        *b &= 0x7f;
    }
    uint(&s)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A certificate Time: UTCTime through 2049, GeneralizedTime after (RFC 5280).
pub(crate) fn time(unix: u64) -> Vec<u8> {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX / 2);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    let hms = format!("{:02}{:02}{:02}Z", t / 3600, t / 60 % 60, t % 60);
    if (1950..2050).contains(&y) {
        tlv(
            der::UTC_TIME,
            format!("{:02}{mo:02}{d:02}{hms}", y % 100).as_bytes(),
        )
    } else {
        tlv(
            der::GENERALIZED_TIME,
            format!("{y:04}{mo:02}{d:02}{hms}").as_bytes(),
        )
    }
}

/// notAfter of every vTPM certificate: no well-defined expiry (RFC 5280 4.1.2.5).
fn not_after() -> Vec<u8> {
    tlv(der::GENERALIZED_TIME, b"99991231235959Z")
}

/// The P-256 key of a TPMT_PUBLIC, its SubjectPublicKeyInfo (DER) and its point.
fn key_of(
    tpmt: &[u8],
    what: &'static str,
) -> Result<(p256::PublicKey, Vec<u8>, Vec<u8>), CertError> {
    let bad = |msg: String| CertError::Key { what, msg };
    let public = Public::parse_tpmt(tpmt).map_err(|e| bad(format!("TPMT_PUBLIC: {e}")))?;
    let key = p256_point(&public).ok_or_else(|| bad("not an ECC NIST P-256 key".into()))?;
    let spki = key
        .to_public_key_der()
        .map_err(|e| bad(format!("SubjectPublicKeyInfo: {e}")))?;
    let point = key.to_encoded_point(false).as_bytes().to_vec();
    Ok((key, spki.as_bytes().to_vec(), point))
}

fn check_host_id(host_id: &str) -> Result<(), CertError> {
    if host_id.len() == 64
        && host_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(CertError::Subject(format!(
            "host id {host_id:?} is not 64 lowercase hex characters"
        )))
    }
}

/// Sign `tbs` with the CA key through `signer`, check the signature, and wrap it all
/// into a Certificate.
fn sign(
    tbs: Vec<u8>,
    ca: &p256::PublicKey,
    signer: &mut dyn CaSigner,
) -> Result<Vec<u8>, CertError> {
    let digest: [u8; 32] = Sha256::digest(&tbs).into();
    let (r, s) = signer.sign_digest(&digest).map_err(CertError::Sign)?;
    let sig = p256::ecdsa::Signature::from_scalars(r, s)
        .map_err(|e| CertError::Sign(format!("r or s out of range: {e}")))?;
    p256::ecdsa::VerifyingKey::from(ca)
        .verify_prehash(&digest, &sig)
        .map_err(|_| CertError::Sign("the signature does not verify with the CA key".into()))?;
    let sig_der = sig.to_der();
    let bits = [&[0u8][..], sig_der.as_bytes()].concat();
    Ok(cons(
        der::SEQUENCE,
        &[&tbs, &ecdsa_sha256_alg(), &tlv(der::BIT_STRING, &bits)],
    ))
}

#[allow(clippy::too_many_arguments)]
fn tbs(
    serial: &[u8],
    issuer: &[u8],
    not_before_unix: u64,
    subject: &[u8],
    spki: &[u8],
    extensions: &[Vec<u8>],
) -> Vec<u8> {
    let version = cons(0xa0, &[&uint(&[2])]);
    let validity = cons(der::SEQUENCE, &[&time(not_before_unix), &not_after()]);
    let exts = cons(0xa3, &[&tlv(der::SEQUENCE, &extensions.concat())]);
    cons(
        der::SEQUENCE,
        &[
            &version,
            serial,
            &ecdsa_sha256_alg(),
            issuer,
            &validity,
            subject,
            spki,
            &exts,
        ],
    )
}

/// The vTPM CA's self-signed certificate: subject = issuer = CN "tvp vTPM CA
/// <host_id>", basicConstraints CA:TRUE pathlen 0 and keyUsage keyCertSign (both
/// critical), subjectKeyIdentifier; notAfter 99991231235959Z.
pub fn ca_certificate(
    ca_public_tpmt: &[u8],
    host_id: &str,
    not_before_unix: u64,
    signer: &mut dyn CaSigner,
) -> Result<Vec<u8>, CertError> {
    check_host_id(host_id)?;
    let (key, spki, point) = key_of(ca_public_tpmt, "CA")?;
    let name = cn_name(&ca_common_name(host_id));
    let basic = cons(der::SEQUENCE, &[&tlv(der::BOOLEAN, &[0xff]), &uint(&[0])]);
    let exts = [
        extension(&[2, 5, 29, 19], true, &basic),
        extension(&[2, 5, 29, 15], true, &key_usage(5)),
        extension(
            &[2, 5, 29, 14],
            false,
            &tlv(der::OCTET_STRING, &key_id(&point)),
        ),
    ];
    let serial = serial(&[b"ca", host_id.as_bytes(), ca_public_tpmt]);
    let tbs = tbs(&serial, &name, not_before_unix, &name, &spki, &exts);
    sign(tbs, &key, signer)
}

/// A vTPM EK or AK certificate issued by the vTPM CA: issuer = the CA's subject,
/// subject CN "tvp vTPM EK|AK <vm_id>", the key's P-256 point, serial = first 16 bytes
/// of SHA-256(role ‖ vm_id ‖ TPMT_PUBLIC) with the top bit cleared, keyUsage
/// keyAgreement (EK) or digitalSignature (AK), EKU tcg-kp-EKCertificate or
/// tcg-kp-AIKCertificate, key identifiers, and tvp's extension binding the
/// certificate to host, VM, role and the key's TPMT_PUBLIC.
pub fn key_certificate(
    ca_public_tpmt: &[u8],
    subject: &VtpmSubject<'_>,
    not_before_unix: u64,
    signer: &mut dyn CaSigner,
) -> Result<Vec<u8>, CertError> {
    key_certificate_for(
        ca_public_tpmt,
        subject,
        subject.public,
        not_before_unix,
        signer,
    )
}

/// [`key_certificate`] with the subject public key taken from `spki_tpmt` (tests make
/// certificates whose key is not their TPMT_PUBLIC's).
pub(crate) fn key_certificate_for(
    ca_public_tpmt: &[u8],
    subject: &VtpmSubject<'_>,
    spki_tpmt: &[u8],
    not_before_unix: u64,
    signer: &mut dyn CaSigner,
) -> Result<Vec<u8>, CertError> {
    check_host_id(subject.host_id)?;
    if subject.vm_id.is_empty() || subject.vm_id.len() > MAX_VM_ID {
        return Err(CertError::Subject(format!(
            "VM id of {} bytes (1 to {MAX_VM_ID})",
            subject.vm_id.len()
        )));
    }
    let (ca_key, _, ca_point) = key_of(ca_public_tpmt, "CA")?;
    let what = match subject.role {
        KeyRole::Ek => "EK",
        KeyRole::Ak => "AK",
    };
    let (_, spki, point) = key_of(spki_tpmt, what)?;
    let issuer = cn_name(&ca_common_name(subject.host_id));
    let name = cn_name(&subject.role.common_name(subject.vm_id));
    let usage = match subject.role {
        KeyRole::Ek => key_usage(4),
        KeyRole::Ak => key_usage(0),
    };
    let eku = cons(
        der::SEQUENCE,
        &[&tlv(der::OID, &oid_value(&subject.role.eku_arcs()))],
    );
    let aki = cons(der::SEQUENCE, &[&tlv(0x80, &key_id(&ca_point))]);
    let binding = binding_value(subject.host_id, subject.vm_id, subject.role, subject.public);
    let exts = [
        extension(&[2, 5, 29, 19], true, &cons(der::SEQUENCE, &[])),
        extension(&[2, 5, 29, 15], true, &usage),
        extension(&[2, 5, 29, 37], false, &eku),
        extension(
            &[2, 5, 29, 14],
            false,
            &tlv(der::OCTET_STRING, &key_id(&point)),
        ),
        extension(&[2, 5, 29, 35], false, &aki),
        extension(&[2, 25, TVP_EXTENSION_UUID], false, &binding),
    ];
    let serial = serial(&[
        subject.role.name().as_bytes(),
        subject.vm_id.as_bytes(),
        subject.public,
    ]);
    let tbs = tbs(&serial, &issuer, not_before_unix, &name, &spki, &exts);
    sign(tbs, &ca_key, signer)
}

/// PEM `CERTIFICATE` of a DER certificate (64-character lines).
pub fn to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(time(0), tlv(der::UTC_TIME, b"700101000000Z"));
        assert_eq!(time(1_796_000_000), tlv(der::UTC_TIME, b"261130005320Z"));
        // 2050-01-01T00:00:00Z
        assert_eq!(
            time(2_524_608_000),
            tlv(der::GENERALIZED_TIME, b"20500101000000Z")
        );
        assert_eq!(time(951_782_400), tlv(der::UTC_TIME, b"000229000000Z"));
    }

    #[test]
    fn key_usage_bits() {
        assert_eq!(key_usage(0), vec![3, 2, 7, 0x80]);
        assert_eq!(key_usage(4), vec![3, 2, 3, 0x08]);
        assert_eq!(key_usage(5), vec![3, 2, 2, 0x04]);
    }
}
