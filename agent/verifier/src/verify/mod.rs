//! Verification of [`Evidence`] against a trusted AK, a nonce and optional expected
//! PCR values. Each step is a named [`Check`]; the first failure is returned.

mod ak;
pub mod binding;
pub mod bound;
pub mod certify;
mod error;
mod pcrs;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

pub use ak::{AkKey, KeyError};
pub use error::{Check, UnknownCheck, VerifyError};
pub use pcrs::{pcr_composite_digest, Sha256Pcrs};

use crate::evidence::{Evidence, ExpectedPcrs, EVIDENCE_VERSION};
use crate::ima::{RuntimeIntegrity, RuntimeIntegrityReport};
use crate::replay::{replay_sha256, ReplayedPcrs};
use crate::tpm::alg::RH_ENDORSEMENT;
use crate::tpm::public::{ATTR_DECRYPT, ATTR_FIXED_TPM, ATTR_RESTRICTED, ATTR_SIGN};
use crate::tpm::{hierarchy_qualified_name, qualified_name, Attest, ClockInfo, Public, Signature};

/// What the caller trusts and expects.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The nonce the caller sent; the quote's qualifying data must equal it.
    pub nonce: Vec<u8>,
    /// The AK the caller trusts for this host (e.g. from the provider's inventory).
    pub trusted_ak: AkKey,
    /// Qualified name of the AK's parent (the EK). When given, the quote's
    /// qualifiedSigner must equal the AK's qualified name under it, which binds the
    /// quote to that EK. When absent, only the signer's name algorithm is checked.
    pub ak_parent_qualified_name: Option<Vec<u8>>,
    /// Expected PCR values; each listed PCR must be quoted and equal.
    pub expected: Option<ExpectedPcrs>,
    /// The host's runtime integrity requirement (the inventory's `runtime_integrity`):
    /// [`RuntimeIntegrity::None`] checks nothing and says so in the result.
    pub runtime_integrity: RuntimeIntegrity,
}

impl VerifyOptions {
    /// Options with a nonce and a trusted AK, no parent binding, no expected values.
    pub fn new(nonce: Vec<u8>, trusted_ak: AkKey) -> Self {
        VerifyOptions {
            nonce,
            trusted_ak,
            ak_parent_qualified_name: None,
            expected: None,
            runtime_integrity: RuntimeIntegrity::None,
        }
    }

    /// Judge the host's IMA list by `policy` (the inventory's `runtime_integrity`).
    pub fn with_runtime_integrity(mut self, policy: RuntimeIntegrity) -> Self {
        self.runtime_integrity = policy;
        self
    }

    /// Options for a quote bound to `digest` besides `nonce`: its qualifying data
    /// must be [`bound::bound_qualifying_data`]`(nonce, digest)`.
    pub fn bound(nonce: &[u8], digest: &[u8; 32], trusted_ak: AkKey) -> Self {
        Self::new(
            bound::bound_qualifying_data(nonce, digest).to_vec(),
            trusted_ak,
        )
    }

    /// Also require these PCR values.
    pub fn with_expected(mut self, expected: ExpectedPcrs) -> Self {
        self.expected = Some(expected);
        self
    }

    /// Require the AK to be a child of the primary key (EK) with this TPM name, created
    /// in the endorsement hierarchy. `None` if the name's algorithm is unsupported.
    pub fn with_ek_name(mut self, ek_name: &[u8]) -> Option<Self> {
        let qn = qualified_name(&hierarchy_qualified_name(RH_ENDORSEMENT), ek_name)?;
        self.ak_parent_qualified_name = Some(qn);
        Some(self)
    }
}

/// What verified evidence tells the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvidence {
    /// The host identity claimed in the evidence (bound by the caller's AK choice).
    pub host_id: String,
    /// The nonce (equal to the expected one).
    pub nonce: Vec<u8>,
    /// The TPM clock at quote time.
    pub clock_info: ClockInfo,
    /// The TPM's reset count (boot cycles), from `clock_info`.
    pub reset_count: u32,
    /// The TPM firmware version.
    pub firmware_version: u64,
    /// The quoted SHA-256 PCR values.
    pub pcrs: Sha256Pcrs,
    /// The event log's replayed values for quoted PCRs that have records.
    pub replayed: ReplayedPcrs,
    /// The AK's TPM name (nameAlg || H(TPMT_PUBLIC)).
    pub ak_name: Vec<u8>,
    /// The quote's qualifiedSigner (the AK's qualified name).
    pub ak_qualified_name: Vec<u8>,
    /// Whether the host's runtime integrity was checked, and what it showed.
    pub runtime_integrity: RuntimeIntegrityReport,
}

/// Parse and verify evidence JSON; malformed JSON fails the `format` check.
pub fn verify_json(json: &str, opts: &VerifyOptions) -> Result<VerifiedEvidence, VerifyError> {
    let ev: Evidence = serde_json::from_str(json)
        .map_err(|e| VerifyError::Format(format!("evidence JSON: {e}")))?;
    verify(&ev, opts)
}

