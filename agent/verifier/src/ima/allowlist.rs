//! The inventory's word on a host's runtime integrity, and the check of a replayed IMA
//! list against it.
//!
//! ```json
//! "runtime_integrity": "none"
//! "runtime_integrity": { "ima": { "entries": [
//!     { "digest": "sha256:<hex>", "path": "/usr/local/bin/tvpd" }, ... ],
//!     "boot_pcrs": { "0": "<hex>", ..., "9": "<hex>" } } }
//! ```
//!
//! `boot_pcrs` (optional) pins the SHA-256 values of PCRs 0–9: the firmware, boot
//! loader and kernel whose digest the list's `boot_aggregate` is. Without it the
//! boot_aggregate rule only proves the list is consistent with *some* PCRs 0–9; a host
//! booted into a kernel without IMA could extend PCR 10 itself to match a forged list.
//!
//! An entry allows a file **content** (its digest); the path is what the allowlist's
//! author saw and is shown in reports. Matching is by digest alone: a copy of an
//! allowed binary elsewhere is the same program, and IMA records the path the file was
//! opened by, which symlinks and mount points change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::list::ImaEntry;
use super::{parse_binary, replay_to_quote, ImaError, IMA_PCR};

/// Most entries an allowlist may have.
pub const MAX_ALLOWLIST: usize = 100_000;

/// One allowed file content.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// `alg:hex` of the file's content, as IMA records it (`sha256:...`).
    pub digest: String,
    /// Where the file was when the allowlist was made (informational).
    #[serde(default)]
    pub path: String,
}

/// The digests of every executable, library and kernel module the host may run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    /// Allowed contents.
    pub entries: Vec<AllowEntry>,
    /// Expected SHA-256 values of PCRs 0–9, hex, by index (optional): pins the boot
    /// chain that measured the kernel keeping the list. Every pinned PCR must be quoted
    /// and equal; absent = not pinned (the report says so).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub boot_pcrs: BTreeMap<u32, String>,
}

impl Allowlist {
    /// The set of allowed `alg:hex` digests (hex lowercased), or why the list is unusable.
    pub fn digests(&self) -> Result<BTreeSet<String>, String> {
        if self.entries.len() > MAX_ALLOWLIST {
            return Err(format!(
                "the allowlist has {} entries; at most {MAX_ALLOWLIST}",
                self.entries.len()
            ));
        }
        self.entries
            .iter()
            .map(|e| {
                let (alg, h) = e
                    .digest
                    .split_once(':')
                    .ok_or_else(|| format!("allowlist digest {:?} is not alg:hex", e.digest))?;
                let bytes = hex::decode(h)
                    .map_err(|_| format!("allowlist digest {:?} is not alg:hex", e.digest))?;
                Ok(format!(
                    "{}:{}",
                    alg.to_ascii_lowercase(),
                    hex::encode(bytes)
                ))
            })
            .collect()
    }

    /// The pinned PCRs 0–9 decoded, or why they are unusable (an index over 9, a value
    /// that is not 32 bytes of hex).
    pub fn boot_pcr_values(&self) -> Result<BTreeMap<u32, [u8; 32]>, String> {
        self.boot_pcrs
            .iter()
            .map(|(i, v)| {
                if *i >= IMA_PCR {
                    return Err(format!(
                        "boot_pcrs names PCR {i}; only PCRs 0-9 (the boot_aggregate's) can be pinned there"
                    ));
                }
                let d: [u8; 32] = hex::decode(v)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("boot_pcrs PCR {i} is not 32 bytes of hex"))?;
                Ok((*i, d))
            })
            .collect()
    }
}

/// What a host's inventory entry says of its runtime integrity.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeIntegrity {
    /// The host has no IMA (a development machine, a swtpm test): runtime integrity is
    /// not checked, and the verifier says so.
    #[default]
    None,
    /// The host's IMA list must replay to the quoted PCR 10 and every measurement the
    /// quote covers must be in this allowlist.
    Ima(Allowlist),
}

/// What the verifier established about the host's runtime integrity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeIntegrityReport {
    /// Not checked: the caller gave no allowlist (inventory `"runtime_integrity": "none"`).
    NotChecked,
    /// Checked: every measurement the quote covers is allowed.
    Ima {
        /// Measurements covered by the quoted PCR 10 (including boot_aggregate).
        measured: usize,
        /// Measurements the list had beyond the quote (made after it; not judged).
        after_quote: usize,
        /// PCRs 0–9 were quoted and the list's boot_aggregate is their digest (so a
        /// verifier pinning PCRs 0–9 pins the kernel that keeps the list).
        boot_aggregate_checked: bool,
        /// How many of PCRs 0–9 the inventory pinned (`boot_pcrs`) and the quote matched.
        boot_pcrs_pinned: usize,
    },
}

