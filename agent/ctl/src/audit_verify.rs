//! `tvpctl audit verify`: check a whole log or a tenant's extract. An extract
//! verifies only from the VM's creation or from the tenant's checkpoint, against an
//! AK-certified anchor made for the tenant's fresh nonce and checked with a pinned AK
//! (`--ak` or the inventory); `--allow-stale` and `--trust-embedded-ak` relax the
//! last two, loudly, and are never the default. A refusal names its reason (exit 1;
//! with `--json`: `{"ok": false, "reason", "message"}`). An extract whose trail
//! states lost events of the VM verifies as a chain but is never "OK": the gaps are
//! named (exit 6, reason `events-lost`).

use std::path::{Path, PathBuf};

use tvp_audit::anchor::AnchorCertification;
use tvp_audit::chain::{self, ChainError};
use tvp_audit::checkpoint::Checkpoint;
use tvp_audit::extract::{Extract, Start};
use tvp_audit::policy::{management_digest, TenantPolicy};
use tvp_audit::token::TenantKey;
use tvp_audit::Digest32;

use super::exit;
use super::host::read_text;
use super::pin::PinError;

/// What `tvpctl audit verify` was given.
#[derive(Debug)]
pub struct VerifyArgs<'a> {
    /// The log (JSON lines) or extract (JSON).
    pub file: &'a Path,
    /// An anchor certification file; for an extract, the one it carries otherwise.
    pub anchor: Option<&'a Path>,
    /// The host's AK (PEM), pinned.
    pub ak: Option<&'a Path>,
    /// An inventory file to take the host's AK from.
    pub inventory: Option<&'a Path>,
    /// Which host of the inventory (needed when it lists several).
    pub host: Option<&'a str>,
    /// The fresh nonce the certification was asked for (hex).
    pub nonce: Option<&'a str>,
    /// The tenant policy (extracts).
    pub policy: Option<&'a Path>,
    /// The tenant's management public key: check the VM was created with it.
    pub management_key: Option<&'a Path>,
    /// Continue from this checkpoint instead of the VM's creation.
    pub checkpoint: Option<&'a Path>,
    /// Write the checkpoint of this verification here.
    pub save_checkpoint: Option<&'a Path>,
    /// Accept a certification without a fresh nonce (replay risk).
    pub allow_stale: bool,
    /// Accept the AK inside the file (forgery risk).
    pub trust_embedded_ak: bool,
    /// JSON output.
    pub json: bool,
}

