//! `tvpctl authorize`: the tenant signs a management token (format 2) bound to one
//! host (its AK name) and one incarnation of the VM (SHA-256 of the configuration page
//! its current boot runs). The host comes from the tenant's own records (`--host`: the
//! AK name, or the `tvpctl host --json` / `GET /v1/host` document it pinned); the
//! incarnation from the VM's evidence (`--evidence`, the `config-page` event of PCR
//! 23, checked to replay to the quoted PCR 23 and to come from that host), or given as
//! `--incarnation`.

use std::path::{Path, PathBuf};

use tvp_audit::params::{self, Params};
use tvp_audit::token::{Target, TenantKey, TenantSigner, MAX_HOST_NAME};
use tvp_audit::Digest32;
use tvp_verifier::tpm::public::Public;
use tvp_verifier::{replay_sha256, EventKind, Evidence};

use super::exit;
use super::host::read_text;

/// PCR 23: the VM's firmware and configuration.
const PCR23: u32 = 23;
/// The `config-page` event's position among PCR 23's events (`docs/pcr-plan.md`:
/// scheme, firmware-image, config-page, ...).
const CONFIG_PAGE_POSITION: usize = 2;
/// Its event name in the record's description (`<vm id>: config-page ...`).
const CONFIG_PAGE_EVENT: &str = "config-page";

/// What `tvpctl authorize` was given.
pub struct AuthorizeArgs<'a> {
    /// The tenant's private key (PKCS#8 PEM).
    pub key: &'a Path,
    /// The VM id.
    pub vm: &'a str,
    /// The operation.
    pub op: &'a str,
    /// `k=v` parameters.
    pub param: &'a [String],
    /// The counter (default: now in ms).
    pub counter: Option<u64>,
    /// Validity from now, seconds.
    pub expires: u64,
    /// The host: hex AK name or a file with `ak_name`.
    pub host: &'a str,
    /// The VM's evidence.
    pub evidence: Option<&'a Path>,
    /// The VM's incarnation, hex.
    pub incarnation: Option<&'a str>,
    /// `rotate-key`: the new key's PEM (becomes the `public_key` parameter).
    pub new_key: Option<&'a PathBuf>,
    /// Print the token as JSON.
    pub json: bool,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn usage(msg: String) -> i32 {
    eprintln!("tvpctl: {msg}");
    exit::USAGE
}

fn io(msg: String) -> i32 {
    eprintln!("tvpctl: {msg}");
    exit::IO
}

/// `--host`: a hex AK name, or a file holding `{"ak_name": "<hex>", ...}`.
fn host_name(arg: &str) -> Result<Vec<u8>, i32> {
    let path = Path::new(arg);
    let text = if path.is_file() {
        let doc: serde_json::Value = serde_json::from_str(&read_text(path)?)
            .map_err(|e| io(format!("{arg}: not JSON: {e}")))?;
        doc["ak_name"]
            .as_str()
            .ok_or_else(|| {
                io(format!(
                    "{arg}: no \"ak_name\" (use the output of `tvpctl host --json` you pinned)"
                ))
            })?
            .to_string()
    } else {
        arg.to_string()
    };
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| (3..=MAX_HOST_NAME).contains(&b.len()))
        .ok_or_else(|| {
            usage(format!(
                "--host: '{arg}' is neither a hex AK name (3 to {MAX_HOST_NAME} bytes) nor a file with \"ak_name\""
            ))
        })?;
    Ok(bytes)
}