impl RuntimeIntegrityReport {
    /// `"not-checked"` or `"ima"`: the JSON `runtime_integrity` field of reports.
    pub fn name(&self) -> &'static str {
        match self {
            RuntimeIntegrityReport::NotChecked => "not-checked",
            RuntimeIntegrityReport::Ima { .. } => "ima",
        }
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        match self {
            RuntimeIntegrityReport::NotChecked => "NOT CHECKED: no IMA allowlist for this host (inventory runtime_integrity \"none\"); what else ran on the host is unknown".into(),
            RuntimeIntegrityReport::Ima { measured, after_quote, boot_aggregate_checked, boot_pcrs_pinned } => format!(
                "IMA: {measured} measurements replay to the quoted PCR 10, all in the allowlist ({after_quote} made after the quote, not judged); boot_aggregate {}; {}",
                if *boot_aggregate_checked { "= the quoted PCRs 0-9" } else { "not compared (PCRs 0-9 not quoted)" },
                if *boot_pcrs_pinned == 0 { "PCRs 0-9 not pinned by the inventory (boot_pcrs)".to_string() } else { format!("{boot_pcrs_pinned} of PCRs 0-9 pinned and equal") }
            ),
        }
    }
}

/// The allowlist check over entries already replayed: the first `covered` entries
/// must be allowed (entry 0 may be `boot_aggregate`, which is no file).
pub fn check_entries(
    entries: &[ImaEntry],
    covered: usize,
    allowed: &BTreeSet<String>,
) -> Result<(), ImaError> {
    for (index, e) in entries.iter().take(covered).enumerate() {
        if index == 0 && e.path == "boot_aggregate" {
            continue;
        }
        if e.violation {
            return Err(ImaError::Violation {
                index,
                path: e.path.clone(),
            });
        }
        let digest = e.digest_string();
        if !allowed.contains(&digest) {
            return Err(ImaError::NotAllowed {
                index,
                path: e.path.clone(),
                digest,
                template: e.template.clone(),
            });
        }
    }
    Ok(())
}

/// The kernel's SHA-256 `boot_aggregate`: SHA-256 of the SHA-256 bank's PCRs 0–9
/// concatenated, if all ten are in `pcrs`.
pub fn boot_aggregate(pcrs: &BTreeMap<u32, [u8; 32]>) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    for i in 0..IMA_PCR {
        h.update(pcrs.get(&i)?);
    }
    Some(h.finalize().into())
}

/// The whole `ima` check: under [`RuntimeIntegrity::Ima`], the binary list `list`
/// must be present, PCR 10 quoted (in `pcrs`, the quoted SHA-256 values), the list
/// must replay to it starting with the kernel's `boot_aggregate` (which must equal
/// the digest of the quoted PCRs 0–9 when all of them are quoted), and every covered
/// measurement must be allowed.
pub fn check(
    policy: &RuntimeIntegrity,
    list: Option<&[u8]>,
    pcrs: &BTreeMap<u32, [u8; 32]>,
) -> Result<RuntimeIntegrityReport, ImaError> {
    let RuntimeIntegrity::Ima(allowlist) = policy else {
        return Ok(RuntimeIntegrityReport::NotChecked);
    };
    let allowed = allowlist.digests().map_err(ImaError::BadAllowlist)?;
    let pinned = allowlist
        .boot_pcr_values()
        .map_err(ImaError::BadAllowlist)?;
    let list = list.ok_or(ImaError::NoList)?;
    let pcr10 = pcrs.get(&IMA_PCR).ok_or(ImaError::PcrNotQuoted)?;
    let entries = parse_binary(list)?;
    let covered = replay_to_quote(&entries, pcr10)?;
    // A kernel with IMA extends boot_aggregate first, at init: a PCR 10 without it was
    // not extended by such a kernel.
    let first = entries
        .first()
        .filter(|e| covered > 0 && e.path == "boot_aggregate")
        .ok_or(ImaError::NoBootAggregate)?;
    let boot_aggregate_checked = match boot_aggregate(pcrs) {
        Some(want) if first.digest_alg != "sha256" || first.digest != want => {
            return Err(ImaError::BootAggregate {
                listed: first.digest_string(),
                computed: format!("sha256:{}", hex::encode(want)),
            })
        }
        Some(_) => true,
        None => false,
    };
    // The boot chain: a pinned PCR must be quoted and equal, so a kernel without IMA
    // (other PCRs 0-9) cannot pass off a PCR 10 it extended itself.
    for (i, want) in &pinned {
        match pcrs.get(i) {
            None => return Err(ImaError::BootPcrNotQuoted { pcr: *i }),
            Some(got) if got != want => {
                return Err(ImaError::BootPcr {
                    pcr: *i,
                    expected: hex::encode(want),
                    quoted: hex::encode(got),
                })
            }
            Some(_) => {}
        }
    }
    check_entries(&entries, covered, &allowed)?;
    Ok(RuntimeIntegrityReport::Ima {
        measured: covered,
        after_quote: entries.len() - covered,
        boot_aggregate_checked,
        boot_pcrs_pinned: pinned.len(),
    })
}
