//! The attestation decision: the evidence the firmware relayed must come from an
//! inventoried host's AK, answer this session's nonce, show the inventory's platform
//! PCRs, PCR 23 = the expected value for the firmware and configuration page this VM
//! booted with, and PCR 16 = the extend of this session's own tunnel measurement.

use std::collections::BTreeMap;
use tvp_kms::inventory::Inventory;
use tvp_verifier::{verify_json, AkKey, ExpectedPcrs, HexDigest, VerifyOptions};

/// PCR holding the VM's firmware and configuration.
pub const PCR_VM: u32 = 23;
/// PCR holding the tunnel measurement.
pub const PCR_TUNNEL: u32 = 16;

/// A failed check: its stable name (for the report) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {reason}")]
pub struct Rejection {
    /// The check's name: `inventory`, `evidence:<verifier check>`, `pcr23`, `pcr16`.
    pub check: String,
    /// Human-readable detail.
    pub reason: String,
}

fn reject(check: impl Into<String>, reason: impl Into<String>) -> Rejection {
    Rejection {
        check: check.into(),
        reason: reason.into(),
    }
}

/// What this session expects.
pub struct Expectation<'a> {
    /// The nonce sent in the attestation request.
    pub nonce: &'a [u8],
    /// PCR 23 for the reference firmware and the VM's configuration page.
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

/// Verifies `evidence_json` for this session.
pub fn check(
    inventory: &Inventory,
    evidence_json: &str,
    exp: &Expectation<'_>,
) -> Result<Attested, Rejection> {
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
    let mut opts = VerifyOptions::new(exp.nonce.to_vec(), ak).with_expected(expected);
    if let Some(ek) = &host.ek_name {
        let ek = hex::decode(ek).map_err(|e| reject("inventory", format!("ek_name: {e}")))?;
        opts = opts
            .with_ek_name(&ek)
            .ok_or_else(|| reject("inventory", "ek_name has an unsupported algorithm"))?;
    }
    let verified = verify_json(evidence_json, &opts)
        .map_err(|e| reject(format!("evidence:{}", e.check().name()), e.to_string()))?;
    let quoted = |pcr: u32| {
        verified
            .pcrs
            .get(&pcr)
            .copied()
            .ok_or_else(|| reject(format!("pcr{pcr}"), format!("PCR {pcr} is not quoted")))
    };
    let pcr23 = quoted(PCR_VM)?;
    if pcr23 != exp.pcr23 {
        return Err(reject(
            "pcr23",
            format!(
                "PCR 23 is {}, expected {} for this firmware and configuration page",
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
        host_id: host_id.to_string(),
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
        let exp = Expectation {
            nonce: &[1; 32],
            pcr23: [0; 32],
            tunnel_measurement: [0; 32],
        };
        let inv = Inventory::default();
        assert_eq!(
            check(&inv, "not json", &exp).unwrap_err().check,
            "evidence:format"
        );
        assert_eq!(
            check(&inv, r#"{"host_id": "ab"}"#, &exp).unwrap_err().check,
            "inventory"
        );
    }
}
