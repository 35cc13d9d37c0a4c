//! Verifying a vTPM identity against the pinned host AK, and a vTPM quote against the
//! AK it certifies.

use super::cert::cn_name;
use super::der::oid_value;
use super::parse::{parse_certificate, pem_to_der, ParsedCert};
use super::{
    ca_common_name, p256_point, KeyRole, VerifiedVtpm, VtpmError, VtpmExpect, VtpmIdentity,
    VTPM_IDENTITY_VERSION,
};
use crate::tpm::alg::{ALG_ECDSA, ALG_SHA256};
use crate::tpm::public::{
    ATTR_DECRYPT, ATTR_FIXED_PARENT, ATTR_FIXED_TPM, ATTR_RESTRICTED, ATTR_SIGN,
};
use crate::tpm::{Attest, Public, Signature};
use crate::verify::certify::{check_certify, CertifyError};
use crate::verify::AkKey;

/// TPMA_OBJECT sensitiveDataOrigin.
const ATTR_SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;

fn attrs_missing(a: u32, required: u32, forbidden: u32) -> Option<String> {
    let names = [
        (ATTR_FIXED_TPM, "fixedTPM"),
        (ATTR_FIXED_PARENT, "fixedParent"),
        (ATTR_SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (ATTR_RESTRICTED, "restricted"),
        (ATTR_DECRYPT, "decrypt"),
        (ATTR_SIGN, "sign"),
    ];
    let mut why = Vec::new();
    for (bit, name) in names {
        if required & bit != 0 && a & bit == 0 {
            why.push(format!("is not {name}"));
        }
        if forbidden & bit != 0 && a & bit != 0 {
            why.push(format!("is {name}"));
        }
    }
    (!why.is_empty()).then(|| format!("(attributes {a:#010x}) {}", why.join(", ")))
}

/// The CA key: P-256, ECDSA-SHA256, fixedTPM|fixedParent|sensitiveDataOrigin|sign,
/// neither restricted nor decrypt.
fn check_ca_key(p: &Public) -> Result<p256::PublicKey, VtpmError> {
    let key = p256_point(p).ok_or_else(|| VtpmError::CaKey("is not an ECC P-256 key".into()))?;
    let required = ATTR_FIXED_TPM | ATTR_FIXED_PARENT | ATTR_SENSITIVE_DATA_ORIGIN | ATTR_SIGN;
    if let Some(why) = attrs_missing(
        p.object_attributes,
        required,
        ATTR_RESTRICTED | ATTR_DECRYPT,
    ) {
        return Err(VtpmError::CaKey(why));
    }
    if p.scheme.alg != ALG_ECDSA || p.scheme.hash != Some(ALG_SHA256) {
        return Err(VtpmError::CaKey(format!(
            "has scheme {:#06x}/{:?}, not ECDSA-SHA256",
            p.scheme.alg, p.scheme.hash
        )));
    }
    Ok(key)
}

/// The vTPM EK: P-256, restricted, decrypt, fixedTPM, fixedParent, not sign.
fn check_ek(p: &Public) -> Result<(), VtpmError> {
    p256_point(p).ok_or_else(|| VtpmError::EkKey("is not an ECC P-256 key".into()))?;
    let required = ATTR_FIXED_TPM | ATTR_FIXED_PARENT | ATTR_RESTRICTED | ATTR_DECRYPT;
    match attrs_missing(p.object_attributes, required, ATTR_SIGN) {
        Some(why) => Err(VtpmError::EkKey(why)),
        None => Ok(()),
    }
}

/// The vTPM AK: P-256, ECDSA-SHA256, restricted, sign, fixedTPM, fixedParent,
/// sensitiveDataOrigin, not decrypt (`vtpm:ak-key`). Returns its point.
pub fn check_ak(p: &Public) -> Result<p256::PublicKey, VtpmError> {
    let key = p256_point(p).ok_or_else(|| VtpmError::AkKey("is not an ECC P-256 key".into()))?;
    let required = ATTR_FIXED_TPM
        | ATTR_FIXED_PARENT
        | ATTR_SENSITIVE_DATA_ORIGIN
        | ATTR_RESTRICTED
        | ATTR_SIGN;
    if let Some(why) = attrs_missing(p.object_attributes, required, ATTR_DECRYPT) {
        return Err(VtpmError::AkKey(why));
    }
    if p.scheme.alg != ALG_ECDSA || p.scheme.hash != Some(ALG_SHA256) {
        return Err(VtpmError::AkKey(format!(
            "has scheme {:#06x}/{:?}, not ECDSA-SHA256",
            p.scheme.alg, p.scheme.hash
        )));
    }
    Ok(key)
}

fn parse_pem<'a>(der: &'a [u8], what: &str) -> Result<ParsedCert<'a>, VtpmError> {
    parse_certificate(der).map_err(|e| VtpmError::Format(format!("{what}: {e}")))
}

