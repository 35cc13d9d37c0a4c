//! The TPM anchor of the audit chain: an NV index of type `TPM_NT_EXTEND` that `tvpd`
//! extends once per commit group with the hash of the group's last record,
//! `value' = SHA-256(value || record_hash)` (what TPM2_NV_Extend computes for a
//! SHA-256 index), starting from 32 zero bytes; and the TPM2_NV_Certify by the host's
//! attestation key (AK) that lets anyone check the value against the log. The other
//! records of a group carry `grouped: true` and are covered through the chain (the
//! last record's hash covers every record before it): [`step`] is the rule every
//! verifier folds with. A log written before group commit has one group per record.

use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Digest32;

/// The anchor of an empty log (an NV extend index reads as zeros after its first
/// extend only; before it, the log must be empty).
pub const EMPTY: Digest32 = [0u8; 32];

/// TPMA_NV bits of the anchor index (TPM 2.0 Part 2, 13.4).
pub mod attrs {
    /// TPMA_NV_AUTHWRITE: writes authorized with the index's (empty) auth value.
    pub const AUTHWRITE: u32 = 1 << 2;
    /// TPM_NT_EXTEND in bits 4..7: the index can only be modified by TPM2_NV_Extend.
    pub const NT_EXTEND: u32 = 0x4 << 4;
    /// TPMA_NV_OWNERREAD.
    pub const OWNERREAD: u32 = 1 << 17;
    /// TPMA_NV_AUTHREAD.
    pub const AUTHREAD: u32 = 1 << 18;
    /// TPMA_NV_NO_DA: no dictionary-attack lockout for the empty auth value.
    pub const NO_DA: u32 = 1 << 25;
    /// TPMA_NV_WRITTEN: set by the TPM after the first extend.
    pub const WRITTEN: u32 = 1 << 29;
    /// What `tvpd` defines (before the first write).
    pub const DEFINED: u32 = AUTHWRITE | NT_EXTEND | OWNERREAD | AUTHREAD | NO_DA;
}

/// One step of the anchor: what TPM2_NV_Extend does.
pub fn extend(anchor: &Digest32, record_hash: &Digest32) -> Digest32 {
    let mut h = Sha256::new();
    h.update(anchor);
    h.update(record_hash);
    h.finalize().into()
}

/// One record's step of the anchor: a record marked `grouped` (not the last of its
/// commit group) leaves it unchanged, any other is extended into it.
pub fn step(anchor: &Digest32, record_hash: &Digest32, grouped: bool) -> Digest32 {
    if grouped {
        *anchor
    } else {
        extend(anchor, record_hash)
    }
}

/// The anchor after `hashes` (each extended, no grouping), from `start`.
pub fn fold<'a>(start: Digest32, hashes: impl IntoIterator<Item = &'a Digest32>) -> Digest32 {
    hashes.into_iter().fold(start, |a, h| extend(&a, h))
}

/// The marshalled TPMS_NV_PUBLIC of the anchor index with `attributes`.
pub fn nv_public(index: u32, attributes: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(14);
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&0x000Bu16.to_be_bytes()); // nameAlg SHA-256
    v.extend_from_slice(&attributes.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes()); // authPolicy: empty
    v.extend_from_slice(&32u16.to_be_bytes()); // dataSize
    v
}

/// The TPM name of the anchor index once written: nameAlg || SHA-256(TPMS_NV_PUBLIC).
/// A certification naming any other index (e.g. an ordinary index an attacker can
/// overwrite at will) is refused.
pub fn expected_nv_name(index: u32) -> Vec<u8> {
    let mut n = 0x000Bu16.to_be_bytes().to_vec();
    n.extend_from_slice(&Sha256::digest(nv_public(
        index,
        attrs::DEFINED | attrs::WRITTEN,
    )));
    n
}

/// The anchor as `tvpd` serves it (`POST /v1/audit/anchor`), certified by the AK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorCertification {
    /// NV index handle.
    pub nv_index: u32,
    /// Log length when certified: the value covers records 1..=records.
    pub records: u64,
    /// Hash (hex) of record `records`.
    pub head: String,
    /// The NV value (hex).
    pub value: String,
    /// The verifier's nonce (hex), TPMS_ATTEST.extraData.
    pub nonce: String,
    /// Marshalled TPMS_ATTEST (base64) from TPM2_NV_Certify.
    pub attest: String,
    /// Marshalled TPMT_SIGNATURE (base64) by the AK.
    pub signature: String,
    /// The AK public key (PEM) that signed; check it against your host inventory.
    pub ak_public_pem: String,
}

/// Why a certification is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    /// Bad base64/hex/PEM or a truncated structure.
    #[error("anchor certification is malformed: {0}")]
    Malformed(String),
    /// The AK's signature does not verify.
    #[error("the AK signature over the NV certification does not verify (wrong AK or forged)")]
    BadSignature,
    /// Not an NV certification.
    #[error("the attestation is not a TPM2_NV_Certify result")]
    NotNvCertify,
    /// extraData differs from the nonce.
    #[error("the certification was made for another nonce (replayed)")]
    WrongNonce,
    /// The certified index is not the anchor index with tvp's attributes.
    #[error("the certified NV index is not an extend-only anchor index {index:#010x} with tvp's attributes")]
    WrongIndex { index: u32 },
    /// The certified contents differ from `value`.
    #[error("the certified NV contents differ from the reported anchor value")]
    ValueMismatch,
}

