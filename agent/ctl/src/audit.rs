//! tvpctl's audit and authorization commands: `authorize` (the tenant signs a token),
//! `audit show | anchor | extract` (read from tvpd), `audit verify` (check a whole log
//! or a tenant's extract, optionally against an AK-certified anchor; names the first
//! bad record).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Deserialize;
use tvp_audit::anchor::AnchorCertification;
use tvp_audit::chain;
use tvp_audit::extract::Extract;
use tvp_audit::params;
use tvp_audit::policy::TenantPolicy;
use tvp_audit::record::AuditRecord;
use tvp_audit::token::TenantSigner;

use super::host::read_text;
use super::host::{call, write_out};
use super::{exit, Cli};

/// `tvpctl audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the audit log (root only): one JSON record per line with --json, a
    /// summary line per record otherwise. `--json --since 1` output is a log file
    /// `audit verify` accepts.
    Show {
        /// First sequence number.
        #[arg(long, default_value_t = 1)]
        since: u64,
    },
    /// Get the TPM anchor of the log certified by the AK (TPM2_NV_Certify), for
    /// `audit verify --anchor` (root only).
    Anchor {
        /// Fresh nonce, hex, 1 to 32 bytes.
        #[arg(long)]
        nonce: String,
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Get a tenant's extract of one VM's records.
    Extract {
        /// The VM.
        #[arg(long)]
        vm: String,
        /// First sequence number.
        #[arg(long, default_value_t = 1)]
        since: u64,
        /// Fresh nonce (hex): include an AK-certified anchor.
        #[arg(long)]
        nonce: Option<String>,
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Verify a log file (JSON lines, e.g. the state directory's audit.log) or a
    /// tenant's extract (JSON); exit 1 naming the first bad record.
    Verify {
        /// The log or extract.
        file: PathBuf,
        /// An anchor certification (`audit anchor -o`); for an extract, the one it
        /// carries is used if this is absent.
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
        /// The AK public key (PEM) from your host inventory; without it the key in
        /// the certification is trusted (and a warning printed).
        #[arg(long, value_name = "PEM")]
        ak: Option<PathBuf>,
        /// The nonce you asked the certification for (hex).
        #[arg(long)]
        nonce: Option<String>,
        /// Tenant policy (JSON), required for extracts: which operations must appear.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `tvpctl authorize`: sign a token and print its text form.
pub fn authorize(
    key: &Path,
    vm: &str,
    op: &str,
    param: &[String],
    counter: Option<u64>,
    expires: u64,
    json: bool,
) -> i32 {
    let run = || -> Result<(), i32> {
        let signer = TenantSigner::from_pkcs8_pem(&read_text(key)?).map_err(|e| {
            eprintln!("tvpctl: {}: {e}", key.display());
            exit::IO
        })?;
        let p = params::parse_kv(param).map_err(|e| {
            eprintln!("tvpctl: {e}");
            exit::USAGE
        })?;
        // Default counter: milliseconds since the epoch, increasing for one signer.
        let counter = counter.unwrap_or_else(|| now_secs().saturating_mul(1000));
        let t = signer.authorize(op, vm, &params::digest(&p), counter, now_secs() + expires);
        if json {
            println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
        } else {
            println!("{}", t.encode());
        }
        Ok(())
    };
    run().err().unwrap_or(exit::OK)
}

#[derive(Deserialize)]
struct AdminView {
    records: Vec<AuditRecord>,
}

/// Run an `audit` subcommand.
pub fn run(cli: &Cli, cmd: &AuditCommand) -> i32 {
    let r = match cmd {
        AuditCommand::Show { since } => show(cli, *since),
        AuditCommand::Anchor { nonce, output } => {
            let body = serde_json::json!({ "nonce": nonce })
                .to_string()
                .into_bytes();
            call::<AnchorCertification>(cli, "POST", "/v1/audit/anchor", Some(body))
                .and_then(|(_, raw)| write_out(output.as_deref(), &raw))
        }
        AuditCommand::Extract {
            vm,
            since,
            nonce,
            output,
        } => {
            let mut path = format!("/v1/vms/{vm}/audit?since={since}");
            if let Some(n) = nonce {
                path.push_str(&format!("&nonce={n}"));
            }
            call::<Extract>(cli, "GET", &path, None)
                .and_then(|(_, raw)| write_out(output.as_deref(), &raw))
        }
        AuditCommand::Verify {
            file,
            anchor,
            ak,
            nonce,
            policy,
        } => verify(
            file,
            anchor.as_deref(),
            ak.as_deref(),
            nonce.as_deref(),
            policy.as_deref(),
        ),
    };
    r.err().unwrap_or(exit::OK)
}

fn show(cli: &Cli, since: u64) -> Result<(), i32> {
    let (v, _) = call::<AdminView>(cli, "GET", &format!("/v1/audit?since={since}"), None)?;
    for r in v.records {
        if cli.json {
            println!("{}", r.to_line());
        } else {
            println!(
                "{:>6} {} uid={} pid={} {:<8} {:<5} {} vm={} status={} {}",
                r.seq,
                r.time_ms,
                r.uid,
                r.pid.unwrap_or(-1),
                format!("{:?}", r.stage).to_lowercase(),
                format!("{:?}", r.decision).to_lowercase(),
                r.op,
                r.vm.as_deref().unwrap_or("-"),
                r.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.result.as_deref().unwrap_or(&r.reason),
            );
        }
    }
    Ok(())
}

fn failed(msg: impl std::fmt::Display) -> i32 {
    println!("FAILED: {msg}");
    exit::VERIFY_FAILED
}

fn verify(
    file: &Path,
    anchor: Option<&Path>,
    ak: Option<&Path>,
    nonce: Option<&str>,
    policy: Option<&Path>,
) -> Result<(), i32> {
    let text = read_text(file)?;
    let ak_pem = ak.map(read_text).transpose()?;
    let nonce = nonce
        .map(|n| {
            hex::decode(n).map_err(|e| {
                eprintln!("tvpctl: --nonce: not hex ({e})");
                exit::USAGE
            })
        })
        .transpose()?;
    let cert: Option<AnchorCertification> = anchor
        .map(|p| {
            serde_json::from_str(&read_text(p)?).map_err(|e| {
                eprintln!("tvpctl: {}: not an anchor certification: {e}", p.display());
                exit::IO
            })
        })
        .transpose()?;
    let check_cert = |c: &AnchorCertification| -> Result<(tvp_audit::Digest32, u64), i32> {
        if ak_pem.is_none() {
            eprintln!("warning: the AK in the certification is trusted as is; pass --ak from your host inventory");
        }
        let v = c
            .verify(ak_pem.as_deref(), nonce.as_deref())
            .map_err(failed)?;
        Ok((v, c.records))
    };
    // An extract is one JSON object with "entries"; a log is JSON lines.
    if let Ok(x) = serde_json::from_str::<Extract>(&text) {
        let Some(pp) = policy else {
            eprintln!("tvpctl: verifying an extract needs the tenant policy (--policy FILE): it says which records must appear");
            return Err(exit::USAGE);
        };
        let pol = TenantPolicy::from_json(read_text(pp)?.as_bytes()).map_err(|e| {
            eprintln!("tvpctl: {}: {e}", pp.display());
            exit::IO
        })?;
        let certified = match cert.as_ref().or(x.anchor.as_ref()) {
            Some(c) => Some(check_cert(c)?),
            None => None,
        };
        let s = x.verify(&|op| pol.reports(op), certified).map_err(failed)?;
        println!(
            "OK: extract of VM {} covers seq {}..{} ({} records of this VM){}",
            x.vm,
            x.since,
            x.since + s.covered.saturating_sub(1),
            s.records.len(),
            if certified.is_some() {
                ", matches the TPM-certified anchor"
            } else {
                "; no anchor given: truncation is not detectable"
            }
        );
        return Ok(());
    }
    let records = chain::parse_log(&text).map_err(failed)?;
    let certified = cert.as_ref().map(check_cert).transpose()?;
    // The log may have grown since the certification: check the certified prefix.
    let summary = match certified {
        Some((value, n)) => {
            if (n as usize) > records.len() {
                return Err(failed(format!(
                    "the TPM anchor covers {n} records but the log has only {}: records were removed from the end",
                    records.len()
                )));
            }
            chain::verify_chain(&records[..n as usize], Some(&value)).map_err(failed)?;
            chain::verify_chain(&records, None).map_err(failed)?
        }
        None => chain::verify_chain(&records, None).map_err(failed)?,
    };
    println!(
        "OK: {} records, chain intact{}",
        summary.records,
        match certified {
            Some((_, n)) => format!(", records 1..{n} match the TPM-certified anchor"),
            None => "; no anchor given: truncation is not detectable".into(),
        }
    );
    Ok(())
}
