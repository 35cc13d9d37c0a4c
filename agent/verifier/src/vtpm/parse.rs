//! Strict reading of the vTPM certificates: PEM, the certificate's parts, its
//! signature, its extensions and tvp's binding extension. Everything is hostile input.

use base64::Engine;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};

use super::der::{self, bit_string_octets, oid_value, Reader, Tlv};
use super::{KeyRole, TVP_EXTENSION_UUID};

/// Largest PEM text accepted.
const MAX_PEM: usize = 16 << 10;

/// One extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The OID's contents octets.
    pub oid: &'a [u8],
    /// Whether it is critical.
    pub critical: bool,
    /// The extnValue OCTET STRING's contents.
    pub value: &'a [u8],
}

/// The parts of a certificate a verifier needs (borrowed from its DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCert<'a> {
    /// The TBSCertificate's whole encoding (the signed bytes).
    pub tbs: &'a [u8],
    /// The serial number's contents octets.
    pub serial: &'a [u8],
    /// The issuer Name's whole encoding.
    pub issuer: &'a [u8],
    /// The subject Name's whole encoding.
    pub subject: &'a [u8],
    /// The SubjectPublicKeyInfo's whole encoding.
    pub spki: &'a [u8],
    /// The extensions, in order (no OID twice).
    pub extensions: Vec<Extension<'a>>,
    /// The signature: a DER Ecdsa-Sig-Value.
    pub signature: &'a [u8],
}

/// tvp's extension: which host, VM and role the certificate is for, and the key's
/// TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The host id.
    pub host_id: String,
    /// The VM id.
    pub vm_id: String,
    /// EK or AK.
    pub role: KeyRole,
    /// The key's TPMT_PUBLIC.
    pub tpmt_public: Vec<u8>,
}

/// The one `CERTIFICATE` in a PEM text, as DER.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    if pem.len() > MAX_PEM {
        return Err("PEM too long".into());
    }
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN CERTIFICATE-----")
        .and_then(|s| s.strip_suffix("-----END CERTIFICATE-----"))
        .ok_or("not one PEM CERTIFICATE")?;
    let b64: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("PEM base64: {e}"))
}

fn ecdsa_sha256(t: &Tlv<'_>) -> bool {
    t.raw == super::cert::ecdsa_sha256_alg().as_slice()
}

/// Parse a certificate: X.509 v3, ECDSA with SHA-256, DER, nothing trailing; no
/// unique identifiers; extensions present, each OID once, only basicConstraints and
/// keyUsage may be critical.
pub fn parse_certificate(cert: &[u8]) -> Result<ParsedCert<'_>, String> {
    let mut outer = Reader::new(cert);
    let seq = outer.expect(der::SEQUENCE, "Certificate")?;
    outer.finish("Certificate")?;
    let mut c = Reader::new(seq.value);
    let tbs = c.expect(der::SEQUENCE, "tbsCertificate")?;
    let alg = c.expect(der::SEQUENCE, "signatureAlgorithm")?;
    let sig = c.expect(der::BIT_STRING, "signatureValue")?;
    c.finish("Certificate")?;
    if !ecdsa_sha256(&alg) {
        return Err("signature algorithm is not ecdsa-with-SHA256".into());
    }
    let mut t = Reader::new(tbs.value);
    let version = t.expect(0xa0, "version")?;
    if version.value != [der::INTEGER, 1, 2] {
        return Err("not an X.509 v3 certificate".into());
    }
    let serial = t.expect(der::INTEGER, "serialNumber")?;
    let inner_alg = t.expect(der::SEQUENCE, "signature")?;
    if !ecdsa_sha256(&inner_alg) {
        return Err("TBS signature algorithm is not ecdsa-with-SHA256".into());
    }
    let issuer = t.expect(der::SEQUENCE, "issuer")?;
    t.expect(der::SEQUENCE, "validity")?;
    let subject = t.expect(der::SEQUENCE, "subject")?;
    let spki = t.expect(der::SEQUENCE, "subjectPublicKeyInfo")?;
    let exts = t.expect(0xa3, "extensions")?;
    t.finish("tbsCertificate")?;
    let mut er = Reader::new(exts.value);
    let list = er.expect(der::SEQUENCE, "Extensions")?;
    er.finish("extensions")?;
    let mut extensions: Vec<Extension<'_>> = Vec::new();
    let mut r = Reader::new(list.value);
    while !r.is_empty() {
        let e = r.expect(der::SEQUENCE, "Extension")?;
        let mut f = Reader::new(e.value);
        let oid = f.expect(der::OID, "extnID")?.value;
        let critical = match f.optional(der::BOOLEAN)? {
            None => false,
            Some(b) if b.value == [0xff] => true,
            Some(_) => return Err("critical flag is not DER TRUE".into()),
        };
        let value = f.expect(der::OCTET_STRING, "extnValue")?.value;
        f.finish("Extension")?;
        if extensions.iter().any(|x| x.oid == oid) {
            return Err(format!("extension {} appears twice", hex::encode(oid)));
        }
        let known_critical = [oid_value(&[2, 5, 29, 19]), oid_value(&[2, 5, 29, 15])];
        if critical && !known_critical.iter().any(|k| k.as_slice() == oid) {
            return Err(format!("unknown critical extension {}", hex::encode(oid)));
        }
        extensions.push(Extension {
            oid,
            critical,
            value,
        });
    }
    if extensions.is_empty() {
        return Err("no extensions".into());
    }
    Ok(ParsedCert {
        tbs: tbs.raw,
        serial: serial.value,
        issuer: issuer.raw,
        subject: subject.raw,
        spki: spki.raw,
        extensions,
        signature: bit_string_octets(sig.value)?,
    })
}

