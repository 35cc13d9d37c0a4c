//! The audit anchor's NV index: define, read, extend and certify (TPM2_NV_Certify
//! with the AK). tss-esapi 7.7 offers neither NV_Extend nor NV_Certify, so these are
//! raw TPM2 commands (TPM 2.0 Part 3) sent through [`RawTcti`]: reads, the define and
//! the certification with the empty-password session; the extend, which carries the
//! chain head, in a reused session salted to the EK with parameter encryption
//! ([`super::nv_session`]). A directly attached TPM or swtpm serves one connection at a time, so
//! the ESAPI context is closed for the duration and reopened afterwards (the EK and
//! AK are persistent: reopening only re-reads their public areas). Behind the kernel
//! resource manager (`device:/dev/tpmrm0`, the production setting) a second, raw
//! connection stays open instead and the ESAPI context is untouched.

use sha2::Digest;

use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;
use tvp_audit::anchor::{attrs, nv_public};

use super::error::TpmError;
use super::hygiene::{response_code, RawTcti};
use super::nv_session::{NvExtendError, NvSession};
use super::Tpm;

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const CC_NV_DEFINE_SPACE: u32 = 0x0000_012a;
const CC_NV_READ: u32 = 0x0000_014e;
const CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
const CC_NV_CERTIFY: u32 = 0x0000_0184;
const RH_OWNER: u32 = 0x4000_0001;
const RS_PW: u32 = 0x4000_0009;
/// TPM_RC_NV_UNINITIALIZED: an extend index before its first extend.
const RC_NV_UNINITIALIZED: u32 = 0x0000_014a;

/// The state of the anchor index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvAnchor {
    /// Defined now or before, never extended (an empty log).
    Unwritten,
    /// Its current value.
    Value([u8; 32]),
}

/// The AK's certification of the anchor index.
#[derive(Debug, Clone)]
pub struct NvCertification {
    /// Marshalled TPMS_ATTEST.
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
}

/// A TPM command under construction (header patched with the size at the end).
struct Cmd(Vec<u8>);

impl Cmd {
    fn new(tag: u16, cc: u32) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&tag.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&cc.to_be_bytes());
        Cmd(v)
    }
    fn u16(mut self, x: u16) -> Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }
    fn tpm2b(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u16).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    /// `n` empty-password authorizations (TPMS_AUTH_COMMAND, 9 bytes each).
    fn password_auths(self, n: u32) -> Self {
        let mut c = self.u32(9 * n);
        for _ in 0..n {
            c = c.u32(RS_PW).u16(0);
            c.0.push(0);
            c = c.u16(0);
        }
        c
    }
    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() as u32).to_be_bytes();
        self.0[2..6].copy_from_slice(&len);
        self.0
    }
}

/// TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: the TPM asks to send the command
/// again (ESAPI does this itself; raw commands must too).
const RC_TRY_AGAIN: [u32; 3] = [0x0000_0922, 0x0000_0908, 0x0000_090a];

