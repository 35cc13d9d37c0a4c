//! `tvp-kms`: serve the reference key-management service on a Unix socket.
//! One JSON request line per connection, one JSON response line (docs/kms.md).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rsa::pkcs8::DecodePrivateKey;
use tvp_kms::protocol::MAX_REQUEST;
use tvp_kms::{Inventory, Kms, Request, Response};

/// tvp-kms: the tenant's reference key-management service. Releases image keys only to
/// hosts whose TPM proves an expected, unchanged platform (docs/kms.md).
///
/// Exit codes: 0 stopped; 2 bad usage; 5 key, inventory or socket unusable.
#[derive(Parser)]
#[command(name = "tvp-kms", version)]
struct Args {
    /// Key-management private key (PEM, from `tvpctl image keygen`).
    #[arg(long, value_name = "KEY.pem")]
    key: PathBuf,
    /// Inventory of hosts (JSON: {"hosts": [{host_id, ak_public_pem, ek_name?, platform_pcrs}]}).
    #[arg(long, value_name = "FILE")]
    inventory: PathBuf,
    /// Unix socket to serve on.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
}

fn log(event: serde_json::Value) {
    eprintln!("{event}");
}

fn serve(kms: &Kms, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let read = BufReader::new(&stream)
        .take(MAX_REQUEST as u64 + 1)
        .read_line(&mut line);
    let response = match read {
        Ok(n) if n > MAX_REQUEST => Response::Refused {
            check: "request".into(),
            reason: format!("request larger than {MAX_REQUEST} bytes"),
        },
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let op = match &req {
                    Request::Nonce => "nonce".to_string(),
                    Request::Release { host_id, .. } => format!("release to {host_id}"),
                };
                let resp = kms.handle(req);
                match &resp {
                    Response::Refused { check, reason } => log(
                        serde_json::json!({"op": op, "decision": "refused", "check": check, "reason": reason}),
                    ),
                    Response::Released { .. } => {
                        log(serde_json::json!({"op": op, "decision": "released"}))
                    }
                    Response::Nonce { .. } => {}
                }
                resp
            }
            Err(e) => Response::Refused {
                check: "request".into(),
                reason: format!("malformed request: {e}"),
            },
        },
        Err(e) => Response::Refused {
            check: "request".into(),
            reason: format!("cannot read request: {e}"),
        },
    };
    let mut out = serde_json::to_string(&response).unwrap_or_default();
    out.push('\n');
    let _ = (&stream).write_all(out.as_bytes());
}

fn main() {
    let a = Args::parse();
    let fail = |m: String| -> ! {
        eprintln!("tvp-kms: {m}");
        std::process::exit(5)
    };
    let key = std::fs::read_to_string(&a.key)
        .map_err(|e| e.to_string())
        .and_then(|s| rsa::RsaPrivateKey::from_pkcs8_pem(&s).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| fail(format!("{}: {e}", a.key.display())));
    let inventory: Inventory = std::fs::read(&a.inventory)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| fail(format!("{}: {e}", a.inventory.display())));
    let _ = std::fs::remove_file(&a.socket);
    let listener = UnixListener::bind(&a.socket)
        .unwrap_or_else(|e| fail(format!("{}: {e}", a.socket.display())));
    let kms = Arc::new(Kms::new(key, inventory));
    log(serde_json::json!({"event": "serving", "socket": a.socket.display().to_string()}));
    for stream in listener.incoming().flatten() {
        let kms = kms.clone();
        std::thread::spawn(move || serve(&kms, stream));
    }
}
