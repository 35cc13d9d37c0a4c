//! `tvp-kms`: serve the reference key-management service on a Unix socket.
//! One JSON request line per connection, one JSON response line (docs/kms.md).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rsa::pkcs8::DecodePrivateKey;
use tvp_kms::protocol::MAX_REQUEST;
use tvp_kms::{Inventory, Kms, ReleasePolicy, Request, Response};
use tvp_verifier::RuntimeIntegrityReport;

/// tvp-kms: the tenant's reference key-management service. Releases an image key only
/// to a VM its release policy allows (tenant CA, management key and policy, firmware),
/// on a host whose TPM proves an expected, unchanged platform and commits its quote to
/// that VM (docs/kms.md).
///
/// The release policy's digests: `--policy-digest POLICY.json`, `--key-id KEY.pem`
/// (management key) and `--ca-digest CA.pem` print them and exit.
///
/// Exit codes: 0 stopped (or printed); 2 bad usage; 5 key, inventory, release policy
/// or socket unusable.
#[derive(Parser)]
#[command(name = "tvp-kms", version)]
struct Args {
    /// Key-management private key (PEM, from `tvpctl image keygen`).
    #[arg(long, value_name = "KEY.pem", required_unless_present_any = ["policy_digest", "key_id", "ca_digest"])]
    key: Option<PathBuf>,
    /// Inventory of hosts (JSON: {"hosts": [{host_id, ak_public_pem, ek_name?, platform_pcrs}]}).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["policy_digest", "key_id", "ca_digest"])]
    inventory: Option<PathBuf>,
    /// Release policy (TOML): per image, the tenant CAs, management keys, policies and
    /// firmware of the VMs that may receive its key (docs/kms.md).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["policy_digest", "key_id", "ca_digest"])]
    release_policy: Option<PathBuf>,
    /// Unix socket to serve on.
    #[arg(long, value_name = "PATH", required_unless_present_any = ["policy_digest", "key_id", "ca_digest"])]
    socket: Option<PathBuf>,
    /// Print the release-policy digest of a management policy (JSON) and exit.
    #[arg(long, value_name = "POLICY.json")]
    policy_digest: Option<PathBuf>,
    /// Print the key id of a management public key (PEM) and exit.
    #[arg(long, value_name = "KEY.pem")]
    key_id: Option<PathBuf>,
    /// Print the SHA-256 of a tenant CA certificate (PEM or DER) and exit.
    #[arg(long, value_name = "CA.pem")]
    ca_digest: Option<PathBuf>,
}

/// `--policy-digest`, `--key-id`, `--ca-digest`: the digest of the file.
fn print_digest(a: &Args) -> Option<Result<String, String>> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    if let Some(p) = &a.policy_digest {
        return Some(read(p).and_then(|b| {
            let policy = tvp_audit::TenantPolicy::from_json(&b).map_err(|e| e.to_string())?;
            Ok(hex::encode(tvp_kms::key_use::policy_digest(&policy)))
        }));
    }
    if let Some(p) = &a.key_id {
        return Some(read(p).and_then(|b| {
            let pem = String::from_utf8(b).map_err(|e| e.to_string())?;
            tvp_audit::TenantKey::from_pem(&pem)
                .map(|k| k.key_id())
                .map_err(|e| e.to_string())
        }));
    }
    let p = a.ca_digest.as_ref()?;
    Some(read(p).and_then(|b| {
        let der = match std::str::from_utf8(&b) {
            Ok(t) if t.contains("-----BEGIN CERTIFICATE-----") => {
                let body: String = t
                    .lines()
                    .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
                    .skip(1)
                    .take_while(|l| !l.starts_with("-----END"))
                    .collect();
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body.trim())
                    .map_err(|e| format!("certificate PEM: {e}"))?
            }
            _ => b,
        };
        Ok(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)))
    }))
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
                let (resp, runtime) = kms.handle_reporting(req);
                match &resp {
                    Response::Refused { check, reason } => log(
                        serde_json::json!({"op": op, "decision": "refused", "check": check, "reason": reason}),
                    ),
                    Response::Released { .. } => match runtime {
                        Some(RuntimeIntegrityReport::NotChecked) | None => log(serde_json::json!({
                            "op": op, "decision": "released", "runtime_integrity": "not-checked",
                            "warning": "runtime integrity was not checked: the host's inventory entry says \"runtime_integrity\": \"none\", so what else ran on the host is unknown"
                        })),
                        Some(r) => log(serde_json::json!({
                            "op": op, "decision": "released", "runtime_integrity": r.name(),
                            "detail": r.summary()
                        })),
                    },
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
    if let Some(r) = print_digest(&a) {
        match r {
            Ok(d) => println!("{d}"),
            Err(e) => fail(e),
        }
        return;
    }
    let (Some(key), Some(inventory), Some(release_policy), Some(socket)) =
        (&a.key, &a.inventory, &a.release_policy, &a.socket)
    else {
        eprintln!("tvp-kms: --key, --inventory, --release-policy and --socket are required");
        std::process::exit(2)
    };
    let key = std::fs::read_to_string(key)
        .map_err(|e| e.to_string())
        .and_then(|s| rsa::RsaPrivateKey::from_pkcs8_pem(&s).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| {
            fail(format!(
                "{}: {e}",
                a.key.as_deref().unwrap_or(Path::new("-")).display()
            ))
        });
    let inv: Inventory = std::fs::read(inventory)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| fail(format!("{}: {e}", inventory.display())));
    let policy = std::fs::read_to_string(release_policy)
        .map_err(|e| e.to_string())
        .and_then(|t| ReleasePolicy::from_toml(&t))
        .unwrap_or_else(|e| fail(format!("{}: {e}", release_policy.display())));
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).unwrap_or_else(|e| fail(format!("{}: {e}", socket.display())));
    let kms = Arc::new(Kms::new(key, inv, policy));
    log(serde_json::json!({"event": "serving", "socket": socket.display().to_string()}));
    for stream in listener.incoming().flatten() {
        let kms = kms.clone();
        std::thread::spawn(move || serve(&kms, stream));
    }
}
