//! The tenant's view of the provider's hosts: which AKs belong to inventoried hosts and
//! what their platform PCRs and runtime integrity (IMA allowlist) must hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tvp_verifier::RuntimeIntegrity;

/// One inventoried host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// tvpd's host id (SHA-256 of the EK public key).
    pub host_id: String,
    /// The host's AK, PEM.
    pub ak_public_pem: String,
    /// The EK's TPM name, hex: binds quotes to an AK under that EK.
    #[serde(default)]
    pub ek_name: Option<String>,
    /// Expected SHA-256 values of the platform PCRs, hex, by index.
    pub platform_pcrs: BTreeMap<u32, String>,
    /// What the host's runtime integrity must show: `"none"` (no IMA on the host; the
    /// verifier says it was not checked) or `{"ima": {"entries": [...]}}`, the
    /// allowlist every measurement of the host's IMA list must be in. Absent = `"none"`.
    #[serde(default)]
    pub runtime_integrity: RuntimeIntegrity,
}

/// The inventory file: `{"hosts": [ ... ]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Hosts.
    pub hosts: Vec<HostEntry>,
}

impl Inventory {
    /// The entry for `host_id`.
    pub fn host(&self, host_id: &str) -> Option<&HostEntry> {
        self.hosts.iter().find(|h| h.host_id == host_id)
    }
}
