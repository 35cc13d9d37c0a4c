//! `tvpctl inventory`: this host's entry for a tenant's or KMS's inventory file
//! (`{"hosts": [...]}`, the format `tvp-kms` and `tvp-boot-server` read), from tvpd's
//! TPM identity and the expected platform PCRs (`tvpd --print-expected-pcrs`).

use std::collections::BTreeMap;
use std::path::Path;

use tvp_kms::inventory::{HostEntry, Inventory};
use tvp_verifier::ima::IMA_PCR;
use tvp_verifier::{AkKey, Allowlist, ExpectedPcrs, RuntimeIntegrity, VerifyOptions};

use super::host::{call, read_text, write_out};
use super::{exit, Cli};
use tvp_agent::api::types::{HostInfo, QuoteRequest};

/// What `tvpctl inventory` needs.
pub struct Inputs<'a> {
    /// `tvpd --print-expected-pcrs` output: the platform PCRs the entry expects.
    pub expect: &'a Path,
    /// An inventory file to add the entry to (replacing this host's old entry).
    pub merge: Option<&'a Path>,
    /// Write here instead of stdout.
    pub output: Option<&'a Path>,
    /// The host's IMA allowlist; without it the entry says runtime integrity `none`.
    pub ima_allowlist: Option<&'a Path>,
    /// Pin the host's current PCRs 0–9 in the IMA entry (`boot_pcrs`), read from a
    /// quote tvpd makes now and checked against its AK.
    pub pin_boot_pcrs: bool,
}

