//! `tvpctl vm`: measured VMs through the API.

use std::path::PathBuf;

use clap::Subcommand;

use super::host::{call, write_out};
use super::{exit, Cli};
use crate::vm::VmView;

/// `tvpctl vm` subcommands.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a measured VM from a JSON spec (docs/api.md: id, vip, mac, auth_code,
    /// boot_server, boot_server_name, tenant_ca_pem, ...).
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
    /// Destroy a VM.
    Delete {
        /// VM id.
        id: String,
    },
}

fn print_vm(v: &VmView) {
    println!("{}: {:?}", v.id, v.state);
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
    for (t, s) in &v.history {
        println!("  {t}  {s:?}");
    }
}

/// Run a vm subcommand.
pub fn run(cli: &Cli, cmd: &VmCommand) -> i32 {
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
                            "{:<24} {:<12} {:<8} {}",
                            v.id,
                            format!("{:?}", v.state).to_lowercase(),
                            lease,
                            v.reason.unwrap_or_default()
                        );
                    }
                }
            }
            VmCommand::Show { id } | VmCommand::Delete { id } => {
                let method = if matches!(cmd, VmCommand::Delete { .. }) {
                    "DELETE"
                } else {
                    "GET"
                };
                let (v, raw): (VmView, _) = call(cli, method, &format!("/v1/vms/{id}"), None)?;
                if cli.json {
                    write_out(None, &raw)?;
                } else {
                    print_vm(&v);
                }
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => exit::OK,
        Err(c) => c,
    }
}
