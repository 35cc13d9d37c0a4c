//! The VM's TPM's part of the deep evidence (`docs/boot-protocol.md`, step 4): re-create
//! tvp's AK (a primary of the endorsement hierarchy, so the same key tvpd named in the
//! configuration page), quote PCRs 0 and 1 of the SHA-256 bank over the session's
//! qualifying data, flush the AK, and encode the VtpmQuote payload. Every response is
//! parsed with bounds; `TPM_RC_RETRY` (and the other warnings a TSS retries) is retried
//! a few times.

use crate::measured::MeasuredError;
use crate::tpm::{response_code, Crb, HEADER_LEN};
use tvp_boot_protocol::vtpm::VtpmQuote;

/// tvp's AK template, a TPMT_PUBLIC: ECC, nameAlg SHA-256, fixedTPM | fixedParent |
/// sensitiveDataOrigin | userWithAuth | restricted | sign, no policy, no symmetric,
/// ECDSA-SHA256, NIST P-256, no KDF, empty unique (`agent/src/vm/vtpm/provision.rs`,
/// `ak_template()`).
pub const AK_TEMPLATE: [u8; 24] = [
    0x00, 0x23, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0b,
    0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
];
/// `TPM_RH_ENDORSEMENT`.
const RH_ENDORSEMENT: u32 = 0x4000_000b;
/// `TPM_RS_PW`: the password session, with the empty password.
const RS_PW: u32 = 0x4000_0009;
/// Warnings a TSS answers by sending the command again: `TPM_RC_RETRY`,
/// `TPM_RC_YIELDED`, `TPM_RC_TESTING`.
const RC_RETRY: [u32; 3] = [0x922, 0x908, 0x90a];
/// Attempts per command.
const ATTEMPTS: usize = 5;
/// Pause between attempts.
const RETRY_PAUSE_MS: u64 = 20;
/// Response buffer (CreatePrimary's and Quote's responses are a few hundred bytes).
const RSP_MAX: usize = 1024;
/// Largest AK TPMT_PUBLIC accepted back.
const AK_MAX: usize = 256;

/// The header and password-session authorization of a command with one handle:
/// `tag 0x8002 | size | code | handle | auth size 9 | TPM_RS_PW | nonce 0 | attrs 0 |
/// hmac 0` (27 bytes); the caller appends the parameters and sets the size.
fn with_auth(code: u32, handle: u32, out: &mut [u8; 128]) -> usize {
    out[..2].copy_from_slice(&0x8002u16.to_be_bytes());
    out[6..10].copy_from_slice(&code.to_be_bytes());
    out[10..14].copy_from_slice(&handle.to_be_bytes());
    out[14..18].copy_from_slice(&9u32.to_be_bytes());
    out[18..22].copy_from_slice(&RS_PW.to_be_bytes());
    out[22..27].fill(0);
    27
}

/// Appends `b` at `at`; the commands here are built to fit the buffer.
fn put(out: &mut [u8], at: &mut usize, b: &[u8]) {
    if let Some(d) = out.get_mut(*at..*at + b.len()) {
        d.copy_from_slice(b);
    }
    *at += b.len();
}

/// Finishes a command (its size field) and runs it, retrying the TPM's warnings;
/// requires `TPM_RC_SUCCESS`. Returns the response's length in `rsp`.
fn run(
    crb: &mut Crb,
    what: &'static str,
    cmd: &mut [u8],
    rsp: &mut [u8; RSP_MAX],
) -> Result<usize, MeasuredError> {
    let len = cmd.len() as u32;
    cmd[2..6].copy_from_slice(&len.to_be_bytes());
    let mut attempt = 0;
    loop {
        let n = crb.command(cmd, rsp)?;
        let rc = response_code(&rsp[..n.max(HEADER_LEN)]);
        if rc == 0 {
            return Ok(n);
        }
        attempt += 1;
        if !RC_RETRY.contains(&rc) || attempt >= ATTEMPTS {
            return Err(MeasuredError::Refused(what, rc));
        }
        let until = crate::clock::now_ms().saturating_add(RETRY_PAUSE_MS);
        while crate::clock::now_ms() < until {
            core::hint::spin_loop();
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes(
        *b.get(at..)?.first_chunk::<2>()?,
    )))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*b.get(at..)?.first_chunk::<4>()?))
}

