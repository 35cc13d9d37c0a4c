//! `tvp-boot-server`: serve network boots, or sign a workload (see the library docs).

use clap::{Parser, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tvp_boot_server::expect::TenantManagement;
use tvp_boot_server::ledger::Ledger;
use tvp_boot_server::reservations::{Reservations, DEFAULT_MAX_FAILURES};
use tvp_boot_server::server::{BootServer, Tenant};
use tvp_boot_server::tls::server_config;
use tvp_boot_server::workload;

#[derive(Parser)]
#[command(name = "tvp-boot-server", version, about = "The tenant's boot server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve network boots; one JSON line per connection on stdout.
    Serve(Serve),
    /// Sign a workload with an Ed25519 key certified by the tenant CA: a static ELF
    /// image (--elf), or a Linux kernel (--kernel bzImage, --cmdline, optional
    /// --initrd), which the firmware boots with the x86 64-bit boot protocol.
    SignWorkload {
        /// The workload (ELF).
        #[arg(long, required_unless_present = "kernel", conflicts_with = "kernel")]
        elf: Option<PathBuf>,
        /// A Linux kernel (bzImage, relocatable, boot protocol 2.12 or later).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The kernel command line (printable ASCII, at most 2047 bytes).
        #[arg(long, requires = "kernel", default_value = "console=ttyS0")]
        cmdline: String,
        /// An initial RAM disk for the kernel.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// The Ed25519 private key (PEM, PKCS#8).
        #[arg(long)]
        key: PathBuf,
        /// Its certificate, issued by the tenant CA for code signing (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Where to write the signed workload.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct Serve {
    /// Address to listen on, e.g. 10.0.0.1:8443.
    #[arg(long)]
    listen: String,
    /// Server certificate chain (PEM), issued by the tenant CA.
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM, PKCS#8).
    #[arg(long)]
    key: PathBuf,
    /// The tenant CA certificate (PEM) the VMs' configuration pages must carry.
    #[arg(long)]
    ca: PathBuf,
    /// This server's TLS name, which the configuration pages must carry.
    #[arg(long)]
    server_name: String,
    /// Reservations file: lines "<VIP> <auth code> memory=<MiB>|any vcpus=<n>|any
    /// image=<sha256>|none|any disk=<header sha256>|none|any management=tenant|any"
    /// (docs/boot-server.md).
    #[arg(long)]
    reservations: PathBuf,
    /// The reservation ledger: spent reservations and counted failures, written before
    /// the server acts on them, so that a restart forgets neither (default: the
    /// reservations file's path with `.ledger` appended). Keep it with the reservations:
    /// a U it records as spent is refused for good; give a new VM a new U.
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Failed attempts a reservation tolerates; then it is refused with too-many-failures.
    #[arg(long, default_value_t = DEFAULT_MAX_FAILURES)]
    max_failures: u32,
    /// Host inventory (JSON: {"hosts": [{host_id, ak_public_pem, ek_name, platform_pcrs}]}).
    #[arg(long)]
    inventory: PathBuf,
    /// The reference firmware image (for the expected PCR 23).
    #[arg(long)]
    firmware: PathBuf,
    /// The signed workload to deliver.
    #[arg(long)]
    workload: PathBuf,
    /// The management public key (PEM) this tenant gives its VMs (measured into PCR 23).
    #[arg(long, value_name = "PEM")]
    management_key: PathBuf,
    /// The management policy (JSON) this tenant gives its VMs (measured into PCR 23).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Stop after this many connections.
    #[arg(long)]
    max_connections: Option<usize>,
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// The management binding (digest, key id) of the tenant's key and policy files.
fn management(key: &Path, policy: &Path) -> Result<TenantManagement, String> {
    let pem = String::from_utf8(read(key)?).map_err(|_| format!("{}: not UTF-8", key.display()))?;
    let key =
        tvp_audit::TenantKey::from_pem(&pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let policy = tvp_audit::TenantPolicy::from_json(&read(policy)?)
        .map_err(|e| format!("{}: {e}", policy.display()))?;
    Ok(TenantManagement {
        digest: tvp_audit::policy::management_digest(&key, &policy),
        key_id: key.key_id(),
    })
}

fn serve(s: Serve) -> Result<(), String> {
    let text = String::from_utf8(read(&s.reservations)?)
        .map_err(|_| format!("{}: not UTF-8", s.reservations.display()))?;
    let reservations = Reservations::parse(&text)
        .map_err(|e| format!("{}: {e}", s.reservations.display()))?
        .with_max_failures(s.max_failures);
    let ledger_path = s.ledger.clone().unwrap_or_else(|| {
        let mut p = s.reservations.clone().into_os_string();
        p.push(".ledger");
        PathBuf::from(p)
    });
    let (ledger, entries) = Ledger::open(&ledger_path).map_err(|e| e.to_string())?;
    let (reservations, replay) = reservations.with_ledger(ledger, &entries);
    let inventory = serde_json::from_slice(&read(&s.inventory)?)
        .map_err(|e| format!("{}: {e}", s.inventory.display()))?;
    let ca_der = CertificateDer::from_pem_file(&s.ca)
        .map_err(|e| format!("{}: {e}", s.ca.display()))?
        .to_vec();
    let tenant = Tenant {
        inventory,
        firmware: read(&s.firmware)?,
        ca_der,
        server_name: s.server_name,
        workload: workload::load(&s.workload).map_err(|e| e.to_string())?,
        management: management(&s.management_key, &s.policy)?,
    };
    let config = server_config(&s.cert, &s.key).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(&s.listen).map_err(|e| format!("{}: {e}", s.listen))?;
    BootServer::new(config, reservations, tenant, Box::new(std::io::stdout()))
        .with_start_field(
            "ledger",
            serde_json::json!({"path": ledger_path.display().to_string(),
                "spent": replay.spent, "failures": replay.failures, "unknown": replay.unknown}),
        )
        .serve(&listener, s.max_connections);
    Ok(())
}

fn main() -> ExitCode {
    env_logger::init();
    let run = || -> Result<(), String> {
        match Cli::parse().cmd {
            Cmd::Serve(s) => serve(s),
            Cmd::SignWorkload {
                elf,
                kernel,
                cmdline,
                initrd,
                key,
                cert,
                out,
            } => {
                let payload = match (elf, kernel) {
                    (Some(elf), _) => read(&elf)?,
                    (None, Some(kernel)) => {
                        let initrd = initrd.as_deref().map(read).transpose()?;
                        workload::linux_bundle(
                            &read(&kernel)?,
                            &cmdline,
                            initrd.as_deref().unwrap_or_default(),
                        )
                        .map_err(|e| e.to_string())?
                    }
                    (None, None) => return Err("--elf or --kernel is required".into()),
                };
                let signed = workload::sign(&payload, &key, &cert).map_err(|e| e.to_string())?;
                std::fs::write(&out, signed).map_err(|e| format!("{}: {e}", out.display()))
            }
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tvp-boot-server: {e}");
            ExitCode::FAILURE
        }
    }
}