/// Why a verification did not end in "OK".
enum Fail {
    /// A usage or file error: this exit code (the message is printed already).
    Exit(i32),
    /// Verification refused: a short reason and what it means.
    Refused(&'static str, String),
}

impl From<i32> for Fail {
    fn from(code: i32) -> Self {
        Fail::Exit(code)
    }
}

fn refused(reason: &'static str, msg: impl std::fmt::Display) -> Fail {
    Fail::Refused(reason, msg.to_string())
}

/// What a successful verification says.
struct Verified {
    text: String,
    json: serde_json::Value,
    /// Lost events the trail states (`record seq S: reason`): not "OK".
    gaps: Vec<String>,
}

/// Run `tvpctl audit verify`; returns the exit code.
pub fn run(a: &VerifyArgs<'_>) -> i32 {
    let mut warnings = Vec::new();
    let r = verify(a, &mut warnings);
    for w in &warnings {
        eprintln!("WARNING: {w}");
    }
    match r {
        Ok(v) if !v.gaps.is_empty() => {
            if a.json {
                let mut j = v.json;
                j["ok"] = false.into();
                j["reason"] = "events-lost".into();
                j["chain_verified"] = true.into();
                j["gaps"] = v.gaps.clone().into();
                j["warnings"] = warnings.into();
                println!("{j:#}");
            } else {
                println!(
                    "GAPS (events-lost): {}; but the trail states that events were lost, so the history has holes:",
                    v.text
                );
                for g in &v.gaps {
                    println!("  {g}");
                }
            }
            exit::GAPS
        }
        Ok(v) => {
            if a.json {
                let mut j = v.json;
                j["ok"] = true.into();
                j["warnings"] = warnings.into();
                println!("{j:#}");
            } else {
                println!("OK: {}", v.text);
            }
            exit::OK
        }
        Err(Fail::Exit(code)) => code,
        Err(Fail::Refused(reason, message)) => {
            if a.json {
                let j = serde_json::json!({"ok": false, "reason": reason,
                    "message": message, "warnings": warnings});
                println!("{j:#}");
            } else {
                println!("FAILED ({reason}): {message}");
            }
            exit::VERIFY_FAILED
        }
    }
}

fn verify(a: &VerifyArgs<'_>, warnings: &mut Vec<String>) -> Result<Verified, Fail> {
    let text = read_text(a.file)?;
    let cert: Option<AnchorCertification> = match a.anchor {
        Some(p) => Some(serde_json::from_str(&read_text(p)?).map_err(|e| {
            eprintln!("tvpctl: {}: not an anchor certification: {e}", p.display());
            exit::IO
        })?),
        None => None,
    };
    // An extract is one JSON object with "entries"; a log is JSON lines.
    match serde_json::from_str::<Extract>(&text) {
        Ok(x) => verify_extract(a, &x, cert, warnings),
        Err(_) => verify_log(a, &text, cert.as_ref(), warnings),
    }
}

/// The AK the certification must be signed by: `--ak`, or the inventory's entry of
/// the host; the key inside the file only with `--trust-embedded-ak`.
fn pinned_ak(a: &VerifyArgs<'_>, warnings: &mut Vec<String>) -> Result<Option<String>, Fail> {
    match super::pin::pinned_ak(a.ak, a.inventory, a.host) {
        Ok(Some(pinned)) => return Ok(Some(pinned.pem)),
        Ok(None) => {}
        Err(PinError::Exit(code)) => return Err(Fail::Exit(code)),
        Err(PinError::NotInInventory(m)) => return Err(refused("ak-not-pinned", m)),
    }
    if a.trust_embedded_ak {
        warnings.push("--trust-embedded-ak: the AK inside the file is trusted as is; whoever made the file could have signed it with a key of their own, so nothing here is known to come from the host's TPM".into());
        return Ok(None);
    }
    Err(refused(
        "ak-not-pinned",
        "no AK to check the certification with: pass the host's AK from your inventory (--ak PEM, or --inventory FILE [--host ID]); the key inside the file is whatever its maker chose (--trust-embedded-ak accepts that risk)",
    ))
}

/// The nonce the certification must carry: `--nonce`, or its own with `--allow-stale`.
fn fresh_nonce(a: &VerifyArgs<'_>, warnings: &mut Vec<String>) -> Result<Option<Vec<u8>>, Fail> {
    match a.nonce {
        Some(n) => hex::decode(n.trim()).map(Some).map_err(|e| {
            eprintln!("tvpctl: --nonce: not hex ({e})");
            Fail::Exit(exit::USAGE)
        }),
        None if a.allow_stale => {
            warnings.push("--allow-stale: the certification is accepted for whatever nonce it carries; an old certification could be replayed, and records appended since then cut off unnoticed".into());
            Ok(None)
        }
        None => Err(refused(
            "no-fresh-nonce",
            "no nonce: pass --nonce HEX, the fresh nonce you asked the certification for (audit extract --nonce, audit anchor --nonce); otherwise an old certification could be replayed and the records since then cut off (--allow-stale accepts that risk)",
        )),
    }
}

/// Check a certification with the pinned AK and the fresh nonce; (value, records).
fn check_cert(
    a: &VerifyArgs<'_>,
    c: &AnchorCertification,
    warnings: &mut Vec<String>,
) -> Result<(Digest32, u64), Fail> {
    let ak = pinned_ak(a, warnings)?;
    let nonce = fresh_nonce(a, warnings)?;
    let v = c
        .verify(ak.as_deref(), nonce.as_deref())
        .map_err(|e| refused(e.code(), &e))?;
    Ok((v, c.records))
}

fn verify_extract(
    a: &VerifyArgs<'_>,
    x: &Extract,
    cert: Option<AnchorCertification>,
    warnings: &mut Vec<String>,
) -> Result<Verified, Fail> {
    let Some(pp) = a.policy else {
        eprintln!("tvpctl: verifying an extract needs the tenant policy (--policy FILE): it says which records must appear");
        return Err(Fail::Exit(exit::USAGE));
    };
    let pol = TenantPolicy::from_json(read_text(pp)?.as_bytes()).map_err(|e| {
        eprintln!("tvpctl: {}: {e}", pp.display());
        exit::IO
    })?;
    let checkpoint = match a.checkpoint {
        Some(p) => Some(read_checkpoint(p)?),
        None => None,
    };
    let management = match a.management_key {
        Some(p) => {
            let key = TenantKey::from_pem(&read_text(p)?).map_err(|e| {
                eprintln!("tvpctl: {}: not a management public key: {e}", p.display());
                exit::IO
            })?;
            Some(management_digest(&key, &pol))
        }
        None => None,
    };
    let start = match &checkpoint {
        Some(cp) => Start::Checkpoint(cp),
        None => Start::Creation { management },
    };
    let Some(c) = cert.as_ref().or(x.anchor.as_ref()) else {
        return Err(refused(
            "uncertified",
            "the extract carries no TPM-certified anchor, so records could have been cut from its end: fetch it with `tvpctl audit extract --nonce HEX`",
        ));
    };
    let certified = check_cert(a, c, warnings)?;
    let s = x
        .verify(&|op| pol.reports(op), start, certified)
        .map_err(|e| refused(e.code(), &e))?;
    if let Some(p) = a.save_checkpoint {
        write_checkpoint(p, &s.checkpoint)?;
    }
    let from = match &checkpoint {
        Some(cp) => format!("continues from your checkpoint (seq {})", cp.seq),
        None => format!("begins at the VM's creation (seq {})", x.since),
    };
    Ok(Verified {
        text: format!(
            "extract of VM {} covers seq {}..{} ({} records of this VM), {from}{}, matches the TPM-certified anchor{}",
            x.vm,
            x.since,
            s.checkpoint.seq,
            s.records.len(),
            if management.is_some() { ", created with your management key and policy" } else { "" },
            match a.save_checkpoint {
                Some(p) => format!("; checkpoint saved to {}", p.display()),
                None => String::new(),
            }
        ),
        json: serde_json::json!({
            "kind": "extract", "vm": x.vm, "from": x.since, "to": s.checkpoint.seq,
            "records": s.records.len(),
            "start": if checkpoint.is_some() { "checkpoint" } else { "creation" },
            "created": s.checkpoint.created,
            "binding_checked": management.is_some(),
            "checkpoint": s.checkpoint,
        }),
        gaps: s
            .gaps
            .iter()
            .map(|g| format!("record seq {}: {}", g.seq, g.reason))
            .collect(),
    })
}

fn read_checkpoint(p: &Path) -> Result<Checkpoint, Fail> {
    Checkpoint::from_json(&read_text(p)?).map_err(|e| {
        eprintln!("tvpctl: {}: {e}", p.display());
        Fail::Exit(exit::IO)
    })
}

/// Write the checkpoint atomically (temporary file, then rename).
fn write_checkpoint(p: &Path, cp: &Checkpoint) -> Result<(), Fail> {
    let mut text = serde_json::to_vec_pretty(cp).map_err(|_| Fail::Exit(exit::IO))?;
    text.push(b'\n');
    let mut tmp = PathBuf::from(p);
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, p))
        .map_err(|e| {
            eprintln!("tvpctl: cannot write the checkpoint {}: {e}", p.display());
            Fail::Exit(exit::IO)
        })
}

