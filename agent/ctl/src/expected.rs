//! `tvpctl expected-pcrs`: the PCR 23 value a measured VM must show, computed from the
//! firmware file and the configuration page alone (docs/pcr-plan.md), as an
//! expected-values file for `tvpctl verify --expect`. With the tenant's management key
//! and policy it adds the management event tvpd extends after tvp-vmm's five.

use std::collections::BTreeMap;
use std::path::Path;

use tvp_abi::measure::{expected_events, replay};
use tvp_verifier::{ExpectedPcrs, HexDigest};

use super::exit;

/// PCR that holds the VM's firmware and configuration.
pub const VM_PCR: u32 = 23;

/// What the computation reads.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The firmware ELF.
    pub firmware: &'a Path,
    /// The configuration page.
    pub config_page: &'a Path,
    /// An expected-values file to add to (e.g. the platform PCR from
    /// `tvpd --print-expected-pcrs`).
    pub merge: Option<&'a Path>,
    /// The management key (PEM) and policy (JSON) files.
    pub management: Option<(&'a Path, &'a Path)>,
}

/// The management binding digest from the key and policy files.
fn management_digest(key: &Path, policy: &Path) -> Result<[u8; 32], String> {
    let pem = std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let key =
        tvp_audit::TenantKey::from_pem(&pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let bytes = std::fs::read(policy).map_err(|e| format!("{}: {e}", policy.display()))?;
    let policy = tvp_audit::TenantPolicy::from_json(&bytes)
        .map_err(|e| format!("{}: {e}", policy.display()))?;
    Ok(tvp_audit::policy::management_digest(&key, &policy))
}

/// Compute and print the expected values.
pub fn run(inputs: &Inputs, quiet: bool) -> i32 {
    let Inputs {
        firmware,
        config_page,
        merge,
        management,
    } = *inputs;
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| {
            eprintln!("tvpctl: cannot read {}: {e}", p.display());
            exit::IO
        })
    };
    let result = (|| {
        let fw = read(firmware)?;
        let page = read(config_page)?;
        let events = expected_events(&fw, &page).map_err(|e| {
            eprintln!("tvpctl: {e}");
            exit::IO
        })?;
        if !quiet {
            for e in &events {
                eprintln!("{}  {}", hex::encode(e.digest), e.event_type.name());
            }
        }
        let mut pcr23 = replay(events.iter().map(|e| &e.digest));
        match management {
            Some((key, policy)) => {
                let d = management_digest(key, policy).map_err(|e| {
                    eprintln!("tvpctl: {e}");
                    exit::IO
                })?;
                if !quiet {
                    eprintln!("{}  {}", hex::encode(d), tvp_abi::measure::MANAGEMENT_EVENT);
                }
                pcr23 = tvp_abi::measure::extend(&pcr23, &d);
            }
            None if !quiet => eprintln!(
                "note: tvp-vmm's events only; a measured VM's PCR 23 also holds tvpd's management event (--management-key, --policy)"
            ),
            None => {}
        }
        let mut expected = match merge {
            Some(p) => serde_json::from_slice::<ExpectedPcrs>(&read(p)?).map_err(|e| {
                eprintln!("tvpctl: {}: not an expected-values file: {e}", p.display());
                exit::IO
            })?,
            None => ExpectedPcrs::default(),
        };
        expected
            .pcrs
            .entry("sha256".into())
            .or_insert_with(BTreeMap::new)
            .insert(VM_PCR, HexDigest(pcr23.to_vec()));
        let out = serde_json::to_string_pretty(&expected).map_err(|_| exit::IO)?;
        println!("{out}");
        Ok(())
    })();
    match result {
        Ok(()) => exit::OK,
        Err(c) => c,
    }
}