impl AnchorError {
    /// A short, stable name of the failed check (tvpctl's `--json` `reason`).
    pub fn code(&self) -> &'static str {
        match self {
            AnchorError::Malformed(_) => "certification-malformed",
            AnchorError::BadSignature => "bad-signature",
            AnchorError::NotNvCertify => "not-nv-certify",
            AnchorError::WrongNonce => "wrong-nonce",
            AnchorError::WrongIndex { .. } => "wrong-index",
            AnchorError::ValueMismatch => "value-mismatch",
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AnchorError> {
        if self.0.len() < n {
            return Err(AnchorError::Malformed("TPMS_ATTEST is truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, AnchorError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, AnchorError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], AnchorError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// The parts of a TPMS_ATTEST for NV_Certify that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvCertifyInfo {
    /// extraData (the nonce).
    pub extra_data: Vec<u8>,
    /// indexName.
    pub index_name: Vec<u8>,
    /// offset.
    pub offset: u16,
    /// nvContents.
    pub contents: Vec<u8>,
}

/// Parse a marshalled TPMS_ATTEST of type TPM_ST_ATTEST_NV.
pub fn parse_nv_attest(attest: &[u8]) -> Result<NvCertifyInfo, AnchorError> {
    let mut r = Reader(attest);
    if r.u32()? != 0xff54_4347 || r.u16()? != 0x8014 {
        return Err(AnchorError::NotNvCertify);
    }
    r.tpm2b()?; // qualifiedSigner
    let extra_data = r.tpm2b()?.to_vec();
    r.take(17)?; // clockInfo
    r.take(8)?; // firmwareVersion
    let index_name = r.tpm2b()?.to_vec();
    let offset = r.u16()?;
    let contents = r.tpm2b()?.to_vec();
    Ok(NvCertifyInfo {
        extra_data,
        index_name,
        offset,
        contents,
    })
}

/// The AK as the certification's signature is checked with.
enum AkKey {
    Rsa(Box<rsa::RsaPublicKey>),
    P256(p256::ecdsa::VerifyingKey),
}

fn verify_signature(ak_pem: &str, attest: &[u8], sig: &[u8]) -> Result<(), AnchorError> {
    // Surrounding whitespace is not part of the key (a PEM cut out of JSON with sed
    // ends in a blank line, which the strict PEM parser would refuse).
    let pem = format!("{}\n", ak_pem.trim());
    let key = match rsa::RsaPublicKey::from_public_key_pem(&pem) {
        Ok(k) => AkKey::Rsa(Box::new(k)),
        Err(rsa_err) => p256::ecdsa::VerifyingKey::from_public_key_pem(&pem)
            .map(AkKey::P256)
            .map_err(|_| {
                AnchorError::Malformed(format!(
                    "AK public key: neither RSA nor ECDSA P-256 ({rsa_err})"
                ))
            })?,
    };
    // TPMT_SIGNATURE: sigAlg, hash (SHA-256 0x000B), then for RSASSA (0x0014) a TPM2B
    // signature, for ECDSA (0x0018) the TPM2B r and the TPM2B s.
    let mut r = Reader(sig);
    let (alg, hash) = (r.u16()?, r.u16()?);
    if hash != 0x000B || !matches!(alg, 0x0014 | 0x0018) {
        return Err(AnchorError::Malformed(
            "signature is neither RSASSA-SHA256 nor ECDSA-SHA256".into(),
        ));
    }
    // A scheme that does not fit the trusted AK's key type was not made by it.
    match (key, alg) {
        (AkKey::Rsa(key), 0x0014) => {
            let s = Signature::try_from(r.tpm2b()?).map_err(|_| AnchorError::BadSignature)?;
            VerifyingKey::<Sha256>::new(*key)
                .verify(attest, &s)
                .map_err(|_| AnchorError::BadSignature)
        }
        (AkKey::P256(key), 0x0018) => {
            let (sr, ss) = (scalar(r.tpm2b()?)?, scalar(r.tpm2b()?)?);
            let s = p256::ecdsa::Signature::from_scalars(sr, ss)
                .map_err(|_| AnchorError::BadSignature)?;
            key.verify(attest, &s)
                .map_err(|_| AnchorError::BadSignature)
        }
        _ => Err(AnchorError::BadSignature),
    }
}

/// An ECDSA P-256 r or s, left-padded to 32 bytes.
fn scalar(v: &[u8]) -> Result<[u8; 32], AnchorError> {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let v = &v[start..];
    let mut out = [0u8; 32];
    out.get_mut(
        32usize
            .checked_sub(v.len())
            .ok_or(AnchorError::BadSignature)?..,
    )
    .ok_or(AnchorError::BadSignature)?
    .copy_from_slice(v);
    Ok(out)
}

impl AnchorCertification {
    /// Check the certification with the AK `ak_pem` (pass the inventory's AK; `None`
    /// trusts the key carried in the certification, which whoever made the file chose)
    /// and, if given, the verifier's `nonce` (`None` accepts any, so an old
    /// certification could be replayed). A tenant's verifier passes both
    /// (`tvpctl audit verify` refuses otherwise unless told explicitly). Returns the
    /// certified anchor value.
    pub fn verify(
        &self,
        ak_pem: Option<&str>,
        nonce: Option<&[u8]>,
    ) -> Result<Digest32, AnchorError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let attest = b64
            .decode(&self.attest)
            .map_err(|e| AnchorError::Malformed(format!("attest: {e}")))?;
        let sig = b64
            .decode(&self.signature)
            .map_err(|e| AnchorError::Malformed(format!("signature: {e}")))?;
        verify_signature(ak_pem.unwrap_or(&self.ak_public_pem), &attest, &sig)?;
        let info = parse_nv_attest(&attest)?;
        let own_nonce =
            hex::decode(&self.nonce).map_err(|e| AnchorError::Malformed(format!("nonce: {e}")))?;
        if info.extra_data != own_nonce || nonce.is_some_and(|n| n != own_nonce.as_slice()) {
            return Err(AnchorError::WrongNonce);
        }
        if info.index_name != expected_nv_name(self.nv_index) || info.offset != 0 {
            return Err(AnchorError::WrongIndex {
                index: self.nv_index,
            });
        }
        let value = crate::digest_from_hex(&self.value)
            .ok_or_else(|| AnchorError::Malformed("value is not a hex SHA-256 digest".into()))?;
        if info.contents != value {
            return Err(AnchorError::ValueMismatch);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_matches_nv_extend_definition() {
        let h = [1u8; 32];
        let mut cat = [0u8; 64];
        cat[32..].copy_from_slice(&h);
        let want: Digest32 = Sha256::digest(cat).into();
        assert_eq!(fold(EMPTY, [&h]), want);
    }

    #[test]
    fn attest_parser_rejects_other_types() {
        let mut a = vec![0xff, 0x54, 0x43, 0x47, 0x80, 0x18];
        a.extend_from_slice(&[0; 40]);
        assert_eq!(parse_nv_attest(&a), Err(AnchorError::NotNvCertify));
        assert!(matches!(
            parse_nv_attest(&[0xff, 0x54]),
            Err(AnchorError::Malformed(_))
        ));
    }

    fn tpm2b(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }

    /// A certification by an ECC P-256 AK (ECDSA-SHA256 TPMT_SIGNATURE, r and s as
    /// TPM2Bs) verifies; a changed value or another key's signature does not.
    #[test]
    fn ecdsa_p256_certification_verifies() {
        use p256::ecdsa::signature::Signer as _;
        use p256::pkcs8::EncodePublicKey as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (index, nonce, value) = (0x0150_0000u32, [7u8; 20], [9u8; 32]);
        let mut attest = Vec::new();
        attest.extend_from_slice(&0xff54_4347u32.to_be_bytes());
        attest.extend_from_slice(&0x8014u16.to_be_bytes());
        tpm2b(&mut attest, &[0x00, 0x0b, 1, 2, 3, 4]);
        tpm2b(&mut attest, &nonce);
        attest.extend_from_slice(&[0u8; 25]);
        tpm2b(&mut attest, &expected_nv_name(index));
        attest.extend_from_slice(&0u16.to_be_bytes());
        tpm2b(&mut attest, &value);
        let key = p256::ecdsa::SigningKey::from_slice(&[0x33; 32]).unwrap();
        let sign = |msg: &[u8]| {
            let sig: p256::ecdsa::Signature = key.sign(msg);
            let (r, s) = sig.split_bytes();
            let mut out = vec![0x00, 0x18, 0x00, 0x0b];
            tpm2b(&mut out, &r);
            tpm2b(&mut out, &s);
            out
        };
        let pem = key
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let cert = AnchorCertification {
            nv_index: index,
            records: 1,
            head: hex::encode([1u8; 32]),
            value: hex::encode(value),
            nonce: hex::encode(nonce),
            signature: b64.encode(sign(&attest)),
            attest: b64.encode(&attest),
            ak_public_pem: pem.clone(),
        };
        assert_eq!(cert.verify(Some(&pem), Some(&nonce)), Ok(value));
        let mut other = attest.clone();
        *other.last_mut().unwrap() ^= 1;
        let forged = AnchorCertification {
            signature: b64.encode(sign(&other)),
            ..cert.clone()
        };
        assert_eq!(
            forged.verify(Some(&pem), Some(&nonce)),
            Err(AnchorError::BadSignature)
        );
        // An RSASSA signature is not the ECC AK's, whatever it carries.
        let mut rsassa = vec![0x00, 0x14, 0x00, 0x0b];
        tpm2b(&mut rsassa, &[1u8; 256]);
        let other_scheme = AnchorCertification {
            signature: b64.encode(rsassa),
            ..cert.clone()
        };
        assert_eq!(
            other_scheme.verify(Some(&pem), Some(&nonce)),
            Err(AnchorError::BadSignature)
        );
    }
}
