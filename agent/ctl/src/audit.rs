//! tvpctl's audit commands: `audit show | anchor | extract` (read from tvpd), `audit
//! verify` (check a whole log or a tenant's extract; [`super::audit_verify`]). The
//! tenant's `authorize` is [`super::authorize`].

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Deserialize;
use tvp_audit::anchor::AnchorCertification;
use tvp_audit::checkpoint::Checkpoint;
use tvp_audit::extract::Extract;
use tvp_audit::record::AuditRecord;

use super::host::read_text;
use super::host::{call, write_out};
use super::{audit_verify, exit, Cli};

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
        /// First sequence number (default: the VM's creation).
        #[arg(long, default_value_t = 1, conflicts_with = "checkpoint")]
        since: u64,
        /// Continue where this checkpoint (`audit verify --save-checkpoint`) ended.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Fresh nonce (hex): include an AK-certified anchor (needed to verify).
        #[arg(long)]
        nonce: Option<String>,
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Verify a log file (JSON lines, e.g. the state directory's audit.log) or a
    /// tenant's extract (JSON). An extract verifies only from the VM's creation or
    /// from your --checkpoint, against an anchor certified for your fresh --nonce and
    /// signed by the pinned AK (--ak or --inventory). Exit 1 naming the reason;
    /// exit 6 (GAPS) when it verifies but the trail states lost events of the VM.
    Verify {
        /// The log or extract.
        file: PathBuf,
        /// An anchor certification (`audit anchor -o`); for an extract, the one it
        /// carries is used if this is absent.
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
        /// The host's AK public key (PEM) from your inventory.
        #[arg(long, value_name = "PEM")]
        ak: Option<PathBuf>,
        /// Take the host's AK from this inventory file (`tvpctl inventory`).
        #[arg(long, value_name = "FILE", conflicts_with = "ak")]
        inventory: Option<PathBuf>,
        /// Which inventory host served the file (needed if it lists several).
        #[arg(long, value_name = "ID", requires = "inventory")]
        host: Option<String>,
        /// The fresh nonce you asked the certification for (hex).
        #[arg(long)]
        nonce: Option<String>,
        /// Tenant policy (JSON), required for extracts: which operations must appear.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Your management public key (PEM): check the VM was created with it and
        /// the policy (its creation event names their digest).
        #[arg(long, value_name = "PEM")]
        management_key: Option<PathBuf>,
        /// Continue from this checkpoint of an earlier verification instead of the
        /// VM's creation.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// After a successful verification, write where it ended (for the next one).
        #[arg(long, value_name = "FILE")]
        save_checkpoint: Option<PathBuf>,
        /// DANGEROUS: accept a certification without your fresh nonce (an old one
        /// could be replayed and later records cut off).
        #[arg(long)]
        allow_stale: bool,
        /// DANGEROUS: trust the AK inside the file instead of a pinned one (whoever
        /// made the file could have signed it with their own key).
        #[arg(long, conflicts_with_all = ["ak", "inventory"])]
        trust_embedded_ak: bool,
    },
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
            checkpoint,
            nonce,
            output,
        } => extract(cli, vm, *since, checkpoint.as_deref(), nonce.as_deref())
            .and_then(|raw| write_out(output.as_deref(), &raw)),
        AuditCommand::Verify {
            file,
            anchor,
            ak,
            inventory,
            host,
            nonce,
            policy,
            management_key,
            checkpoint,
            save_checkpoint,
            allow_stale,
            trust_embedded_ak,
        } => {
            return audit_verify::run(&audit_verify::VerifyArgs {
                file,
                anchor: anchor.as_deref(),
                ak: ak.as_deref(),
                inventory: inventory.as_deref(),
                host: host.as_deref(),
                nonce: nonce.as_deref(),
                policy: policy.as_deref(),
                management_key: management_key.as_deref(),
                checkpoint: checkpoint.as_deref(),
                save_checkpoint: save_checkpoint.as_deref(),
                allow_stale: *allow_stale,
                trust_embedded_ak: *trust_embedded_ak,
                json: cli.json,
            })
        }
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

/// `audit extract`: from `since`, or where the checkpoint ended.
fn extract(
    cli: &Cli,
    vm: &str,
    since: u64,
    checkpoint: Option<&Path>,
    nonce: Option<&str>,
) -> Result<Vec<u8>, i32> {
    let since = match checkpoint {
        Some(p) => {
            let cp = Checkpoint::from_json(&read_text(p)?).map_err(|e| {
                eprintln!("tvpctl: {}: {e}", p.display());
                exit::IO
            })?;
            if cp.vm != vm {
                eprintln!(
                    "tvpctl: {} is a checkpoint of VM {}, not {vm}",
                    p.display(),
                    cp.vm
                );
                return Err(exit::USAGE);
            }
            cp.seq.saturating_add(1)
        }
        None => since,
    };
    let mut path = format!("/v1/vms/{vm}/audit?since={since}");
    if let Some(n) = nonce {
        path.push_str(&format!("&nonce={n}"));
    }
    call::<Extract>(cli, "GET", &path, None).map(|(_, raw)| raw)
}