/// Verify evidence. Checks run in the order of [`Check::ALL`] and the first failure is
/// returned.
pub fn verify(ev: &Evidence, opts: &VerifyOptions) -> Result<VerifiedEvidence, VerifyError> {
    if ev.version != EVIDENCE_VERSION {
        return Err(VerifyError::Version {
            found: ev.version,
            supported: EVIDENCE_VERSION,
        });
    }
    let fmt = |what: &str, e: &dyn std::fmt::Display| VerifyError::Format(format!("{what}: {e}"));
    let attest = Attest::parse(&ev.quote.attest).map_err(|e| fmt("attest", &e))?;
    let signature = Signature::parse(&ev.quote.signature).map_err(|e| fmt("signature", &e))?;
    let ak_public = Public::parse_tpm2b(&ev.ak_public).map_err(|e| fmt("ak_public", &e))?;
    let ak_pem = AkKey::from_pem(&ev.ak_public_pem).map_err(|e| fmt("ak_public_pem", &e))?;

    // ak-mismatch
    let ak_name = check_ak(&attest, &ak_public, &ak_pem, opts)?;

    // signature
    opts.trusted_ak
        .verify(&ev.quote.attest, &signature)
        .map_err(VerifyError::Signature)?;

    // nonce
    if ev.nonce != opts.nonce {
        return Err(VerifyError::Nonce(format!(
            "evidence nonce {} is not the expected {}",
            hex::encode(&ev.nonce),
            hex::encode(&opts.nonce)
        )));
    }
    if attest.extra_data != opts.nonce {
        return Err(VerifyError::Nonce(format!(
            "quote qualifying data {} is not the expected nonce {}",
            hex::encode(&attest.extra_data),
            hex::encode(&opts.nonce)
        )));
    }

    let reported = pcrs::reported_sha256(&ev.pcrs)?;
    pcrs::check_selection(&attest.quote, &reported)?;
    pcrs::check_digest(&attest.quote, &reported)?;

    // event-log
    let quoted: BTreeSet<u32> = reported.keys().copied().collect();
    let replayed = replay_sha256(&ev.event_log, Some(&quoted))?;
    for (pcr, value) in &replayed {
        if let Some(q) = reported.get(pcr) {
            if q != value {
                return Err(VerifyError::EventLogMismatch {
                    pcr: *pcr,
                    replayed: hex::encode(value),
                    quoted: hex::encode(q),
                });
            }
        }
    }

    if let Some(expected) = &opts.expected {
        pcrs::check_expected(expected, &reported)?;
    }

    // ima
    let runtime_integrity =
        crate::ima::allowlist::check(&opts.runtime_integrity, ev.ima_log.as_deref(), &reported)
            .map_err(VerifyError::Ima)?;

    Ok(VerifiedEvidence {
        host_id: ev.host_id.clone(),
        nonce: ev.nonce.clone(),
        clock_info: attest.clock_info,
        reset_count: attest.clock_info.reset_count,
        firmware_version: attest.firmware_version,
        pcrs: reported,
        replayed,
        ak_name,
        ak_qualified_name: attest.qualified_signer,
        runtime_integrity,
    })
}

/// The evidence's two AK encodings must be the trusted key, the key must be a
/// restricted TPM signing key, and the quote must name it as signer. Returns its name.
fn check_ak(
    attest: &Attest,
    ak_public: &Public,
    ak_pem: &AkKey,
    opts: &VerifyOptions,
) -> Result<Vec<u8>, VerifyError> {
    let mismatch = |m: String| VerifyError::AkMismatch(m);
    if *ak_pem != opts.trusted_ak {
        return Err(mismatch(format!(
            "evidence ak_public_pem ({}) is not the trusted AK ({})",
            ak_pem.describe(),
            opts.trusted_ak.describe()
        )));
    }
    let tpm_key = AkKey::from_tpm_public(ak_public).map_err(|e| mismatch(e.to_string()))?;
    if tpm_key != opts.trusted_ak {
        return Err(mismatch(format!(
            "evidence ak_public ({}) is not the trusted AK ({})",
            tpm_key.describe(),
            opts.trusted_ak.describe()
        )));
    }
    let attrs = ak_public.object_attributes;
    let required = ATTR_FIXED_TPM | ATTR_RESTRICTED | ATTR_SIGN;
    if attrs & required != required || attrs & ATTR_DECRYPT != 0 {
        return Err(mismatch(format!(
            "AK attributes {attrs:#010x} are not those of a fixedTPM restricted signing key"
        )));
    }
    let name = ak_public.name().ok_or_else(|| {
        mismatch(format!(
            "AK name algorithm {:#06x} is not supported",
            ak_public.name_alg
        ))
    })?;
    let signer = &attest.qualified_signer;
    match &opts.ak_parent_qualified_name {
        Some(parent) => {
            let qn = qualified_name(parent, &name)
                .ok_or_else(|| mismatch("cannot compute the AK's qualified name".into()))?;
            if *signer != qn {
                return Err(mismatch(format!(
                    "quote signer {} is not the AK's qualified name {} under the given parent",
                    hex::encode(signer),
                    hex::encode(&qn)
                )));
            }
        }
        None => {
            if signer.len() != name.len() || signer.get(..2) != name.get(..2) {
                return Err(mismatch(format!(
                    "quote signer {} is not a name of the AK's name algorithm",
                    hex::encode(signer)
                )));
            }
        }
    }
    Ok(name)
}