fn pem(text: &str, what: &str) -> Result<Vec<u8>, VtpmError> {
    pem_to_der(text).map_err(|e| VtpmError::Format(format!("{what}: {e}")))
}

/// A key certificate checked against the CA: returns the key's TPMT_PUBLIC, parsed.
fn check_key_cert(
    der: &[u8],
    role: KeyRole,
    ca: &p256::PublicKey,
    ca_subject: &[u8],
    host_id: &str,
    vm_id: &str,
) -> Result<Public, VtpmError> {
    let what = format!("{} certificate", role.name().to_uppercase());
    let cert = parse_pem(der, &what)?;
    if !cert.signed_by(ca) {
        return Err(VtpmError::CertSignature { role });
    }
    if cert.issuer != ca_subject {
        return Err(VtpmError::CertIssuer { role });
    }
    let binding = cert
        .binding()
        .map_err(|msg| VtpmError::CertBinding { role, msg })?
        .ok_or_else(|| VtpmError::CertBinding {
            role,
            msg: "absent: not a tvp vTPM certificate".into(),
        })?;
    if binding.role != role {
        return Err(VtpmError::Role {
            expected: role,
            msg: format!(
                "is a vTPM {} certificate",
                binding.role.name().to_uppercase()
            ),
        });
    }
    let eku = cert
        .extended_key_usage()
        .map_err(|e| VtpmError::Format(format!("{what}: {e}")))?;
    if !eku.contains(&oid_value(&role.eku_arcs()).as_slice()) {
        return Err(VtpmError::Role {
            expected: role,
            msg: "lacks that role's extended key usage".into(),
        });
    }
    if binding.host_id != host_id {
        return Err(VtpmError::Host {
            what,
            found: binding.host_id,
            expected: host_id.into(),
        });
    }
    if binding.vm_id != vm_id {
        return Err(VtpmError::Vm {
            what,
            found: binding.vm_id,
            expected: vm_id.into(),
        });
    }
    let public = Public::parse_tpmt(&binding.tpmt_public)
        .map_err(|e| VtpmError::Format(format!("{what}'s TPMT_PUBLIC: {e}")))?;
    let spki = cert
        .public_key()
        .map_err(|e| VtpmError::Format(format!("{what}: {e}")))?;
    if p256_point(&public) != Some(spki) {
        return Err(VtpmError::CertKey { role });
    }
    Ok(public)
}

