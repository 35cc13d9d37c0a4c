//! TPM2B_PUBLIC / TPMT_PUBLIC of an RSA or ECC key, and the TPM *name* and
//! *qualified name* derived from it.

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::alg::{digest_size, ALG_ECC, ALG_NULL, ALG_RSA, ALG_SHA256, ALG_SHA384, ALG_SHA512};
use super::reader::{ParseError, Reader, Writer};

/// Largest RSA modulus accepted (RSA-4096).
pub const MAX_RSA_MODULUS: usize = 512;
/// Largest ECC coordinate accepted (P-521).
pub const MAX_ECC_COORD: usize = 66;

/// TPMA_OBJECT bit: fixedTPM.
pub const ATTR_FIXED_TPM: u32 = 1 << 1;
/// TPMA_OBJECT fixedParent.
pub const ATTR_FIXED_PARENT: u32 = 1 << 4;
/// TPMA_OBJECT userWithAuth.
pub const ATTR_USER_WITH_AUTH: u32 = 1 << 6;
/// TPMA_OBJECT bit: restricted.
pub const ATTR_RESTRICTED: u32 = 1 << 16;
/// TPMA_OBJECT bit: decrypt.
pub const ATTR_DECRYPT: u32 = 1 << 17;
/// TPMA_OBJECT bit: sign / encrypt.
pub const ATTR_SIGN: u32 = 1 << 18;

/// TPMT_SYM_DEF_OBJECT: `None` for TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// Symmetric algorithm.
    pub alg: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// Block cipher mode.
    pub mode: u16,
}

/// A signing/decryption scheme: algorithm and, unless NULL, its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// Scheme algorithm (TPM_ALG_NULL if none).
    pub alg: u16,
    /// Hash algorithm, if the scheme is not NULL.
    pub hash: Option<u16>,
}

/// The type-specific parameters and unique field of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// TPM_ALG_RSA.
    Rsa {
        /// Modulus size in bits.
        key_bits: u16,
        /// Public exponent (0 on the wire means 65537; stored resolved).
        exponent: u32,
        /// Modulus, big-endian.
        modulus: Vec<u8>,
    },
    /// TPM_ALG_ECC.
    Ecc {
        /// TPM_ECC_CURVE.
        curve: u16,
        /// Key derivation scheme.
        kdf: Scheme,
        /// Affine x, big-endian.
        x: Vec<u8>,
        /// Affine y, big-endian.
        y: Vec<u8>,
    },
}

/// A parsed TPMT_PUBLIC (keeping its exact wire bytes, from which the name is hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// Name algorithm.
    pub name_alg: u16,
    /// TPMA_OBJECT.
    pub object_attributes: u32,
    /// Authorization policy digest.
    pub auth_policy: Vec<u8>,
    /// Symmetric algorithm for a storage key, `None` if TPM_ALG_NULL.
    pub symmetric: Option<SymDef>,
    /// Signing or encryption scheme.
    pub scheme: Scheme,
    /// Key type specific fields.
    pub key: PublicKey,
    /// The marshalled TPMT_PUBLIC exactly as received.
    pub tpmt_bytes: Vec<u8>,
}

fn scheme(r: &mut Reader<'_>, what: &'static str) -> Result<Scheme, ParseError> {
    let alg = r.u16(what)?;
    let hash = if alg == ALG_NULL {
        None
    } else {
        Some(r.u16(what)?)
    };
    Ok(Scheme { alg, hash })
}

fn symmetric(r: &mut Reader<'_>) -> Result<Option<SymDef>, ParseError> {
    let alg = r.u16("parameters.symmetric.algorithm")?;
    if alg == ALG_NULL {
        return Ok(None);
    }
    Ok(Some(SymDef {
        alg,
        key_bits: r.u16("parameters.symmetric.keyBits")?,
        mode: r.u16("parameters.symmetric.mode")?,
    }))
}

/// Hash `data` with a TPM hash algorithm this crate implements (SHA-256/384/512).
pub fn tpm_hash(alg: u16, data: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<D: Digest>(data: &[&[u8]]) -> Vec<u8> {
        let mut h = D::new();
        for d in data {
            h.update(d);
        }
        h.finalize().to_vec()
    }
    match alg {
        ALG_SHA256 => Some(run::<Sha256>(data)),
        ALG_SHA384 => Some(run::<Sha384>(data)),
        ALG_SHA512 => Some(run::<Sha512>(data)),
        _ => None,
    }
}

