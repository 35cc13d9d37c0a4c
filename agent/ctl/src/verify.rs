//! `tvpctl verify` and `tvpctl export-tpm2`: check evidence offline with tvp's verifier,
//! or hand it to tpm2-tools' `tpm2_checkquote` as an independent second opinion.

use std::path::Path;

use tvp_verifier::tpm2_tools::export_for_checkquote;
use tvp_verifier::{
    AkKey, Evidence, ExpectedPcrs, RuntimeIntegrity, RuntimeIntegrityReport, VerifyError,
    VerifyOptions,
};

use super::exit;
use super::host::read_text;

fn hex_arg(name: &str, v: &str) -> Result<Vec<u8>, i32> {
    hex::decode(v.trim()).map_err(|e| {
        eprintln!("tvpctl: --{name}: not hex ({e})");
        exit::USAGE
    })
}

/// Arguments of `tvpctl verify`.
pub struct VerifyArgs<'a> {
    /// Evidence JSON file.
    pub evidence: &'a Path,
    /// The nonce the verifier sent, hex.
    pub nonce: &'a str,
    /// The trusted AK (PEM), from the inventory.
    pub ak: &'a Path,
    /// Expected PCR values file.
    pub expect: Option<&'a Path>,
    /// The EK's TPM name, hex, from the inventory: binds the quote to that EK.
    pub ek_name: Option<&'a str>,
    /// The host's IMA allowlist: judge its runtime integrity.
    pub ima_allowlist: Option<&'a Path>,
    /// JSON output.
    pub json: bool,
}

/// `tvpctl verify`: exit 0 only if every check passes; otherwise exit 1 and name the check.
pub fn run_verify(a: &VerifyArgs) -> i32 {
    let result = (|| -> Result<Result<tvp_verifier::VerifiedEvidence, VerifyError>, i32> {
        let ev_text = read_text(a.evidence)?;
        let nonce = hex_arg("nonce", a.nonce)?;
        let ak = AkKey::from_pem(&read_text(a.ak)?).map_err(|e| {
            eprintln!(
                "tvpctl: {}: not a usable AK public key: {e}",
                a.ak.display()
            );
            exit::IO
        })?;
        let mut opts = VerifyOptions::new(nonce, ak);
        if let Some(p) = a.expect {
            let exp: ExpectedPcrs = serde_json::from_str(&read_text(p)?).map_err(|e| {
                eprintln!("tvpctl: {}: not an expected-values file: {e}", p.display());
                exit::IO
            })?;
            opts = opts.with_expected(exp);
        }
        if let Some(n) = a.ek_name {
            let name = hex_arg("ek-name", n)?;
            opts = opts.with_ek_name(&name).ok_or_else(|| {
                eprintln!("tvpctl: --ek-name: unsupported name algorithm");
                exit::USAGE
            })?;
        }
        if let Some(p) = a.ima_allowlist {
            opts = opts.with_runtime_integrity(RuntimeIntegrity::Ima(
                super::inventory::read_allowlist(p)?,
            ));
        }
        Ok(tvp_verifier::verify_json(&ev_text, &opts))
    })();
    let outcome = match result {
        Ok(o) => o,
        Err(code) => return code,
    };
    match outcome {
        Ok(v) => {
            if a.json {
                let pcrs: serde_json::Map<String, serde_json::Value> = v
                    .pcrs
                    .iter()
                    .map(|(k, d)| (k.to_string(), hex::encode(d).into()))
                    .collect();
                println!(
                    "{:#}",
                    serde_json::json!({"ok": true, "host_id": v.host_id, "ak_name": hex::encode(&v.ak_name),
                    "reset_count": v.reset_count, "pcrs": {"sha256": pcrs},
                    "replayed_pcrs": v.replayed.keys().collect::<Vec<_>>(),
                    "runtime_integrity": v.runtime_integrity.name(),
                    "ima_measurements": match v.runtime_integrity {
                        RuntimeIntegrityReport::Ima { measured, .. } => Some(measured),
                        RuntimeIntegrityReport::NotChecked => None,
                    }})
                );
            } else {
                println!("evidence verified: every check passed");
                println!("  host id:      {}", v.host_id);
                println!("  AK name:      {}", hex::encode(&v.ak_name));
                println!("  TPM resets:   {}", v.reset_count);
                for (i, d) in &v.pcrs {
                    let how = if v.replayed.contains_key(i) {
                        "replayed from event log"
                    } else {
                        "no events"
                    };
                    println!("  PCR {i:>2}:       {} ({how})", hex::encode(d));
                }
                if a.expect.is_some() {
                    println!("  expected values: all equal");
                }
                if a.ek_name.is_some() {
                    println!("  signer:       AK under the given EK");
                }
                println!("  runtime:      {}", v.runtime_integrity.summary());
            }
            exit::OK
        }
        Err(e) => {
            if a.json {
                println!(
                    "{:#}",
                    serde_json::json!({"ok": false, "check": e.check().name(), "message": e.to_string()})
                );
            }
            eprintln!("verification FAILED at check {}", e);
            exit::VERIFY_FAILED
        }
    }
}

/// `tvpctl export-tpm2`: write quote.msg, quote.sig, quote.pcrs and ak.pem into `dir`
/// and print the `tpm2_checkquote` command line that checks them.
pub fn run_export(evidence: &Path, dir: &Path, nonce: Option<&str>, ak: Option<&Path>) -> i32 {
    let result = (|| -> Result<(), i32> {
        let mut ev: Evidence = serde_json::from_str(&read_text(evidence)?).map_err(|e| {
            eprintln!("tvpctl: {}: not evidence: {e}", evidence.display());
            exit::IO
        })?;
        if let Some(n) = nonce {
            // Check the quote against the nonce the verifier sent, not the one the
            // evidence claims.
            ev.nonce = hex_arg("nonce", n)?;
        }
        let ak_pem = match ak {
            Some(p) => Some(read_text(p)?),
            None => None,
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            eprintln!("tvpctl: cannot create {}: {e}", dir.display());
            exit::IO
        })?;
        let files = export_for_checkquote(&ev, dir, ak_pem.as_deref()).map_err(|e| {
            eprintln!("tvpctl: {e}");
            exit::IO
        })?;
        let args: Vec<String> = files
            .args
            .iter()
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect();
        println!("tpm2_checkquote {}", args.join(" "));
        Ok(())
    })();
    match result {
        Ok(()) => exit::OK,
        Err(c) => c,
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:,=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
