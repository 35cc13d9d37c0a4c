//! The attestation decision: the evidence the firmware relayed must come from an
//! inventoried host's AK, answer this session's nonce, show the inventory's platform
//! PCRs, PCR 23 = the expected value for the firmware and configuration page this VM
//! booted with, and PCR 16 = the extend of this session's own tunnel measurement.

use std::collections::BTreeMap;
use tvp_kms::inventory::Inventory;
use tvp_verifier::{
    AkKey, Evidence, ExpectedPcrs, HexDigest, RuntimeIntegrityReport, VerifyError, VerifyOptions,
};

/// PCR holding the VM's firmware and configuration.
pub const PCR_VM: u32 = 23;
/// PCR holding the tunnel measurement.
pub const PCR_TUNNEL: u32 = 16;

/// A failed check: its stable name (for the report) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {reason}")]
pub struct Rejection {
    /// The check's name: `inventory`, `evidence:<verifier check>`, `ima:<kind>` (the
    /// host's runtime integrity, e.g. `ima:not-allowed`), `pcr23`, `pcr16`.
    pub check: String,
    /// Human-readable detail.
    pub reason: String,
}

pub(crate) fn reject(check: impl Into<String>, reason: impl Into<String>) -> Rejection {
    Rejection {
        check: check.into(),
        reason: reason.into(),
    }
}

/// What this session expects of the quoted PCRs 23 and 16.
pub struct Expectation {
    /// PCR 23 for the reference firmware, the VM's configuration page and the
    /// management binding.
    pub pcr23: [u8; 32],
    /// This session's tunnel measurement (TLS exporter).
    pub tunnel_measurement: [u8; 32],
}

/// PCR 16 after a reset and one extend with `measurement`.
pub fn expected_pcr16(measurement: &[u8; 32]) -> [u8; 32] {
    let mut b = [0u8; 64];
    b[32..].copy_from_slice(measurement);
    tvp_abi::measure::sha256(&b)
}

/// The VM's management event (the last PCR 23 record of the lease's log): its digest
/// is bound by the quote (the log replays to the quoted PCR 23); its description is
/// the host's word only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementEvent {
    /// `tvp_audit::policy::management_digest` of the VM's key and policy.
    pub digest: [u8; 32],
    /// tvpd's description (`key <key_id> policy allows [...] ...`), unauthenticated.
    pub description: String,
}

impl ManagementEvent {
    /// The key id the description names, if it names one (64 hex digits after `key `).
    pub fn described_key_id(&self) -> Option<&str> {
        let (_, rest) = self.description.split_once("key ")?;
        let id = rest.split_whitespace().next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    }
}

/// Evidence that passed tvp-verifier for this session's nonce and the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The inventoried host.
    pub host_id: String,
    /// The quoted SHA-256 PCRs.
    pub pcrs: BTreeMap<u32, [u8; 32]>,
    /// The management event, if the log has PCR 23 records.
    pub management: Option<ManagementEvent>,
    /// Whether the host's runtime integrity (IMA) was checked: by the inventory entry's
    /// `runtime_integrity`.
    pub runtime_integrity: RuntimeIntegrityReport,
}

/// What the accepted evidence showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// The inventoried host.
    pub host_id: String,
    /// The quoted PCR 16 (= extend of this session's tunnel measurement).
    pub pcr16: [u8; 32],
    /// The quoted PCR 23.
    pub pcr23: [u8; 32],
}