impl Public {
    /// Parse a marshalled TPM2B_PUBLIC (size-prefixed); trailing bytes are rejected.
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b(usize::from(u16::MAX), "TPM2B_PUBLIC.size")?;
        r.finish("TPM2B_PUBLIC")?;
        if inner.is_empty() {
            return Err(ParseError::invalid("TPM2B_PUBLIC", "empty public area"));
        }
        Self::parse_tpmt(inner)
    }

    /// Parse a marshalled TPMT_PUBLIC; trailing bytes are rejected.
    pub fn parse_tpmt(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let ty = r.u16("type")?;
        let name_alg = r.u16("nameAlg")?;
        if digest_size(name_alg).is_none() {
            return Err(ParseError::invalid(
                "nameAlg",
                format!("{name_alg:#06x} is not a known hash"),
            ));
        }
        let object_attributes = r.u32("objectAttributes")?;
        let auth_policy = r.tpm2b(64, "authPolicy")?.to_vec();
        let sym = symmetric(&mut r)?;
        let sch = scheme(&mut r, "parameters.scheme")?;
        let key = match ty {
            ALG_RSA => {
                let key_bits = r.u16("parameters.keyBits")?;
                let exponent = match r.u32("parameters.exponent")? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.tpm2b(MAX_RSA_MODULUS, "unique.rsa")?.to_vec();
                if modulus.len() * 8 != usize::from(key_bits) {
                    return Err(ParseError::invalid(
                        "unique.rsa",
                        format!(
                            "modulus of {} bytes does not match keyBits {key_bits}",
                            modulus.len()
                        ),
                    ));
                }
                PublicKey::Rsa {
                    key_bits,
                    exponent,
                    modulus,
                }
            }
            ALG_ECC => {
                let curve = r.u16("parameters.curveID")?;
                let kdf = scheme(&mut r, "parameters.kdf")?;
                let x = r.tpm2b(MAX_ECC_COORD, "unique.ecc.x")?.to_vec();
                let y = r.tpm2b(MAX_ECC_COORD, "unique.ecc.y")?.to_vec();
                PublicKey::Ecc { curve, kdf, x, y }
            }
            other => {
                return Err(ParseError::invalid(
                    "type",
                    format!("{other:#06x} is not RSA or ECC"),
                ))
            }
        };
        r.finish("TPMT_PUBLIC")?;
        Ok(Public {
            name_alg,
            object_attributes,
            auth_policy,
            symmetric: sym,
            scheme: sch,
            key,
            tpmt_bytes: bytes.to_vec(),
        })
    }

    /// The TPM name: `nameAlg (u16 BE) || H_nameAlg(TPMT_PUBLIC)`. `None` if the name
    /// algorithm is one this crate cannot compute (SHA-1).
    pub fn name(&self) -> Option<Vec<u8>> {
        let digest = tpm_hash(self.name_alg, &[&self.tpmt_bytes])?;
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&digest);
        Some(name)
    }
}

/// The qualified name of an object: `nameAlg || H_nameAlg(parent_qn || name)`,
/// with `nameAlg` taken from `name`'s first two bytes. A TPMS_ATTEST names its
/// signer by this, not by its plain name.
pub fn qualified_name(parent_qualified_name: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let alg_bytes: [u8; 2] = name.get(..2)?.try_into().ok()?;
    let alg = u16::from_be_bytes(alg_bytes);
    let digest = tpm_hash(alg, &[parent_qualified_name, name])?;
    let mut qn = alg_bytes.to_vec();
    qn.extend_from_slice(&digest);
    Some(qn)
}

/// The qualified name of a hierarchy (its handle, big-endian), e.g.
/// [`super::alg::RH_ENDORSEMENT`] for the parent of an EK.
pub fn hierarchy_qualified_name(handle: u32) -> Vec<u8> {
    handle.to_be_bytes().to_vec()
}