/// Verify a VM's TPM identity: the host AK's certification of the CA key (signature,
/// `nonce`, name), the CA key's attributes, the CA certificate (its key, its
/// self-signature), then the EK and AK certificates (signed by the CA key, issued by
/// the CA, bound to this host, VM and role, their key = their TPMT_PUBLIC's, and the
/// keys' attributes). The first failure is returned.
pub fn verify_identity(
    id: &VtpmIdentity,
    host_ak: &AkKey,
    nonce: &[u8],
    expect: &VtpmExpect<'_>,
) -> Result<VerifiedVtpm, VtpmError> {
    if id.version != VTPM_IDENTITY_VERSION {
        return Err(VtpmError::Version {
            found: id.version,
            supported: VTPM_IDENTITY_VERSION,
        });
    }
    if id.vm_id != expect.vm_id {
        return Err(VtpmError::Vm {
            what: "the identity".into(),
            found: id.vm_id.clone(),
            expected: expect.vm_id.into(),
        });
    }
    if let Some(h) = expect.host_id {
        if id.host_id != h {
            return Err(VtpmError::Host {
                what: "the identity".into(),
                found: id.host_id.clone(),
                expected: h.into(),
            });
        }
    }
    let ca_public = Public::parse_tpmt(&id.ca_public)
        .map_err(|e| VtpmError::Format(format!("ca_public: {e}")))?;
    check_certify(
        &ca_public,
        &id.ca_certify.attest,
        &id.ca_certify.signature,
        host_ak,
        nonce,
    )
    .map_err(|e| match e {
        CertifyError::Format(m) => VtpmError::Format(format!("ca_certify: {m}")),
        CertifyError::Signature(m) => VtpmError::CaCertifySignature(m),
        CertifyError::Nonce { got, want } => VtpmError::CaCertifyNonce { got, want },
        CertifyError::Name { certified, key } => VtpmError::CaCertifyName { certified, key },
    })?;
    let ca_key = check_ca_key(&ca_public)?;
    let ca_name = ca_public
        .name()
        .ok_or_else(|| VtpmError::Format("ca_public: unsupported name algorithm".into()))?;

    let ca_der = pem(&id.ca_certificate_pem, "CA certificate")?;
    let ca_cert = parse_pem(&ca_der, "CA certificate")?;
    let ca_cert_key = ca_cert
        .public_key()
        .map_err(|e| VtpmError::Format(format!("CA certificate: {e}")))?;
    if ca_cert_key != ca_key {
        return Err(VtpmError::CaCertificate(
            "the CA certificate's key is not the CA key the host AK certified".into(),
        ));
    }
    if !ca_cert.signed_by(&ca_key) || ca_cert.issuer != ca_cert.subject {
        return Err(VtpmError::CaCertificate(
            "the CA certificate is not self-signed by the CA key".into(),
        ));
    }
    if ca_cert.subject != cn_name(&ca_common_name(&id.host_id)).as_slice() {
        return Err(VtpmError::Host {
            what: "the CA certificate".into(),
            found: "another host (its subject is not this host's vTPM CA)".into(),
            expected: id.host_id.clone(),
        });
    }

    let ek_der = pem(&id.ek_certificate_pem, "EK certificate")?;
    let ek = check_key_cert(
        &ek_der,
        KeyRole::Ek,
        &ca_key,
        ca_cert.subject,
        &id.host_id,
        expect.vm_id,
    )?;
    let ak_der = pem(&id.ak_certificate_pem, "AK certificate")?;
    let ak = check_key_cert(
        &ak_der,
        KeyRole::Ak,
        &ca_key,
        ca_cert.subject,
        &id.host_id,
        expect.vm_id,
    )?;
    check_ek(&ek)?;
    let ak_key = check_ak(&ak)?;
    let name = |p: &Public| {
        p.name()
            .ok_or_else(|| VtpmError::Format("vTPM key: unsupported name algorithm".into()))
    };
    Ok(VerifiedVtpm {
        host_id: id.host_id.clone(),
        vm_id: id.vm_id.clone(),
        ek_name: name(&ek)?,
        ak_name: name(&ak)?,
        ek_public: ek.tpmt_bytes,
        ak_public: ak.tpmt_bytes,
        ak_key: AkKey::P256(ak_key),
        ca_name,
    })
}

/// Check a quote of the VM's TPM (TPMS_ATTEST and TPMT_SIGNATURE as the vTPM marshals
/// them) with the certified vTPM AK: its signature, its qualifying data (`nonce`) and
/// that it names a signer of the AK's name algorithm. Returns the parsed quote; the
/// caller compares its PCR digest with the values it expects.
pub fn verify_vtpm_quote(
    v: &VerifiedVtpm,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
) -> Result<Attest, VtpmError> {
    verify_quote_by(&v.ak_key, &v.ak_name, attest, signature, nonce)
}

/// [`verify_vtpm_quote`] with the AK given by its key and TPM name, for a caller that
/// trusts the AK another way than through its certificate (the boot server: the
/// attested configuration page names the AK by its digest).
pub fn verify_quote_by(
    ak_key: &AkKey,
    ak_name: &[u8],
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
) -> Result<Attest, VtpmError> {
    let parsed =
        Attest::parse(attest).map_err(|e| VtpmError::Format(format!("vTPM quote: {e}")))?;
    let sig = Signature::parse(signature)
        .map_err(|e| VtpmError::Format(format!("vTPM quote signature: {e}")))?;
    ak_key
        .verify(attest, &sig)
        .map_err(VtpmError::QuoteSignature)?;
    if parsed.extra_data != nonce {
        return Err(VtpmError::QuoteNonce {
            got: hex::encode(&parsed.extra_data),
            want: hex::encode(nonce),
        });
    }
    let signer = &parsed.qualified_signer;
    if signer.len() != ak_name.len() || signer.get(..2) != ak_name.get(..2) {
        return Err(VtpmError::QuoteSigner(hex::encode(signer)));
    }
    Ok(parsed)
}
