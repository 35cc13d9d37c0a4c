//! The audit anchor's NV_Extend in an HMAC session salted to the EK, with command
//! parameter encryption, spoken in raw TPM2 commands (ESAPI 7.7 has no NV_Extend; see
//! [`super::nv`]).
//!
//! What it hides and proves. The extended digest (the audit chain head) travels
//! AES-128-CFB encrypted under a key derived from a salt only tvpd and this TPM know
//! (the salt goes to the TPM RSA-OAEP encrypted to the EK). The TPM's response carries
//! an HMAC under the same session key, which tvpd checks: a bus interposer can neither
//! read the digest nor fake a successful extend (fail closed: the append fails).
//!
//! Reuse. One session serves every NV_Extend for the life of the connection
//! (`continueSession`): starting one costs an RSA decryption in the TPM. Reuse is safe
//! because each command carries a fresh caller nonce and each response a fresh TPM
//! nonce, so every command's HMAC and encryption key differ and a recorded command
//! cannot be replayed. Any failure drops the session (flushing it when possible); the
//! next extend starts a new one.
//!
//! TPM 2.0 Part 1 §19.6 (session key, KDFa), §19.6.8/§21.3 (CFB parameter encryption),
//! Part 1 §19.6.4–19.6.5 and §18.7 (command and response HMAC); Part 3 §11.1
//! (StartAuthSession) and §31.7 (NV_Extend).