/// Marshal a TPMT_PUBLIC from its fields (for tests and tools; a parsed key keeps its
/// original bytes in [`Public::tpmt_bytes`]).
pub fn marshal_tpmt(
    name_alg: u16,
    object_attributes: u32,
    auth_policy: &[u8],
    symmetric: Option<SymDef>,
    scheme: Scheme,
    key: &PublicKey,
) -> Vec<u8> {
    let mut w = Writer::new();
    let ty = match key {
        PublicKey::Rsa { .. } => ALG_RSA,
        PublicKey::Ecc { .. } => ALG_ECC,
    };
    w.u16(ty)
        .u16(name_alg)
        .u32(object_attributes)
        .tpm2b(auth_policy);
    match symmetric {
        None => {
            w.u16(ALG_NULL);
        }
        Some(s) => {
            w.u16(s.alg).u16(s.key_bits).u16(s.mode);
        }
    }
    let put_scheme = |w: &mut Writer, s: Scheme| {
        w.u16(s.alg);
        if let Some(h) = s.hash {
            w.u16(h);
        }
    };
    put_scheme(&mut w, scheme);
    match key {
        PublicKey::Rsa {
            key_bits,
            exponent,
            modulus,
        } => {
            let e = if *exponent == 65537 { 0 } else { *exponent };
            w.u16(*key_bits).u32(e).tpm2b(modulus);
        }
        PublicKey::Ecc { curve, kdf, x, y } => {
            w.u16(*curve);
            put_scheme(&mut w, *kdf);
            w.tpm2b(x).tpm2b(y);
        }
    }
    w.into_bytes()
}

/// Wrap a TPMT_PUBLIC into a TPM2B_PUBLIC.
pub fn tpm2b_public(tpmt: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tpm2b(tpmt);
    w.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::alg::RH_ENDORSEMENT;

    /// The AK from the swtpm session whose quote is in `attest.rs`'s tests
    /// (`tpm2_createak -G rsa -g sha256 -s rsassa -u ak.pub`), header only; the
    /// modulus is not needed to check layout.
    #[test]
    fn rsa_round_trip_name_and_truncation() {
        let key = PublicKey::Rsa {
            key_bits: 2048,
            exponent: 65537,
            modulus: vec![0xc5; 256],
        };
        let scheme = Scheme {
            alg: 0x0014,
            hash: Some(ALG_SHA256),
        };
        let tpmt = marshal_tpmt(ALG_SHA256, 0x0005_0072, &[], None, scheme, &key);
        // Same header layout tpm2_createak produced.
        assert_eq!(
            hex::encode(&tpmt[..26]),
            "0001000b0005007200000010001400 0b08000000000001 00c5c5".replace(' ', "")
        );
        let b = tpm2b_public(&tpmt);
        let p = Public::parse_tpm2b(&b).unwrap();
        assert_eq!(p.key, key);
        assert_eq!(p.scheme, scheme);
        let name = p.name().unwrap();
        assert_eq!(&name[..2], &[0, 0x0b]);
        assert_eq!(name.len(), 34);
        for n in 0..b.len() {
            assert!(Public::parse_tpm2b(&b[..n]).is_err());
        }
        let mut long = b.clone();
        long.push(0);
        assert!(Public::parse_tpm2b(&long).is_err());
    }

    #[test]
    fn ecc_round_trip() {
        let key = PublicKey::Ecc {
            curve: 3,
            kdf: Scheme {
                alg: ALG_NULL,
                hash: None,
            },
            x: vec![1; 32],
            y: vec![2; 32],
        };
        let scheme = Scheme {
            alg: 0x0018,
            hash: Some(ALG_SHA256),
        };
        let tpmt = marshal_tpmt(ALG_SHA256, 0x0005_0072, &[], None, scheme, &key);
        let p = Public::parse_tpmt(&tpmt).unwrap();
        assert_eq!(p.key, key);
    }

    /// Values from a real swtpm session: name and qualified name of the AK.
    #[test]
    fn name_and_qualified_name_match_swtpm() {
        use crate::tpm::fixture as fx;
        let p = Public::parse_tpm2b(&hex::decode(fx::AK_PUB).unwrap()).unwrap();
        assert_eq!(hex::encode(p.name().unwrap()), fx::AK_NAME);
        assert!(matches!(
            p.key,
            PublicKey::Rsa {
                key_bits: 2048,
                exponent: 65537,
                ..
            }
        ));
        let ek_name = hex::decode(fx::EK_NAME).unwrap();
        let ek_qn = qualified_name(&hierarchy_qualified_name(RH_ENDORSEMENT), &ek_name).unwrap();
        let ak_qn = qualified_name(&ek_qn, &p.name().unwrap()).unwrap();
        assert_eq!(hex::encode(ak_qn), fx::AK_QUALIFIED_NAME);
        let again = marshal_tpmt(
            p.name_alg,
            p.object_attributes,
            &p.auth_policy,
            p.symmetric,
            p.scheme,
            &p.key,
        );
        assert_eq!(tpm2b_public(&again), hex::decode(fx::AK_PUB).unwrap());
    }
}