/// Send a command, repeating it while the TPM answers "try again".
fn exec(raw: &mut RawTcti, cmd: &[u8]) -> Result<Vec<u8>, TpmError> {
    let mut r = raw.execute(cmd)?;
    for _ in 0..20 {
        if !RC_TRY_AGAIN.contains(&response_code(&r)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        r = raw.execute(cmd)?;
    }
    Ok(r)
}

/// Whether the TCTI reaches the kernel resource manager (`/dev/tpmrm*`), which serves
/// any number of connections; swtpm and raw devices serve one at a time.
fn shares_connections(tcti: &str) -> bool {
    tcti.starts_with("device:") && tcti.contains("tpmrm")
}

fn check(command: &'static str, r: &[u8]) -> Result<(), TpmError> {
    match response_code(r) {
        0 => Ok(()),
        rc => Err(TpmError::Refused(format!(
            "TPM command {command} failed with response code {rc:#x}"
        ))),
    }
}

/// The parameter area of a response with sessions (after header and parameterSize).
fn params(r: &[u8]) -> Result<&[u8], TpmError> {
    let bad = || TpmError::Encoding {
        what: "TPM response",
        reason: "truncated".into(),
    };
    let size = r.get(10..14).ok_or_else(bad)?;
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    r.get(14..14 + size).ok_or_else(bad)
}

fn tpm2b(b: &[u8]) -> Result<(&[u8], &[u8]), TpmError> {
    let bad = || TpmError::Encoding {
        what: "TPM2B",
        reason: "truncated".into(),
    };
    let n = b.get(..2).ok_or_else(bad)?;
    let n = u16::from_be_bytes([n[0], n[1]]) as usize;
    Ok((b.get(2..2 + n).ok_or_else(bad)?, &b[2 + n..]))
}

/// Check an index's public area is the anchor layout; returns whether it was written.
fn check_public(index: u32, r: &[u8]) -> Result<bool, TpmError> {
    let (public, _) = tpm2b(r.get(10..).unwrap_or_default())?;
    let wrong = |found: String| TpmError::WrongObject {
        handle: index,
        found,
        expected: "a tvp audit anchor (SHA-256 extend index, 32 bytes, tvp's attributes)",
    };
    let a = public
        .get(6..10)
        .ok_or_else(|| wrong("a truncated NV public area".into()))?;
    let attributes = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
    if public != nv_public(index, attributes).as_slice()
        || attributes & !attrs::WRITTEN != attrs::DEFINED
    {
        return Err(wrong(format!(
            "an NV index with attributes {attributes:#010x}"
        )));
    }
    Ok(attributes & attrs::WRITTEN != 0)
}

impl Tpm {
    /// Close the ESAPI context, run `f` on a raw connection, reopen the context.
    fn with_raw<T>(
        &mut self,
        f: impl FnOnce(&mut RawTcti) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        // Parsed once at open: parsing a TCTI string costs milliseconds (a regex).
        let conf = self.conf.clone();
        if shares_connections(&self.tcti) {
            // Behind the kernel resource manager a second connection is fine: keep
            // one open next to the ESAPI context.
            if self.raw.is_none() {
                self.raw = Some(RawTcti::open(conf, &self.tcti)?);
            }
            let result = match self.raw.as_mut() {
                Some(raw) => f(raw),
                None => Err(TpmError::ServiceStopped),
            };
            if matches!(result, Err(TpmError::Tcti { .. })) {
                self.raw = None;
            }
            return result;
        }
        drop(self.esys.take());
        let result = RawTcti::open(conf.clone(), &self.tcti).and_then(|mut raw| f(&mut raw));
        let reopened = self.reopen(conf);
        let value = result?;
        reopened?;
        Ok(value)
    }

    fn reopen(&mut self, conf: TctiNameConf) -> Result<(), TpmError> {
        let mut ctx = Context::new(conf).map_err(|e| TpmError::Tcti {
            tcti: self.tcti.clone(),
            reason: e.to_string(),
        })?;
        // The EK and AK were there a moment ago: read their public areas directly
        // (one ReadPublic each) rather than listing the persistent handles first.
        let ek = reload_persistent(&mut ctx, self.cfg.ek_handle)?;
        let ak = reload_persistent(&mut ctx, self.cfg.ak_handle)?;
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        self.esys = Some(ctx);
        self.ek = ek;
        self.ak = ak;
        Ok(())
    }

    /// Make sure the anchor index exists with tvp's attributes (define it if absent)
    /// and return its value.
    pub fn nv_anchor_open(&mut self, index: u32) -> Result<NvAnchor, TpmError> {
        let value = self.with_raw(|raw| {
            let r = exec(raw, &Cmd::new(ST_NO_SESSIONS, CC_NV_READ_PUBLIC).u32(index).finish())?;
            let written = if response_code(&r) == 0 {
                check_public(index, &r)?
            } else {
                let public = nv_public(index, attrs::DEFINED);
                let r = exec(
                    raw,
                    &Cmd::new(ST_SESSIONS, CC_NV_DEFINE_SPACE)
                        .u32(RH_OWNER)
                        .password_auths(1)
                        .tpm2b(&[])
                        .tpm2b(&public)
                        .finish(),
                )?;
                check("NV_DefineSpace (audit anchor)", &r)?;
                log::info!(nv_index = format!("{index:#010x}"); "defined the audit anchor NV index");
                false
            };
            if !written {
                return Ok(NvAnchor::Unwritten);
            }
            nv_read(raw, index)
        })?;
        self.note_written(index, value);
        Ok(value)
    }

    /// Read the anchor.
    pub fn nv_anchor_read(&mut self, index: u32) -> Result<NvAnchor, TpmError> {
        let value = self.with_raw(|raw| nv_read(raw, index))?;
        self.note_written(index, value);
        Ok(value)
    }

    /// Remember that `index` is written (its name then includes TPMA_NV_WRITTEN).
    fn note_written(&mut self, index: u32, value: NvAnchor) {
        if matches!(value, NvAnchor::Value(_)) {
            self.nv_written = Some(index);
        }
    }

    /// Extend `digest` into the anchor (TPM2_NV_Extend), in the HMAC session salted to
    /// the EK that every extend reuses, `digest` encrypted on the bus and the TPM's
    /// answer authenticated ([`super::nv_session`]).
    pub fn nv_anchor_extend(&mut self, index: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        let mut session = self.nv_session.take();
        let known_written = self.nv_written == Some(index);
        let ek_handle = self.cfg.ek_handle;
        // Parsing the PEM costs microseconds; a session start costs an RSA operation.
        let ek = ek_public(&self.identity.ek_public_pem)?;
        let result = self.with_raw(|raw| {
            let name = anchor_name(raw, index, known_written)?;
            // A reused session the TPM no longer knows (it restarted) did not run the
            // command: one retry with a fresh session. Any other failure is final.
            for attempt in 0..2 {
                let mut s = match session.take() {
                    Some(s) => s,
                    None => NvSession::start(raw, ek_handle, &ek)?,
                };
                match s.nv_extend(raw, index, &name, digest) {
                    Ok(()) => return Ok(s),
                    Err(e) if attempt == 0 && e.session_lost() => continue,
                    Err(e) => {
                        s.flush(raw);
                        return Err(match e {
                            NvExtendError::Tpm(e) => e,
                            NvExtendError::Refused(rc) => TpmError::Refused(format!(
                                "TPM command NV_Extend (audit anchor) failed with response \
                                 code {rc:#x}"
                            )),
                        });
                    }
                }
            }
            Err(TpmError::Refused(
                "NV_Extend (audit anchor): the TPM lost two sessions in a row".into(),
            ))
        });
        match result {
            Ok(s) => {
                self.nv_session = Some(s);
                self.nv_written = Some(index);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Certify the anchor's value with the AK (TPM2_NV_Certify), `nonce` as
    /// qualifying data; also returns the value certified.
    pub fn nv_anchor_certify(
        &mut self,
        index: u32,
        nonce: &[u8],
    ) -> Result<(NvCertification, NvAnchor), TpmError> {
        super::quote::check_nonce(nonce)?;
        let ak = self.cfg.ak_handle;
        let scheme = self.identity.ak_scheme.alg_id();
        self.with_raw(|raw| {
            let value = nv_read(raw, index)?;
            let r = exec(
                raw,
                &Cmd::new(ST_SESSIONS, CC_NV_CERTIFY)
                    .u32(ak)
                    .u32(index)
                    .u32(index)
                    .password_auths(2)
                    .tpm2b(nonce)
                    .u16(scheme) // TPM_ALG_RSASSA or TPM_ALG_ECDSA, the AK's
                    .u16(0x000b) // TPM_ALG_SHA256
                    .u16(32)
                    .u16(0)
                    .finish(),
            )?;
            check("NV_Certify (audit anchor)", &r)?;
            let p = params(&r)?;
            let (attest, rest) = tpm2b(p)?;
            Ok((
                NvCertification {
                    attest: attest.to_vec(),
                    signature: rest.to_vec(),
                },
                value,
            ))
        })
    }
}

impl Drop for Tpm {
    /// Flush the NV session: on swtpm or a raw device it would outlive the process
    /// and hold one of the TPM's few loaded-session slots until the next start's
    /// [`super::hygiene::flush_stale`].
    fn drop(&mut self) {
        let Some(session) = self.nv_session.take() else {
            return;
        };
        if let Some(raw) = self.raw.as_mut() {
            session.flush(raw);
            return;
        }
        drop(self.esys.take());
        if let Ok(mut raw) = RawTcti::open(self.conf.clone(), &self.tcti) {
            session.flush(&mut raw);
        }
    }
}

/// The EK's RSA public key (the salt of the NV session is encrypted to it).
fn ek_public(pem: &str) -> Result<rsa::RsaPublicKey, TpmError> {
    use rsa::pkcs8::DecodePublicKey;
    rsa::RsaPublicKey::from_public_key_pem(pem).map_err(|e| TpmError::Encoding {
        what: "EK public key",
        reason: format!("not an RSA key: {e}"),
    })
}

/// The anchor index's TPM name (nameAlg || SHA-256(TPMS_NV_PUBLIC)), which the
/// session's HMAC covers. Before the first extend TPMA_NV_WRITTEN is clear; once tvpd
/// has seen it set the name is computed, otherwise the public area is read and checked.
fn anchor_name(raw: &mut RawTcti, index: u32, known_written: bool) -> Result<Vec<u8>, TpmError> {
    let written = known_written || {
        let r = exec(
            raw,
            &Cmd::new(ST_NO_SESSIONS, CC_NV_READ_PUBLIC)
                .u32(index)
                .finish(),
        )?;
        check("NV_ReadPublic (audit anchor)", &r)?;
        check_public(index, &r)?
    };
    let attributes = if written {
        attrs::DEFINED | attrs::WRITTEN
    } else {
        attrs::DEFINED
    };
    let mut name = 0x000bu16.to_be_bytes().to_vec();
    name.extend_from_slice(&sha2::Sha256::digest(nv_public(index, attributes)));
    Ok(name)
}

/// A persistent key known to exist, in a fresh ESAPI context; an error that names the
/// handle if it vanished meanwhile.
fn reload_persistent(ctx: &mut Context, handle: u32) -> Result<KeyHandle, TpmError> {
    let tpm_handle = PersistentTpmHandle::new(handle)
        .map(TpmHandle::Persistent)
        .map_err(|e| TpmError::InvalidArgument(format!("handle {handle:#010x}: {e}")))?;
    ctx.execute_without_session(|c| c.tr_from_tpm_public(tpm_handle))
        .map(KeyHandle::from)
        .map_err(|e| TpmError::Refused(format!("persistent key {handle:#010x} vanished: {e}")))
}

fn nv_read(raw: &mut RawTcti, index: u32) -> Result<NvAnchor, TpmError> {
    let r = exec(
        raw,
        &Cmd::new(ST_SESSIONS, CC_NV_READ)
            .u32(index)
            .u32(index)
            .password_auths(1)
            .u16(32)
            .u16(0)
            .finish(),
    )?;
    if response_code(&r) == RC_NV_UNINITIALIZED {
        return Ok(NvAnchor::Unwritten);
    }
    check("NV_Read (audit anchor)", &r)?;
    let (data, _) = tpm2b(params(&r)?)?;
    let v: [u8; 32] = data.try_into().map_err(|_| TpmError::Encoding {
        what: "audit anchor",
        reason: format!("{} bytes, expected 32", data.len()),
    })?;
    Ok(NvAnchor::Value(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CC_NV_EXTEND: u32 = 0x0000_0136;

    #[test]
    fn nv_extend_command_layout() {
        let c = Cmd::new(ST_SESSIONS, CC_NV_EXTEND)
            .u32(0x0150_0000)
            .u32(0x0150_0000)
            .password_auths(1)
            .tpm2b(&[0xaa; 32])
            .finish();
        assert_eq!(c.len(), 10 + 8 + 4 + 9 + 2 + 32);
        assert_eq!(&c[2..6], &(c.len() as u32).to_be_bytes());
        assert_eq!(&c[18..22], &9u32.to_be_bytes());
        assert_eq!(&c[22..26], &RS_PW.to_be_bytes());
    }
}