/// The VM's incarnation from its evidence: the digest of the `config-page` event of
/// PCR 23, provided PCR 23's records replay to the quoted value, the event is where
/// the scheme puts it and names `vm`, and the evidence's AK is `host`. Verify the
/// evidence itself (signature, nonce, expected PCRs) with `tvpctl verify` first.
pub fn incarnation_from_evidence(ev: &Evidence, vm: &str, host: &[u8]) -> Result<Digest32, String> {
    let ak = Public::parse_tpm2b(&ev.ak_public)
        .ok()
        .and_then(|p| p.name())
        .ok_or("the evidence's ak_public is not a TPM2B_PUBLIC with a SHA-256 name")?;
    if ak != host {
        return Err(format!(
            "the evidence was quoted by AK name {}, not by the host you named ({}): it is another host's VM",
            hex::encode(&ak),
            hex::encode(host)
        ));
    }
    let quoted = ev
        .pcrs
        .get("sha256")
        .and_then(|b| b.get(&PCR23))
        .ok_or("the evidence does not quote PCR 23 (use the VM's attestation evidence)")?;
    let only: std::collections::BTreeSet<u32> = std::iter::once(PCR23).collect();
    let replayed = replay_sha256(&ev.event_log, Some(&only)).map_err(|e| e.to_string())?;
    if replayed.get(&PCR23).map(|d| d.as_slice()) != Some(quoted.0.as_slice()) {
        return Err("the evidence's PCR 23 records do not replay to the quoted PCR 23".into());
    }
    let events: Vec<_> = ev
        .event_log
        .iter()
        .filter(|r| r.pcr == PCR23 && r.content.event_type == EventKind::VmMeasurement)
        .collect();
    let page = events
        .get(CONFIG_PAGE_POSITION)
        .ok_or("the evidence has no config-page event in PCR 23")?;
    let name = page
        .content
        .description
        .strip_prefix(&format!("{vm}: "))
        .ok_or_else(|| {
            format!(
                "the evidence's PCR 23 events are not VM '{vm}''s ({})",
                page.content.description
            )
        })?;
    if !name.starts_with(CONFIG_PAGE_EVENT) {
        return Err(format!(
            "PCR 23 event {CONFIG_PAGE_POSITION} is '{name}', not the config-page event"
        ));
    }
    page.sha256()
        .ok_or_else(|| "the config-page event has no SHA-256 digest".to_string())
}

/// `tvpctl authorize`: sign a bound token and print its text form (or JSON).
pub fn run(a: &AuthorizeArgs<'_>) -> i32 {
    let go = || -> Result<(), i32> {
        let signer = TenantSigner::from_pkcs8_pem(&read_text(a.key)?)
            .map_err(|e| io(format!("{}: {e}", a.key.display())))?;
        let mut p: Params = params::parse_kv(a.param).map_err(|e| usage(e.to_string()))?;
        if let Some(k) = a.new_key {
            let key = TenantKey::from_pem(&read_text(k)?)
                .map_err(|e| io(format!("{}: {e}", k.display())))?;
            if p.insert("public_key".into(), key.spki_base64()).is_some() {
                return Err(usage(
                    "give the new key as --new-key or --param public_key=..., not both".into(),
                ));
            }
        }
        let host = host_name(a.host)?;
        let incarnation = match (a.evidence, a.incarnation) {
            (Some(path), None) => {
                let ev: Evidence = serde_json::from_str(&read_text(path)?)
                    .map_err(|e| io(format!("{}: not evidence: {e}", path.display())))?;
                incarnation_from_evidence(&ev, a.vm, &host).map_err(|e| {
                    eprintln!("tvpctl: {}: {e}", path.display());
                    exit::VERIFY_FAILED
                })?
            }
            (None, Some(hex)) => tvp_audit::digest_from_hex(hex).ok_or_else(|| {
                usage(format!("--incarnation: '{hex}' is not 64 lowercase hex digits"))
            })?,
            _ => {
                return Err(usage(
                    "give the VM's --evidence (or its --incarnation): tokens are bound to the VM boot you attested".into(),
                ))
            }
        };
        let target = Target {
            host,
            vm: a.vm.to_string(),
            incarnation,
        };
        // Default counter: milliseconds since the epoch, increasing for one signer.
        let counter = a.counter.unwrap_or_else(|| now_secs().saturating_mul(1000));
        let t = signer.authorize(
            a.op,
            &target,
            &params::digest(&p),
            counter,
            now_secs().saturating_add(a.expires),
        );
        if a.json {
            println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
        } else {
            println!("{}", t.encode());
        }
        if let Some(k) = p.get("public_key").filter(|_| a.new_key.is_some()) {
            eprintln!("pass the same parameter with the operation: --param public_key={k}");
        }
        Ok(())
    };
    go().err().unwrap_or(exit::OK)
}