impl ParsedCert<'_> {
    /// The subject's P-256 public key.
    pub fn public_key(&self) -> Result<p256::PublicKey, String> {
        p256::PublicKey::from_public_key_der(self.spki)
            .map_err(|e| format!("subject public key is not an EC P-256 key: {e}"))
    }

    /// Whether `key` made the certificate's signature.
    pub fn signed_by(&self, key: &p256::PublicKey) -> bool {
        let Ok(sig) = p256::ecdsa::Signature::from_der(self.signature) else {
            return false;
        };
        let digest = Sha256::digest(self.tbs);
        p256::ecdsa::VerifyingKey::from(key)
            .verify_prehash(&digest, &sig)
            .is_ok()
    }

    /// The extension with this OID (its arcs).
    pub fn extension(&self, arcs: &[u128]) -> Option<&Extension<'_>> {
        let oid = oid_value(arcs);
        self.extensions.iter().find(|e| e.oid == oid.as_slice())
    }

    /// The extended key usage OIDs (contents octets); empty without the extension.
    pub fn extended_key_usage(&self) -> Result<Vec<&[u8]>, String> {
        let Some(e) = self.extension(&[2, 5, 29, 37]) else {
            return Ok(Vec::new());
        };
        let mut r = Reader::new(e.value);
        let seq = r.expect(der::SEQUENCE, "extKeyUsage")?;
        r.finish("extKeyUsage")?;
        let mut r = Reader::new(seq.value);
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(r.expect(der::OID, "KeyPurposeId")?.value);
        }
        Ok(out)
    }

    /// tvp's extension; `Ok(None)` if absent.
    pub fn binding(&self) -> Result<Option<Binding>, String> {
        self.extension(&[2, 25, TVP_EXTENSION_UUID])
            .map(|e| parse_binding(e.value))
            .transpose()
    }
}

/// Parse tvp's extension value: SEQUENCE { hostId UTF8String, vmId UTF8String,
/// role ENUMERATED { ek(0), ak(1) }, tpmtPublic OCTET STRING }.
pub fn parse_binding(value: &[u8]) -> Result<Binding, String> {
    let mut r = Reader::new(value);
    let seq = r.expect(der::SEQUENCE, "tvp extension")?;
    r.finish("tvp extension")?;
    let mut f = Reader::new(seq.value);
    let text = |t: Tlv<'_>, what: &str| {
        String::from_utf8(t.value.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    };
    let host_id = text(f.expect(der::UTF8_STRING, "hostId")?, "hostId")?;
    let vm_id = text(f.expect(der::UTF8_STRING, "vmId")?, "vmId")?;
    let role = f.expect(der::ENUMERATED, "role")?;
    let role = match role.value {
        [n] => KeyRole::from_number(*n),
        _ => None,
    }
    .ok_or("role is not ek(0) or ak(1)")?;
    let tpmt_public = f.expect(der::OCTET_STRING, "tpmtPublic")?.value.to_vec();
    f.finish("tvp extension")?;
    Ok(Binding {
        host_id,
        vm_id,
        role,
        tpmt_public,
    })
}
