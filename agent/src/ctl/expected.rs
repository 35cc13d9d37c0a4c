//! `tvpctl expected-pcrs`: the PCR 23 value a measured VM must show, computed from the
//! firmware file and the configuration page alone (docs/pcr-plan.md), as an
//! expected-values file for `tvpctl verify --expect`.

use std::collections::BTreeMap;
use std::path::Path;

use tvp_abi::measure::{expected_events, replay};
use tvp_verifier::{ExpectedPcrs, HexDigest};

use super::exit;

/// PCR that holds the VM's firmware and configuration.
pub const VM_PCR: u32 = 23;

/// Compute and print the expected values; `merge` adds them to an existing file's
/// values (e.g. the platform PCR from `tvpd --print-expected-pcrs`).
pub fn run(firmware: &Path, config_page: &Path, merge: Option<&Path>, quiet: bool) -> i32 {
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
        let pcr23 = replay(events.iter().map(|e| &e.digest));
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