/// Verifies `evidence_json` for this session's `nonce`: an inventoried host's AK,
/// the inventory's platform PCRs, an event log that replays to the quoted PCRs, and,
/// where the inventory has an IMA allowlist for the host, its IMA list (replayed to
/// PCR 10, every measurement allowed; a refusal names the entry: `ima:not-allowed
/// <path> <digest>`).
pub fn verify(
    inventory: &Inventory,
    evidence_json: &str,
    nonce: &[u8],
) -> Result<Verified, Rejection> {
    let v: serde_json::Value = serde_json::from_str(evidence_json)
        .map_err(|e| reject("evidence:format", format!("evidence JSON: {e}")))?;
    let host_id = v["host_id"]
        .as_str()
        .ok_or_else(|| reject("evidence:format", "no host_id"))?;
    let host = inventory.host(host_id).ok_or_else(|| {
        reject(
            "inventory",
            format!("host {host_id} is not in the inventory"),
        )
    })?;
    let ak = AkKey::from_pem(&host.ak_public_pem)
        .map_err(|e| reject("inventory", format!("inventory AK of {host_id}: {e}")))?;
    let mut bank = BTreeMap::new();
    for (i, val) in &host.platform_pcrs {
        let d = hex::decode(val)
            .ok()
            .filter(|d| d.len() == 32)
            .ok_or_else(|| reject("inventory", format!("PCR {i} of {host_id} is not 32 bytes")))?;
        bank.insert(*i, HexDigest(d));
    }
    let expected = ExpectedPcrs {
        pcrs: BTreeMap::from([("sha256".to_string(), bank)]),
    };
    let mut opts = VerifyOptions::new(nonce.to_vec(), ak)
        .with_expected(expected)
        .with_runtime_integrity(host.runtime_integrity.clone());
    if let Some(ek) = &host.ek_name {
        let ek = hex::decode(ek).map_err(|e| reject("inventory", format!("ek_name: {e}")))?;
        opts = opts
            .with_ek_name(&ek)
            .ok_or_else(|| reject("inventory", "ek_name has an unsupported algorithm"))?;
    }
    let evidence: Evidence = serde_json::from_str(evidence_json)
        .map_err(|e| reject("evidence:format", format!("evidence JSON: {e}")))?;
    let verified = tvp_verifier::verify(&evidence, &opts).map_err(|e| match e {
        VerifyError::Ima(i) => reject(format!("ima:{}", i.kind()), format!("ima:{i}")),
        e => reject(format!("evidence:{}", e.check().name()), e.to_string()),
    })?;
    let management = evidence
        .event_log
        .iter()
        .rev()
        .find(|r| r.pcr == PCR_VM)
        .and_then(|r| {
            Some(ManagementEvent {
                digest: r.sha256()?,
                description: r.content.description.clone(),
            })
        });
    Ok(Verified {
        host_id: host_id.to_string(),
        pcrs: verified.pcrs,
        management,
        runtime_integrity: verified.runtime_integrity,
    })
}

/// PCR 23 and PCR 16 of verified evidence against this session's expectation.
pub fn check_pcrs(v: &Verified, exp: &Expectation) -> Result<Attested, Rejection> {
    let quoted = |pcr: u32| {
        v.pcrs
            .get(&pcr)
            .copied()
            .ok_or_else(|| reject(format!("pcr{pcr}"), format!("PCR {pcr} is not quoted")))
    };
    let pcr23 = quoted(PCR_VM)?;
    if pcr23 != exp.pcr23 {
        return Err(reject(
            "pcr23",
            format!(
                "PCR 23 is {}, expected {} for this firmware, configuration page and management binding",
                hex::encode(pcr23),
                hex::encode(exp.pcr23)
            ),
        ));
    }
    let pcr16 = quoted(PCR_TUNNEL)?;
    let want16 = expected_pcr16(&exp.tunnel_measurement);
    if pcr16 != want16 {
        return Err(reject(
            "pcr16",
            format!(
                "PCR 16 is {}, expected {} (the extend of this session's tunnel measurement)",
                hex::encode(pcr16),
                hex::encode(want16)
            ),
        ));
    }
    Ok(Attested {
        host_id: v.host_id.clone(),
        pcr16,
        pcr23,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr16_is_one_extend_of_the_measurement_from_zero() {
        let m = [7u8; 32];
        let mut b = vec![0u8; 32];
        b.extend_from_slice(&m);
        assert_eq!(expected_pcr16(&m), tvp_abi::measure::sha256(&b));
    }

    #[test]
    fn evidence_from_an_unknown_host_or_malformed_is_rejected_by_name() {
        let inv = Inventory::default();
        assert_eq!(
            verify(&inv, "not json", &[1; 32]).unwrap_err().check,
            "evidence:format"
        );
        assert_eq!(
            verify(&inv, r#"{"host_id": "ab"}"#, &[1; 32])
                .unwrap_err()
                .check,
            "inventory"
        );
    }

    #[test]
    fn the_management_description_names_a_key_id_or_nothing() {
        let id = "0f".repeat(32);
        let ev = |d: &str| ManagementEvent {
            digest: [0; 32],
            description: d.to_string(),
        };
        let e = ev(&format!(
            "vm-1: key {id} policy allows [power-off] on_tampering x"
        ));
        assert_eq!(e.described_key_id(), Some(id.as_str()));
        assert_eq!(ev("vm-1: key 0f policy").described_key_id(), None);
        assert_eq!(ev("firmware").described_key_id(), None);
    }

    #[test]
    fn pcrs_are_checked_23_then_16() {
        let m = [7u8; 32];
        let v = Verified {
            host_id: "h".into(),
            pcrs: BTreeMap::from([(PCR_VM, [1; 32]), (PCR_TUNNEL, expected_pcr16(&m))]),
            management: None,
            runtime_integrity: RuntimeIntegrityReport::NotChecked,
        };
        let exp = |pcr23, tunnel_measurement| Expectation {
            pcr23,
            tunnel_measurement,
        };
        assert!(check_pcrs(&v, &exp([1; 32], m)).is_ok());
        assert_eq!(check_pcrs(&v, &exp([2; 32], m)).unwrap_err().check, "pcr23");
        assert_eq!(
            check_pcrs(&v, &exp([1; 32], [8; 32])).unwrap_err().check,
            "pcr16"
        );
    }
}
