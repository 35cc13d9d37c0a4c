//! The host AK a verification trusts: pinned by the tenant, either as a PEM file
//! (`--ak`) or as the entry of an inventory file (`--inventory FILE [--host ID]`).
//! One convention for every command that checks something the host's TPM signed.

use std::path::Path;

use tvp_kms::inventory::Inventory;

use super::exit;
use super::host::read_text;

/// A pinned host AK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedAk {
    /// The AK, PEM SubjectPublicKeyInfo.
    pub pem: String,
    /// The host's id when the AK came from an inventory entry.
    pub host_id: Option<String>,
}

/// Why no AK could be pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinError {
    /// A usage or file error, already printed: exit with this code.
    Exit(i32),
    /// The inventory does not list the host.
    NotInInventory(String),
}

/// The AK from `--ak` or the inventory's entry for `host` (which may be left out when
/// the inventory lists one host); `Ok(None)` when neither `ak` nor `inventory` is given.
pub fn pinned_ak(
    ak: Option<&Path>,
    inventory: Option<&Path>,
    host: Option<&str>,
) -> Result<Option<PinnedAk>, PinError> {
    if let Some(p) = ak {
        return Ok(Some(PinnedAk {
            pem: read_text(p).map_err(PinError::Exit)?,
            host_id: None,
        }));
    }
    let Some(p) = inventory else {
        return Ok(None);
    };
    let inv: Inventory =
        serde_json::from_str(&read_text(p).map_err(PinError::Exit)?).map_err(|e| {
            eprintln!("tvpctl: {} is not an inventory file: {e}", p.display());
            PinError::Exit(exit::IO)
        })?;
    let entry = match host {
        Some(id) => inv.host(id),
        None if inv.hosts.len() == 1 => inv.hosts.first(),
        None => {
            eprintln!(
                "tvpctl: {} lists {} hosts: say which one served the file with --host ID",
                p.display(),
                inv.hosts.len()
            );
            return Err(PinError::Exit(exit::USAGE));
        }
    };
    match entry {
        Some(e) => Ok(Some(PinnedAk {
            pem: e.ak_public_pem.clone(),
            host_id: Some(e.host_id.clone()),
        })),
        None => Err(PinError::NotInInventory(format!(
            "host {} is not in the inventory {}",
            host.unwrap_or("-"),
            p.display()
        ))),
    }
}
