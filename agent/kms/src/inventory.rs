//! The tenant's view of the provider's hosts: which AKs belong to inventoried hosts and
//! what their platform PCRs must hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
