//! `tvpctl vm`: measured VMs through the API.

use std::path::PathBuf;

use clap::Subcommand;

use super::host::{call, call_with_token, write_out};
use super::{exit, Cli};
use tvp_agent::vm::VmView;

/// `tvpctl vm` subcommands.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a measured VM from a JSON spec (docs/api.md: id, vip, mac, auth_code,
    /// boot_server, boot_server_name, tenant_ca_pem, management_public_key, policy, ...).
    Create {
        /// The spec file.
        spec: PathBuf,
    },
    /// List measured VMs.
    List,
    /// Show one VM: state, history, lease position, measurements, reason.
    Show {
        /// VM id.
        id: String,
    },
    /// Destroy a live VM, or forget an ended one (restricted: `delete`).
    Delete {
        /// VM id.
        id: String,
        /// The tenant's authorization (`tvpctl authorize --op delete`).
        #[arg(long)]
        token: Option<String>,
    },
    /// Pause the VM (its VMM is stopped; restricted: `pause`).
    Pause {
        /// VM id.
        id: String,
        /// The tenant's authorization (`tvpctl authorize --op pause`).
        #[arg(long)]
        token: Option<String>,
    },
    /// Resume a paused VM (restricted: `resume`).
    Resume {
        /// VM id.
        id: String,
        /// The tenant's authorization (`tvpctl authorize --op resume`).
        #[arg(long)]
        token: Option<String>,
    },
    /// Power the VM off; its record stays (restricted: `power-off`).
    #[command(name = "poweroff", alias = "power-off")]
    PowerOff {
        /// VM id.
        id: String,
        /// The tenant's authorization (`tvpctl authorize --op power-off`).
        #[arg(long)]
        token: Option<String>,
    },
    /// End this boot and start a new measured boot through the PCR lease
    /// (restricted: `reboot`).
    Reboot {
        /// VM id.
        id: String,
        /// The tenant's authorization (`tvpctl authorize --op reboot`).
        #[arg(long)]
        token: Option<String>,
    },
    /// The VM's TPM identity: the vTPM's EK and AK certificates, issued by the host's
    /// vTPM CA whose key the host AK certifies for a fresh nonce. Verified against the
    /// pinned host AK (--ak or --inventory), then written to DIR as files openssl and
    /// tpm2-tools read (docs/vtpm-identity.md). Exit 1 naming the failed check.
    #[command(name = "vtpm-identity")]
    VtpmIdentity {
        /// VM id.
        id: String,
        /// Directory for the files (created).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Fresh nonce, hex, 1 to 32 bytes [default: 32 random bytes].
        #[arg(long)]
        nonce: Option<String>,
        /// The host's AK public key (PEM) from your inventory.
        #[arg(long, value_name = "PEM")]
        ak: Option<PathBuf>,
        /// Take the host's AK from this inventory file (`tvpctl inventory`).
        #[arg(long, value_name = "FILE", conflicts_with = "ak")]
        inventory: Option<PathBuf>,
        /// Which inventory host runs the VM (needed if it lists several); with --ak,
        /// the host id the identity must name.
        #[arg(long, value_name = "ID")]
        host: Option<String>,
    },
    /// Any restricted operation by name, with its parameters (snapshot-create
    /// --param name=N, migrate --param destination=D, ...).
    Op {
        /// VM id.
        id: String,
        /// The operation.
        op: String,
        /// A parameter, key=value (repeatable; the token must cover the same).
        #[arg(long, value_name = "K=V")]
        param: Vec<String>,
        /// The tenant's authorization.
        #[arg(long)]
        token: Option<String>,
    },
}

/// `POST /v1/vms/{id}/operations` with the token header.
fn operate(
    cli: &Cli,
    id: &str,
    op: &str,
    params: &[String],
    token: Option<&str>,
) -> Result<(VmView, Vec<u8>), i32> {
    let params = tvp_audit::params::parse_kv(params).map_err(|e| {
        eprintln!("tvpctl: {e}");
        exit::USAGE
    })?;
    let body = serde_json::json!({"op": op, "params": params}).to_string();
    call_with_token(
        cli,
        "POST",
        &format!("/v1/vms/{id}/operations"),
        Some(body.into_bytes()),
        token,
    )
}

