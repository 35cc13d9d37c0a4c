//! The inventory's word on a host's runtime integrity, and the check of a replayed IMA
//! list against it.
//!
//! ```json
//! "runtime_integrity": "none"
//! "runtime_integrity": { "ima": { "entries": [
//!     { "digest": "sha256:<hex>", "path": "/usr/local/bin/tvpd" }, ... ] } }
//! ```
//!
//! An entry allows a file **content** (its digest); the path is what the allowlist's
//! author saw and is shown in reports. Matching is by digest alone: a copy of an
//! allowed binary elsewhere is the same program, and IMA records the path the file was
//! opened by, which symlinks and mount points change.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::list::ImaEntry;
use super::{parse_binary, replay_to_quote, ImaError};

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
            RuntimeIntegrityReport::Ima { measured, after_quote } => format!(
                "IMA: {measured} measurements replay to the quoted PCR 10, all in the allowlist ({after_quote} made after the quote, not judged)"
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

/// The whole `ima` check: under [`RuntimeIntegrity::Ima`], the binary list `list`
/// must be present, PCR 10 quoted (`pcr10`), the list must replay to it and every
/// covered measurement must be allowed.
pub fn check(
    policy: &RuntimeIntegrity,
    list: Option<&[u8]>,
    pcr10: Option<&[u8; 32]>,
) -> Result<RuntimeIntegrityReport, ImaError> {
    let RuntimeIntegrity::Ima(allowlist) = policy else {
        return Ok(RuntimeIntegrityReport::NotChecked);
    };
    let allowed = allowlist.digests().map_err(ImaError::BadAllowlist)?;
    let list = list.ok_or(ImaError::NoList)?;
    let pcr10 = pcr10.ok_or(ImaError::PcrNotQuoted)?;
    let entries = parse_binary(list)?;
    let covered = replay_to_quote(&entries, pcr10)?;
    check_entries(&entries, covered, &allowed)?;
    Ok(RuntimeIntegrityReport::Ima {
        measured: covered,
        after_quote: entries.len() - covered,
    })
}
