//! `tvp-boot-server`: serve boot requests (see the library docs).

use clap::Parser;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use tvp_boot_server::reservations::Reservations;
use tvp_boot_server::server::BootServer;
use tvp_boot_server::tls::server_config;

#[derive(Parser)]
#[command(name = "tvp-boot-server", version, about = "The tenant's boot server")]
struct Cli {
    /// Address to listen on, e.g. 10.0.0.1:8443.
    #[arg(long)]
    listen: String,
    /// Server certificate chain (PEM), issued by the tenant CA.
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM, PKCS#8).
    #[arg(long)]
    key: PathBuf,
    /// Reservations file: lines "<VIP> <auth code>".
    #[arg(long)]
    reservations: PathBuf,
    /// Stop after this many connections.
    #[arg(long)]
    max_connections: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<(), String> {
        let text = std::fs::read_to_string(&cli.reservations)
            .map_err(|e| format!("{}: {e}", cli.reservations.display()))?;
        let reservations = Reservations::parse(&text).map_err(|e| e.to_string())?;
        let config = server_config(&cli.cert, &cli.key).map_err(|e| e.to_string())?;
        let listener =
            TcpListener::bind(&cli.listen).map_err(|e| format!("{}: {e}", cli.listen))?;
        BootServer::new(config, reservations, Box::new(std::io::stdout()))
            .serve(&listener, cli.max_connections);
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tvp-boot-server: {e}");
            ExitCode::FAILURE
        }
    }
}