fn print_vm(v: &VmView) {
    println!(
        "{}: {}{}",
        v.id,
        v.state.name(),
        if v.paused { " (paused)" } else { "" }
    );
    if let Some(r) = &v.reason {
        println!("  reason:   {r}");
    }
    if let Some(p) = v.lease_position {
        println!(
            "  lease:    {}",
            if p == 0 {
                "held".to_string()
            } else {
                format!("waiting, position {p}")
            }
        );
    }
    if let Some(pid) = v.pid {
        println!("  vmm pid:  {pid}");
    }
    if let Some(p) = &v.pcr23 {
        println!("  PCR 23:   {p}");
    }
    if let Some(m) = &v.management {
        println!("  tenant key: {}", m.key_id);
        println!(
            "  policy:   allows [{}], on tampering {}",
            m.policy.allowed_operations.join(", "),
            m.policy.on_tampering.as_str()
        );
    }
    for (t, s) in &v.history {
        println!("  {t}  {}", s.name());
    }
}

fn show(cli: &Cli, v: &VmView, raw: &[u8]) -> Result<(), i32> {
    if cli.json {
        write_out(None, raw)?;
    } else {
        print_vm(v);
    }
    Ok(())
}

/// Run a vm subcommand.
pub fn run(cli: &Cli, cmd: &VmCommand) -> i32 {
    if let VmCommand::VtpmIdentity {
        id,
        out,
        nonce,
        ak,
        inventory,
        host,
    } = cmd
    {
        return super::vtpm::run(
            cli,
            &super::vtpm::Args {
                vm: id,
                out,
                nonce: nonce.as_deref(),
                ak: ak.as_deref(),
                inventory: inventory.as_deref(),
                host: host.as_deref(),
            },
        );
    }
    let r = (|| -> Result<(), i32> {
        match cmd {
            VmCommand::Create { spec } => {
                let body = std::fs::read(spec).map_err(|e| {
                    eprintln!("tvpctl: cannot read {}: {e}", spec.display());
                    exit::IO
                })?;
                let (v, raw): (VmView, _) = call(cli, "POST", "/v1/vms", Some(body))?;
                if cli.json {
                    write_out(None, &raw)?;
                } else {
                    print_vm(&v);
                }
            }
            VmCommand::List => {
                let (vs, raw): (Vec<VmView>, _) = call(cli, "GET", "/v1/vms", None)?;
                if cli.json {
                    write_out(None, &raw)?;
                } else {
                    println!("{:<24} {:<12} {:<8} reason", "id", "state", "lease");
                    for v in vs {
                        let lease = match v.lease_position {
                            Some(0) => "held".to_string(),
                            Some(n) => format!("#{n}"),
                            None => "-".to_string(),
                        };
                        println!(
                            "{:<24} {:<16} {:<8} {}",
                            v.id,
                            v.state.name(),
                            lease,
                            v.reason.unwrap_or_default()
                        );
                    }
                }
            }
            VmCommand::Show { id } => {
                let (v, raw): (VmView, _) = call(cli, "GET", &format!("/v1/vms/{id}"), None)?;
                show(cli, &v, &raw)?;
            }
            VmCommand::Delete { id, token } => {
                let path = format!("/v1/vms/{id}");
                let (v, raw): (VmView, _) =
                    call_with_token(cli, "DELETE", &path, None, token.as_deref())?;
                show(cli, &v, &raw)?;
            }
            VmCommand::Pause { id, token }
            | VmCommand::Resume { id, token }
            | VmCommand::PowerOff { id, token }
            | VmCommand::Reboot { id, token } => {
                let op = match cmd {
                    VmCommand::Pause { .. } => "pause",
                    VmCommand::Resume { .. } => "resume",
                    VmCommand::PowerOff { .. } => "power-off",
                    _ => "reboot",
                };
                let (v, raw) = operate(cli, id, op, &[], token.as_deref())?;
                show(cli, &v, &raw)?;
            }
            VmCommand::Op {
                id,
                op,
                param,
                token,
            } => {
                let (v, raw) = operate(cli, id, op, param, token.as_deref())?;
                show(cli, &v, &raw)?;
            }
            VmCommand::VtpmIdentity { .. } => {}
        }
        Ok(())
    })();
    match r {
        Ok(()) => exit::OK,
        Err(c) => c,
    }
}