use aes::cipher::{BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use rsa::{Oaep, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::error::TpmError;
use super::hygiene::{response_code, RawTcti};

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const CC_START_AUTH_SESSION: u32 = 0x0000_0176;
const CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const CC_NV_EXTEND: u32 = 0x0000_0136;
const RH_NULL: u32 = 0x4000_0007;
const SE_HMAC: u8 = 0x00;
const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;
const ALG_SHA256: u16 = 0x000b;
/// TPMA_SESSION continueSession | decrypt (the command's first parameter is encrypted).
const ATTRS: u8 = 0x01 | 0x20;
/// TPM_RC_REFERENCE_S0: the session handle no longer names a loaded session (e.g. the
/// TPM restarted); the command did not run, so a new session may retry it.
const RC_REFERENCE_S0: u32 = 0x0000_0910;

type HmacSha256 = Hmac<Sha256>;

/// A live salted HMAC session and the state to use it again.
pub(super) struct NvSession {
    handle: u32,
    key: [u8; 32],
    nonce_tpm: Vec<u8>,
}

fn bad(reason: &str) -> TpmError {
    TpmError::Encoding {
        what: "TPM response (salted NV session)",
        reason: reason.into(),
    }
}

fn nonce() -> [u8; 32] {
    rand::random()
}

fn tpm2b(v: &mut Vec<u8>, b: &[u8]) {
    v.extend_from_slice(&(b.len() as u16).to_be_bytes());
    v.extend_from_slice(b);
}

fn take_tpm2b(b: &[u8]) -> Result<(&[u8], &[u8]), TpmError> {
    let n = b.get(..2).ok_or_else(|| bad("truncated TPM2B size"))?;
    let n = u16::from_be_bytes([n[0], n[1]]) as usize;
    let data = b.get(2..2 + n).ok_or_else(|| bad("truncated TPM2B"))?;
    Ok((data, &b[2 + n..]))
}

fn finish(mut v: Vec<u8>) -> Vec<u8> {
    let len = (v.len() as u32).to_be_bytes();
    v[2..6].copy_from_slice(&len);
    v
}

fn header(tag: u16, cc: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(128);
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&cc.to_be_bytes());
    v
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], TpmError> {
    // HMAC takes a key of any length; the error path exists only in the signature.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key)
        .map_err(|e| TpmError::Refused(format!("HMAC key: {e}")))?;
    for p in parts {
        m.update(p);
    }
    Ok(m.finalize().into_bytes().into())
}

/// KDFa with SHA-256 for 256 bits (one counter round): HMAC(key, 1 || label || 0 ||
/// contextU || contextV || 256).
fn kdfa256(key: &[u8], label: &[u8], u: &[u8], v: &[u8]) -> Result<[u8; 32], TpmError> {
    hmac(
        key,
        &[
            &1u32.to_be_bytes(),
            label,
            &[0],
            u,
            v,
            &256u32.to_be_bytes(),
        ],
    )
}

/// AES-128-CFB encryption in place (full feedback, the TPM's CFB).
fn cfb_encrypt(key: [u8; 16], iv: [u8; 16], data: &mut [u8]) {
    let cipher = aes::Aes128::new(&key.into());
    let mut prev: aes::Block = iv.into();
    for chunk in data.chunks_mut(16) {
        let mut ks = prev;
        cipher.encrypt_block(&mut ks);
        for (c, k) in chunk.iter_mut().zip(ks.iter()) {
            *c ^= k;
        }
        prev[..chunk.len()].copy_from_slice(chunk);
    }
}

impl NvSession {
    /// Start an HMAC session salted to the EK (`ek_handle`, public key `ek`), with
    /// AES-128-CFB parameter encryption and SHA-256.
    pub(super) fn start(
        raw: &mut RawTcti,
        ek_handle: u32,
        ek: &RsaPublicKey,
    ) -> Result<Self, TpmError> {
        let salt = nonce();
        let nonce_caller = nonce();
        let mut rng = rand::thread_rng();
        let encrypted = ek
            .encrypt(
                &mut rng,
                Oaep::new_with_label::<Sha256, _>("SECRET\0"),
                &salt,
            )
            .map_err(|e| TpmError::Refused(format!("cannot encrypt the salt to the EK: {e}")))?;
        let mut c = header(ST_NO_SESSIONS, CC_START_AUTH_SESSION);
        c.extend_from_slice(&ek_handle.to_be_bytes());
        c.extend_from_slice(&RH_NULL.to_be_bytes());
        tpm2b(&mut c, &nonce_caller);
        tpm2b(&mut c, &encrypted);
        c.push(SE_HMAC);
        for x in [ALG_AES, 128, ALG_CFB, ALG_SHA256] {
            c.extend_from_slice(&x.to_be_bytes());
        }
        let r = raw.execute(&finish(c))?;
        match response_code(&r) {
            0 => {}
            rc => {
                return Err(TpmError::Refused(format!(
                    "TPM command StartAuthSession (salted to the EK, for NV_Extend) failed \
                     with response code {rc:#x}"
                )))
            }
        }
        let h = r.get(10..14).ok_or_else(|| bad("no session handle"))?;
        let handle = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let (nonce_tpm, _) = take_tpm2b(r.get(14..).unwrap_or_default())?;
        if nonce_tpm.len() < 16 {
            return Err(bad("nonceTPM shorter than 16 bytes"));
        }
        // sessionKey = KDFa(SHA-256, salt, "ATH", nonceTPM, nonceCaller, 256)
        let key = kdfa256(&salt, b"ATH", nonce_tpm, &nonce_caller)?;
        Ok(NvSession {
            handle,
            key,
            nonce_tpm: nonce_tpm.to_vec(),
        })
    }

    /// TPM2_NV_Extend of `data` into `index` (whose TPM name is `name`), authorized by
    /// the index's empty auth value through this session, `data` encrypted on the bus,
    /// and the response HMAC checked. Returns the TPM's response code if it refused
    /// (the session is then spent).
    pub(super) fn nv_extend(
        &mut self,
        raw: &mut RawTcti,
        index: u32,
        name: &[u8],
        data: &[u8; 32],
    ) -> Result<(), NvExtendError> {
        let nonce_caller = nonce();
        // Command parameter encryption: KDFa(sessionKey, "CFB", nonceCaller, nonceTPM).
        let k = kdfa256(&self.key, b"CFB", &nonce_caller, &self.nonce_tpm)?;
        let (key, iv) = k.split_at(16);
        let mut enc = *data;
        cfb_encrypt(
            key.try_into().map_err(|_| bad("KDFa output"))?,
            iv.try_into().map_err(|_| bad("KDFa output"))?,
            &mut enc,
        );
        let mut params = Vec::with_capacity(34);
        tpm2b(&mut params, &enc);
        // cpHash = H(commandCode || name(authHandle) || name(nvIndex) || parameters)
        let cp = Sha256::new()
            .chain_update(CC_NV_EXTEND.to_be_bytes())
            .chain_update(name)
            .chain_update(name)
            .chain_update(&params)
            .finalize();
        // The index's auth value is empty, so the HMAC key is the session key alone.
        let mac = hmac(&self.key, &[&cp, &nonce_caller, &self.nonce_tpm, &[ATTRS]])?;
        let mut auth = Vec::with_capacity(80);
        auth.extend_from_slice(&self.handle.to_be_bytes());
        tpm2b(&mut auth, &nonce_caller);
        auth.push(ATTRS);
        tpm2b(&mut auth, &mac);
        let mut c = header(ST_SESSIONS, CC_NV_EXTEND);
        c.extend_from_slice(&index.to_be_bytes());
        c.extend_from_slice(&index.to_be_bytes());
        c.extend_from_slice(&(auth.len() as u32).to_be_bytes());
        c.extend_from_slice(&auth);
        c.extend_from_slice(&params);
        let r = raw.execute(&finish(c)).map_err(NvExtendError::Tpm)?;
        let rc = response_code(&r);
        if rc != 0 {
            return Err(NvExtendError::Refused(rc));
        }
        // Response: header, parameterSize, parameters (none), TPMS_AUTH_RESPONSE.
        let size = r.get(10..14).ok_or_else(|| bad("no parameterSize"))?;
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
        let rparams = r
            .get(14..14 + size)
            .ok_or_else(|| bad("truncated parameters"))?;
        let rest = &r[14 + size..];
        let (nonce_tpm, rest) = take_tpm2b(rest)?;
        let (&attrs, rest) = rest
            .split_first()
            .ok_or_else(|| bad("no session attributes"))?;
        let (their_mac, _) = take_tpm2b(rest)?;
        let rp = Sha256::new()
            .chain_update(0u32.to_be_bytes())
            .chain_update(CC_NV_EXTEND.to_be_bytes())
            .chain_update(rparams)
            .finalize();
        let want = hmac(&self.key, &[&rp, nonce_tpm, &nonce_caller, &[attrs]])?;
        if nonce_tpm.len() < 16 || !constant_time_eq(their_mac, &want) {
            return Err(NvExtendError::Tpm(TpmError::Refused(
                "the TPM's answer to NV_Extend carries a wrong session HMAC: something \
                 between tvpd and the TPM altered or forged it; the audit record is not \
                 anchored"
                    .into(),
            )));
        }
        self.nonce_tpm = nonce_tpm.to_vec();
        Ok(())
    }

    /// Flush the session from the TPM (best effort: a lost session is flushed at the
    /// next start by [`super::hygiene::flush_stale`]).
    pub(super) fn flush(self, raw: &mut RawTcti) {
        let mut c = header(ST_NO_SESSIONS, CC_FLUSH_CONTEXT);
        c.extend_from_slice(&self.handle.to_be_bytes());
        let _ = raw.execute(&finish(c));
    }
}

/// Why a session NV_Extend failed.
pub(super) enum NvExtendError {
    /// The TPM answered with this response code.
    Refused(u32),
    /// Transport failure, a malformed response or a wrong response HMAC.
    Tpm(TpmError),
}

impl NvExtendError {
    /// Whether the command certainly did not run because the session was gone, so a
    /// fresh session may send it again.
    pub(super) fn session_lost(&self) -> bool {
        matches!(self, NvExtendError::Refused(rc) if *rc == RC_REFERENCE_S0)
    }
}

impl From<TpmError> for NvExtendError {
    fn from(e: TpmError) -> Self {
        NvExtendError::Tpm(e)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfb_matches_a_known_vector() {
        // NIST SP 800-38A F.3.13 CFB128-AES128.Encrypt, first two blocks.
        let key: [u8; 16] = hex::decode("2b7e151628aed2a6abf7158809cf4f3c")
            .unwrap()
            .try_into()
            .unwrap();
        let iv: [u8; 16] = hex::decode("000102030405060708090a0b0c0d0e0f")
            .unwrap()
            .try_into()
            .unwrap();
        let mut p = hex::decode("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
            .unwrap();
        cfb_encrypt(key, iv, &mut p);
        assert_eq!(
            hex::encode(p),
            "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b"
        );
    }

    #[test]
    fn a_changed_byte_is_not_equal() {
        assert!(constant_time_eq(&[1, 2, 3], &[1, 2, 3]));
        assert!(!constant_time_eq(&[1, 2, 3], &[1, 2, 4]));
        assert!(!constant_time_eq(&[1, 2], &[1, 2, 3]));
    }
}