/// Re-creates the AK: `TPM2_CreatePrimary(TPM_RH_ENDORSEMENT, AK_TEMPLATE)`. Returns
/// its handle and copies its TPMT_PUBLIC (outPublic) into `ak`.
fn create_ak(crb: &mut Crb, ak: &mut [u8; AK_MAX]) -> Result<(u32, usize), MeasuredError> {
    let mut cmd = [0u8; 128];
    let mut at = with_auth(0x131, RH_ENDORSEMENT, &mut cmd);
    // inSensitive: size 4, empty userAuth, empty data.
    put(&mut cmd, &mut at, &[0, 4, 0, 0, 0, 0]);
    put(&mut cmd, &mut at, &(AK_TEMPLATE.len() as u16).to_be_bytes());
    put(&mut cmd, &mut at, &AK_TEMPLATE);
    // outsideInfo empty, creationPCR: no selection.
    put(&mut cmd, &mut at, &[0, 0, 0, 0, 0, 0]);
    let mut rsp = [0u8; RSP_MAX];
    let n = run(
        crb,
        "TPM2_CreatePrimary(endorsement, AK)",
        &mut cmd[..at],
        &mut rsp,
    )?;
    let r = &rsp[..n];
    // handle u32 | parameterSize u32 | outPublic (TPM2B_PUBLIC) | ...
    let bad = MeasuredError::Malformed("TPM2_CreatePrimary response");
    let handle = be32(r, HEADER_LEN).ok_or(bad)?;
    let len = be16(r, HEADER_LEN + 8).ok_or(bad)?;
    let public = r
        .get(HEADER_LEN + 10..HEADER_LEN + 10 + len)
        .filter(|p| !p.is_empty() && p.len() <= AK_MAX)
        .ok_or(bad)?;
    ak[..len].copy_from_slice(public);
    Ok((handle, len))
}

/// `TPM2_Quote(ak, qualifying, ECDSA of the key's scheme, SHA-256 PCRs 0 and 1)`:
/// writes the VtpmQuote payload (with `ak_public`) into `out`, returns its length.
fn quote(
    crb: &mut Crb,
    handle: u32,
    ak_public: &[u8],
    qualifying: &[u8; 32],
    out: &mut [u8],
) -> Result<usize, MeasuredError> {
    let mut cmd = [0u8; 128];
    let mut at = with_auth(0x158, handle, &mut cmd);
    put(&mut cmd, &mut at, &32u16.to_be_bytes());
    put(&mut cmd, &mut at, qualifying);
    // inScheme TPM_ALG_NULL (the key's own); one selection: SHA-256, 3 bytes, {0, 1}.
    put(&mut cmd, &mut at, &[0x00, 0x10]);
    put(&mut cmd, &mut at, &1u32.to_be_bytes());
    put(&mut cmd, &mut at, &[0x00, 0x0b, 3, 0b0000_0011, 0, 0]);
    let mut rsp = [0u8; RSP_MAX];
    let n = run(
        crb,
        "TPM2_Quote(AK, PCRs 0 and 1)",
        &mut cmd[..at],
        &mut rsp,
    )?;
    let r = &rsp[..n];
    // parameterSize u32 | quoted (TPM2B_ATTEST) | signature (TPMT_SIGNATURE) | sessions
    let bad = MeasuredError::Malformed("TPM2_Quote response");
    let params = be32(r, HEADER_LEN).ok_or(bad)? as usize;
    let p = r.get(HEADER_LEN + 4..HEADER_LEN + 4 + params).ok_or(bad)?;
    let alen = be16(p, 0).ok_or(bad)?;
    let attest = p.get(2..2 + alen).ok_or(bad)?;
    let signature = p.get(2 + alen..).ok_or(bad)?;
    VtpmQuote {
        ak_public,
        attest,
        signature,
    }
    .encode(out)
    .map_err(|_| bad)
}

/// `TPM2_FlushContext(handle)`.
fn flush(crb: &mut Crb, handle: u32) -> Result<(), MeasuredError> {
    let mut cmd = [0x80, 0x01, 0, 0, 0, 14, 0, 0, 0x01, 0x65, 0, 0, 0, 0];
    cmd[10..14].copy_from_slice(&handle.to_be_bytes());
    let mut rsp = [0u8; RSP_MAX];
    run(crb, "TPM2_FlushContext(AK)", &mut cmd, &mut rsp).map(|_| ())
}

/// The deep evidence's quote: AK re-created, PCRs 0 and 1 quoted over `qualifying`,
/// AK flushed (also when the quote failed). Writes the VtpmQuote payload into `out`.
pub fn quote_boot(
    crb: &mut Crb,
    qualifying: &[u8; 32],
    out: &mut [u8],
) -> Result<usize, MeasuredError> {
    let mut ak = [0u8; AK_MAX];
    let (handle, ak_len) = create_ak(crb, &mut ak)?;
    let quoted = quote(crb, handle, &ak[..ak_len], qualifying, out);
    let flushed = flush(crb, handle);
    let n = quoted?;
    flushed?;
    Ok(n)
}
