//! tvpctl commands that call the host endpoints of the API.

use std::path::Path;

use base64::Engine;
use serde::de::DeserializeOwned;

use super::client::{self, ClientError};
use super::{exit, Cli};
use tvp_agent::api::types::{
    ActivateCredentialRequest, ActivateCredentialResponse, ErrorBody, HostInfo, QuoteRequest,
};

/// Call the API and decode a JSON reply, or print the error and return an exit code.
pub fn call<T: DeserializeOwned>(
    cli: &Cli,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(T, Vec<u8>), i32> {
    call_with_token(cli, method, path, body, None)
}

/// [`call`] with a tenant authorization token (restricted VM operations).
pub fn call_with_token<T: DeserializeOwned>(
    cli: &Cli,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    token: Option<&str>,
) -> Result<(T, Vec<u8>), i32> {
    let reply = client::request_with_token(&cli.socket, method, path, body.as_deref(), token)
        .map_err(|e| {
            eprintln!("tvpctl: {e}");
            match e {
                ClientError::Connect { .. } => exit::UNREACHABLE,
                _ => exit::API_ERROR,
            }
        })?;
    if reply.status >= 400 {
        match serde_json::from_slice::<ErrorBody>(&reply.body) {
            Ok(b) => eprintln!(
                "tvpctl: tvpd refused ({} {}): {}",
                reply.status, b.error.code, b.error.message
            ),
            Err(_) => eprintln!(
                "tvpctl: tvpd answered HTTP {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
        }
        return Err(exit::API_ERROR);
    }
    let v = serde_json::from_slice(&reply.body).map_err(|e| {
        eprintln!("tvpctl: unexpected reply from tvpd: {e}");
        exit::API_ERROR
    })?;
    Ok((v, reply.body))
}

fn done(r: Result<(), i32>) -> i32 {
    match r {
        Ok(()) => exit::OK,
        Err(c) => c,
    }
}

/// Read a text file, or print why not and return the exit code.
pub fn read_text(path: &Path) -> Result<String, i32> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("tvpctl: cannot read {}: {e}", path.display());
        exit::IO
    })
}

/// Write bytes to a file or stdout.
pub fn write_out(path: Option<&Path>, bytes: &[u8]) -> Result<(), i32> {
    match path {
        Some(p) => std::fs::write(p, bytes).map_err(|e| {
            eprintln!("tvpctl: cannot write {}: {e}", p.display());
            exit::IO
        }),
        None => {
            println!("{}", String::from_utf8_lossy(bytes));
            Ok(())
        }
    }
}

/// `tvpctl host`
pub fn show_host(cli: &Cli) -> i32 {
    done((|| {
        let (h, raw): (HostInfo, _) = call(cli, "GET", "/v1/host", None)?;
        if cli.json {
            return write_out(None, &raw);
        }
        println!("host id:        {}", h.host_id);
        println!("tvpd version:   {}", h.version);
        println!("platform PCR:   {} ({})", h.platform_pcr, h.pcr_bank);
        println!("AK name:        {}", h.ak_name);
        if h.platform_intact {
            println!("platform:       intact (no measured file changed since start)");
        } else {
            for c in &h.platform_changes {
                println!(
                    "platform:       CHANGED {} at {} (measured {}, now {})",
                    c.path,
                    c.detected_at,
                    c.measured,
                    c.current.as_deref().unwrap_or("gone")
                );
            }
        }
        println!(
            "EK certificate: {}",
            if h.ek_certificate_pem.is_some() {
                "present"
            } else {
                "none"
            }
        );
        println!("AK public key:\n{}", h.ak_public_pem.trim_end());
        println!("EK public key:\n{}", h.ek_public_pem.trim_end());
        Ok(())
    })())
}

/// `tvpctl quote`
pub fn quote(cli: &Cli, nonce: &str, pcrs: Option<Vec<u32>>, output: Option<&Path>) -> i32 {
    done((|| {
        let req = QuoteRequest {
            nonce: nonce.to_string(),
            pcrs,
        };
        let body = serde_json::to_vec(&req).map_err(|_| exit::USAGE)?;
        let (_, raw): (tvp_verifier::Evidence, _) =
            call(cli, "POST", "/v1/host/quote", Some(body))?;
        write_out(output, &raw)?;
        if let Some(p) = output {
            eprintln!("evidence written to {}", p.display());
        }
        Ok(())
    })())
}

/// `tvpctl event-log`
pub fn event_log(cli: &Cli) -> i32 {
    done((|| {
        let (log, raw): (Vec<tvp_verifier::CelRecord>, _) =
            call(cli, "GET", "/v1/host/event-log", None)?;
        if cli.json {
            return write_out(None, &raw);
        }
        println!("{:>4} {:>3}  {:<64}  what", "rec", "pcr", "sha256");
        for r in log {
            let d = r.sha256().map(hex::encode).unwrap_or_else(|| "-".into());
            println!(
                "{:>4} {:>3}  {d:<64}  {:?} {}",
                r.recnum, r.pcr, r.content.event_type, r.content.description
            );
        }
        Ok(())
    })())
}

/// Split a `tpm2_makecredential -o` file: magic 0xBADCC0DE, version 1, then a
/// marshalled TPM2B_ID_OBJECT and a TPM2B_ENCRYPTED_SECRET.
pub fn split_mkcred(bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let rest = bytes
        .strip_prefix(&[0xba, 0xdc, 0xc0, 0xde])
        .ok_or("not a tpm2_makecredential file (bad magic)")?;
    let rest = rest
        .strip_prefix(&[0, 0, 0, 1])
        .ok_or("unsupported tpm2_makecredential file version")?;
    let (id, rest) = tpm2b(rest).ok_or("truncated credential blob")?;
    let (secret, rest) = tpm2b(rest).ok_or("truncated encrypted secret")?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes", rest.len()));
    }
    Ok((id.to_vec(), secret.to_vec()))
}

fn tpm2b(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = b.split_at_checked(2)?;
    let n = u16::from_be_bytes([len[0], len[1]]) as usize;
    rest.split_at_checked(n)
}

/// `tvpctl activate-credential`
pub fn activate_credential(cli: &Cli, mkcred: &Path, output: Option<&Path>) -> i32 {
    done((|| {
        let bytes = std::fs::read(mkcred).map_err(|e| {
            eprintln!("tvpctl: cannot read {}: {e}", mkcred.display());
            exit::IO
        })?;
        let (id, secret) = split_mkcred(&bytes).map_err(|e| {
            eprintln!("tvpctl: {}: {e}", mkcred.display());
            exit::IO
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let req = ActivateCredentialRequest {
            credential_blob: b64.encode(id),
            secret: b64.encode(secret),
        };
        let body = serde_json::to_vec(&req).map_err(|_| exit::USAGE)?;
        let (resp, raw): (ActivateCredentialResponse, _) =
            call(cli, "POST", "/v1/host/activate-credential", Some(body))?;
        let cred = b64.decode(&resp.credential).map_err(|_| exit::API_ERROR)?;
        match output {
            Some(p) => write_out(Some(p), &cred),
            None if cli.json => write_out(None, &raw),
            None => {
                println!("{}", hex::encode(cred));
                Ok(())
            }
        }
    })())
}