fn chain_code(e: &ChainError) -> &'static str {
    match e {
        ChainError::Malformed { .. } => "malformed",
        ChainError::Edited { .. } => "edited",
        ChainError::Broken { .. } => "broken-link",
        ChainError::AnchorMismatch { .. } => "anchor-mismatch",
    }
}

fn verify_log(
    a: &VerifyArgs<'_>,
    text: &str,
    cert: Option<&AnchorCertification>,
    warnings: &mut Vec<String>,
) -> Result<Verified, Fail> {
    let bad = |e: ChainError| refused(chain_code(&e), &e);
    let records = chain::parse_log(text).map_err(bad)?;
    let certified = match cert {
        Some(c) => Some(check_cert(a, c, warnings)?),
        None => None,
    };
    // The log may have grown since the certification: check the certified prefix.
    let summary = match certified {
        Some((value, n)) => {
            if (n as usize) > records.len() {
                return Err(refused("truncated", format!(
                    "the TPM anchor covers {n} records but the log has only {}: records were removed from the end",
                    records.len()
                )));
            }
            chain::verify_chain(&records[..n as usize], Some(&value)).map_err(bad)?;
            chain::verify_chain(&records, None).map_err(bad)?
        }
        None => chain::verify_chain(&records, None).map_err(bad)?,
    };
    Ok(Verified {
        text: format!(
            "{} records, chain intact{}",
            summary.records,
            match certified {
                Some((_, n)) => format!(", records 1..{n} match the TPM-certified anchor"),
                None => "; no anchor given: truncation is not detectable".into(),
            }
        ),
        json: serde_json::json!({
            "kind": "log", "records": summary.records,
            "anchored": certified.map(|(_, n)| n),
        }),
        gaps: records
            .iter()
            .filter(|r| r.op == tvp_audit::extract::EVENTS_LOST_OP)
            .map(|r| {
                format!(
                    "record seq {} (VM {}): {}",
                    r.seq,
                    r.vm.as_deref().unwrap_or("-"),
                    r.reason
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(file: &Path) -> VerifyArgs<'_> {
        VerifyArgs {
            file,
            anchor: None,
            ak: None,
            inventory: None,
            host: None,
            nonce: None,
            policy: None,
            management_key: None,
            checkpoint: None,
            save_checkpoint: None,
            allow_stale: false,
            trust_embedded_ak: false,
            json: false,
        }
    }

    fn reason(r: Result<impl std::fmt::Debug, Fail>) -> &'static str {
        match r {
            Err(Fail::Refused(reason, _)) => reason,
            Err(Fail::Exit(c)) => panic!("exit {c}"),
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    #[test]
    fn nonce_and_ak_are_required_unless_relaxed_loudly() {
        let f = Path::new("unused");
        let mut w = Vec::new();
        assert_eq!(reason(fresh_nonce(&args(f), &mut w)), "no-fresh-nonce");
        assert_eq!(reason(pinned_ak(&args(f), &mut w)), "ak-not-pinned");
        assert!(w.is_empty());
        let mut a = args(f);
        a.allow_stale = true;
        a.trust_embedded_ak = true;
        assert!(matches!(fresh_nonce(&a, &mut w), Ok(None)));
        assert!(matches!(pinned_ak(&a, &mut w), Ok(None)));
        assert!(w[0].starts_with("--allow-stale") && w[1].starts_with("--trust-embedded-ak"));
        a.nonce = Some("0a0b");
        assert!(matches!(fresh_nonce(&a, &mut w), Ok(Some(n)) if n == [10, 11]));
    }

    #[test]
    fn the_ak_comes_from_the_inventory_host() {
        let dir = std::env::temp_dir().join(format!("tvpctl-inv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let inv = dir.join("inventory.json");
        let host = |id: &str, ak: &str| serde_json::json!({"host_id": id, "ak_public_pem": ak, "platform_pcrs": {}});
        std::fs::write(
            &inv,
            serde_json::json!({"hosts": [host("h1", "AK1")]}).to_string(),
        )
        .unwrap();
        let f = Path::new("unused");
        let mut w = Vec::new();
        let mut a = args(f);
        a.inventory = Some(&inv);
        assert_eq!(pinned_ak(&a, &mut w).ok().flatten().as_deref(), Some("AK1"));
        std::fs::write(
            &inv,
            serde_json::json!({"hosts": [host("h1", "AK1"), host("h2", "AK2")]}).to_string(),
        )
        .unwrap();
        // Several hosts: which one must be said.
        assert!(matches!(
            pinned_ak(&a, &mut w),
            Err(Fail::Exit(exit::USAGE))
        ));
        a.host = Some("h2");
        assert_eq!(pinned_ak(&a, &mut w).ok().flatten().as_deref(), Some("AK2"));
        a.host = Some("h3");
        assert_eq!(reason(pinned_ak(&a, &mut w)), "ak-not-pinned");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