/// This host's current SHA-256 PCRs 0–9, hex: from a fresh quote over them that must
/// verify under the host's own AK (the values a verifier will later compare).
fn current_boot_pcrs(cli: &Cli, h: &HostInfo) -> Result<BTreeMap<u32, String>, i32> {
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let req = QuoteRequest {
        nonce: hex::encode(nonce),
        pcrs: Some((0..IMA_PCR).collect()),
    };
    let body = serde_json::to_vec(&req).map_err(|_| exit::USAGE)?;
    let (ev, _): (tvp_verifier::Evidence, _) = call(cli, "POST", "/v1/host/quote", Some(body))?;
    let ak = AkKey::from_pem(&h.ak_public_pem).map_err(|e| {
        eprintln!("tvpctl: the host's AK: {e}");
        exit::VERIFY_FAILED
    })?;
    let v = tvp_verifier::verify(&ev, &VerifyOptions::new(nonce.to_vec(), ak)).map_err(|e| {
        eprintln!("tvpctl: the quote over PCRs 0-9 does not verify: {e}");
        exit::VERIFY_FAILED
    })?;
    (0..IMA_PCR)
        .map(|i| match v.pcrs.get(&i) {
            Some(d) => Ok((i, hex::encode(d))),
            None => {
                eprintln!("tvpctl: the quote does not cover PCR {i}");
                Err(exit::VERIFY_FAILED)
            }
        })
        .collect()
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(p: &Path, what: &str) -> Result<T, i32> {
    serde_json::from_str(&read_text(p)?).map_err(|e| {
        eprintln!("tvpctl: {} is not {what}: {e}", p.display());
        exit::IO
    })
}

/// The entry of the host behind `cli.socket`, expecting the SHA-256 PCRs of `expected`.
fn entry(
    h: HostInfo,
    expected: &ExpectedPcrs,
    runtime_integrity: RuntimeIntegrity,
) -> Result<HostEntry, i32> {
    let Some(bank) = expected.pcrs.get("sha256").filter(|b| !b.is_empty()) else {
        eprintln!(
            "tvpctl: the expected-values file has no sha256 PCRs (use tvpd --print-expected-pcrs)"
        );
        return Err(exit::IO);
    };
    Ok(HostEntry {
        host_id: h.host_id,
        ak_public_pem: h.ak_public_pem,
        ek_name: Some(h.ek_name),
        platform_pcrs: bank.iter().map(|(i, d)| (*i, hex::encode(&d.0))).collect(),
        runtime_integrity,
    })
}

/// An allowlist file, refused unless every digest is `alg:hex`.
pub(crate) fn read_allowlist(p: &Path) -> Result<Allowlist, i32> {
    let a: Allowlist = read_json(p, "an IMA allowlist")?;
    if let Err(why) = a.digests() {
        eprintln!("tvpctl: {}: {why}", p.display());
        return Err(exit::IO);
    }
    Ok(a)
}

/// Add `e` to `inv`, replacing an entry with the same host id; returns whether it replaced one.
fn upsert(inv: &mut Inventory, e: HostEntry) -> bool {
    match inv.hosts.iter_mut().find(|h| h.host_id == e.host_id) {
        Some(old) => {
            *old = e;
            true
        }
        None => {
            inv.hosts.push(e);
            false
        }
    }
}

/// `tvpctl inventory --expect FILE [--merge INVENTORY] [-o FILE]`.
pub fn run(cli: &Cli, a: &Inputs<'_>) -> i32 {
    let r = (|| {
        let expected: ExpectedPcrs = read_json(a.expect, "an expected-values file")?;
        let (h, _): (HostInfo, _) = call(cli, "GET", "/v1/host", None)?;
        let runtime_integrity = match a.ima_allowlist {
            Some(p) => {
                let mut allowlist = read_allowlist(p)?;
                if a.pin_boot_pcrs {
                    allowlist.boot_pcrs = current_boot_pcrs(cli, &h)?;
                }
                RuntimeIntegrity::Ima(allowlist)
            }
            None if a.pin_boot_pcrs => {
                eprintln!("tvpctl: --pin-boot-pcrs pins PCRs 0-9 in the IMA entry: give --ima-allowlist too");
                return Err(exit::USAGE);
            }
            None => RuntimeIntegrity::None,
        };
        let e = entry(h, &expected, runtime_integrity)?;
        let id = e.host_id.clone();
        let mut inv: Inventory = match a.merge {
            Some(p) if p.exists() => read_json(p, "an inventory file")?,
            _ => Inventory::default(),
        };
        let replaced = upsert(&mut inv, e);
        let mut text = serde_json::to_vec_pretty(&inv).map_err(|_| exit::IO)?;
        text.push(b'\n');
        write_out(a.output, &text)?;
        if a.output.is_some() {
            eprintln!(
                "tvpctl: host {id} {} ({} hosts)",
                if replaced { "updated" } else { "added" },
                inv.hosts.len()
            );
        }
        Ok(())
    })();
    match r {
        Ok(()) => exit::OK,
        Err(c) => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, ak: &str) -> HostEntry {
        HostEntry {
            host_id: id.into(),
            ak_public_pem: ak.into(),
            ek_name: None,
            platform_pcrs: Default::default(),
            runtime_integrity: RuntimeIntegrity::None,
        }
    }

    #[test]
    fn upsert_replaces_the_same_host_and_keeps_the_others() {
        let mut inv = Inventory::default();
        assert!(!upsert(&mut inv, e("a", "1")));
        assert!(!upsert(&mut inv, e("b", "1")));
        assert!(upsert(&mut inv, e("a", "2")));
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(inv.host("a").map(|h| h.ak_public_pem.as_str()), Some("2"));
    }

    #[test]
    fn entries_say_runtime_integrity_none_or_carry_the_allowlist() {
        // Written explicitly, so an operator sees that nothing is checked.
        let text = serde_json::to_string(&e("a", "1")).unwrap();
        assert!(text.contains(r#""runtime_integrity":"none""#), "{text}");
        // An inventory from before the field reads as "none".
        let old: HostEntry =
            serde_json::from_str(r#"{"host_id": "a", "ak_public_pem": "1", "platform_pcrs": {}}"#)
                .unwrap();
        assert_eq!(old.runtime_integrity, RuntimeIntegrity::None);
        // An allowlist file: read, checked, carried.
        let p = std::env::temp_dir().join(format!("tvpctl-allowlist-{}.json", std::process::id()));
        let d = "ab".repeat(32);
        std::fs::write(
            &p,
            format!(r#"{{"entries": [{{"digest": "sha256:{d}", "path": "/bin/x"}}]}}"#),
        )
        .unwrap();
        let a = read_allowlist(&p).unwrap();
        assert_eq!(a.entries[0].digest, format!("sha256:{d}"));
        std::fs::write(&p, r#"{"entries": [{"digest": "ab"}]}"#).unwrap();
        assert_eq!(read_allowlist(&p).err(), Some(exit::IO));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn an_expected_file_without_sha256_pcrs_is_refused() {
        let h: HostInfo = serde_json::from_value(serde_json::json!({
            "host_id": "a", "ek_public_pem": "", "ek_certificate_pem": null,
            "ak_public_pem": "", "ak_public": "", "ak_name": "", "ek_name": "",
            "pcr_bank": "sha256", "platform_pcr": 15, "platform_intact": true,
            "platform_changes": [], "version": "0"
        }))
        .unwrap();
        assert_eq!(
            entry(h, &ExpectedPcrs::default(), RuntimeIntegrity::None).err(),
            Some(exit::IO)
        );
    }
}
