//! Obtaining an encrypted image's key for this host (docs/kms.md): ask the tenant's
//! key-management service for a nonce, answer it with a quote over the platform PCR
//! whose qualifying data is `SHA-256(nonce || digest of the key's use)` — the VM that
//! will receive it, or verification in this process — and the AK's certification of
//! the binding key, and let the TPM unwrap the released key. The key exists only in this process's memory, is wiped on drop, and is never
//! logged; plaintext is never written anywhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tvp_image::stream::read_header;
use tvp_image::{decrypt, ImageHeader, ImageKey};
use tvp_kms::protocol::{Request, Response};
use tvp_kms::KeyUse;
use tvp_verifier::verify::bound::bound_qualifying_data;

use crate::host_log::HostEventLog;
use crate::tpm::binding::BindingKey;
use crate::tpm::service::TpmClient;
use crate::tpm::TpmError;

/// Why no key (or no verified image) was obtained.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The key-management service cannot be reached or answered nonsense.
    #[error("key-management service {socket}: {reason}")]
    Service { socket: String, reason: String },
    /// The service refused, naming the failed check.
    #[error("key-management service refused the release at check {check}: {reason}")]
    Refused { check: String, reason: String },
    /// The TPM failed (e.g. refused to unwrap because the platform changed).
    #[error("TPM: {0}")]
    Tpm(#[from] TpmError),
    /// The image is not acceptable.
    #[error("image {path}: {reason}")]
    Image { path: String, reason: String },
}

fn exchange(socket: &Path, req: &Request) -> Result<Response, ReleaseError> {
    let err = |reason: String| ReleaseError::Service {
        socket: socket.display().to_string(),
        reason,
    };
    let mut s = UnixStream::connect(socket).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|_| s.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| err(e.to_string()))?;
    let mut line = serde_json::to_string(req).map_err(|e| err(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(&s)
        .take(64 * 1024)
        .read_line(&mut answer)
        .map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&answer).map_err(|e| err(format!("malformed answer: {e}")))
}

/// What the host needs to obtain keys.
pub struct Releaser {
    /// The TPM thread.
    pub tpm: TpmClient,
    /// The binding key.
    pub binding_key: BindingKey,
    /// The host event log (for the evidence).
    pub host_log: Arc<Mutex<HostEventLog>>,
    /// The platform PCR.
    pub platform_pcr: u32,
}

impl Releaser {
    /// Obtain the key of the image whose header is `header_bytes` from the service, for
    /// `key_use`. Returns the key and the digest of `key_use` the quote committed to:
    /// the caller must use the key for exactly that (a VM whose measurement matches).
    pub fn obtain_key(
        &self,
        kms: &Path,
        header_bytes: &[u8],
        key_use: &KeyUse,
    ) -> Result<(ImageKey, [u8; 32]), ReleaseError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let use_digest = key_use
            .parse()
            .map_err(|e| ReleaseError::Image {
                path: "-".into(),
                reason: format!("cannot describe the key's use: {e}"),
            })?
            .digest();
        let nonce_hex = match exchange(kms, &Request::Nonce)? {
            Response::Nonce { nonce } => nonce,
            other => {
                return Err(ReleaseError::Service {
                    socket: kms.display().to_string(),
                    reason: format!("expected a nonce, got {other:?}"),
                })
            }
        };
        let nonce = hex::decode(&nonce_hex)
            .ok()
            .filter(|n| !n.is_empty() && n.len() <= crate::tpm::quote::MAX_NONCE)
            .ok_or_else(|| ReleaseError::Service {
                socket: kms.display().to_string(),
                reason: "the nonce is not 1 to 32 bytes of hex".into(),
            })?;
        let (pcr, log, key) = (
            self.platform_pcr,
            self.host_log.clone(),
            self.binding_key.clone(),
        );
        let n = nonce.clone();
        let qualifying = bound_qualifying_data(&nonce, &use_digest).to_vec();
        let q_data = qualifying.clone();
        // The host's runtime integrity, as in the mailbox quote: PCR 10 with the IMA list
        // read right after the quote, and PCRs 0-9 whose digest its boot_aggregate is.
        // A service whose inventory requires IMA refuses a release without them.
        let ima = crate::host_ima::present();
        let mut pcrs = vec![pcr];
        if ima {
            pcrs.extend(0..=crate::host_ima::IMA_PCR);
        }
        let (quote, records, cert, ima_log) = self.tpm.call(move |t| {
            let q = t.quote(&q_data, &pcrs)?;
            let ima_log = if ima {
                crate::host_ima::list_for_evidence()
            } else {
                None
            };
            let records = crate::lock(&log).records_for(&[pcr]);
            let cert = t.certify_binding_key(&key, &n)?;
            Ok((q, records, cert, ima_log))
        })?;
        let mut evidence = crate::evidence::build(self.tpm.identity(), &qualifying, quote, records);
        evidence.ima_log = ima_log;
        let req = Request::Release {
            nonce: nonce_hex,
            host_id: self.tpm.identity().host_id.clone(),
            key_use: Box::new(key_use.clone()),
            evidence: serde_json::to_value(&evidence).map_err(|e| ReleaseError::Service {
                socket: kms.display().to_string(),
                reason: e.to_string(),
            })?,
            binding_public: b64.encode(&cert.public_tpm2b),
            binding_certify_attest: b64.encode(&cert.attest),
            binding_certify_signature: b64.encode(&cert.signature),
            image_header: b64.encode(header_bytes),
        };
        let wrapped = match exchange(kms, &req)? {
            Response::Released { wrapped_key } => {
                b64.decode(wrapped_key).map_err(|e| ReleaseError::Service {
                    socket: kms.display().to_string(),
                    reason: format!("wrapped key: {e}"),
                })?
            }
            Response::Refused { check, reason } => {
                return Err(ReleaseError::Refused { check, reason })
            }
            other => {
                return Err(ReleaseError::Service {
                    socket: kms.display().to_string(),
                    reason: format!("unexpected answer {other:?}"),
                })
            }
        };
        let key = self.binding_key.clone();
        let raw = self.tpm.call(move |t| t.binding_unwrap(&key, &wrapped))?;
        let key = ImageKey::from_bytes(&raw).map_err(|e| ReleaseError::Image {
            path: "-".into(),
            reason: e.to_string(),
        })?;
        Ok((key, use_digest))
    }

    /// Obtain the key for the encrypted image at `path` and authenticate every chunk
    /// in memory (nothing is written). Returns the header.
    pub fn verify_image(&self, kms: &Path, path: &Path) -> Result<ImageHeader, ReleaseError> {
        let img_err = |reason: String| ReleaseError::Image {
            path: path.display().to_string(),
            reason,
        };
        let mut f = std::fs::File::open(path).map_err(|e| img_err(e.to_string()))?;
        let header = read_header(&mut f).map_err(|e| img_err(e.to_string()))?;
        // The key is released for verification only: it stays in this process.
        let (key, _) = self.obtain_key(kms, &header.encode(), &KeyUse::Verify)?;
        let mut r = std::io::BufReader::new(f);
        decrypt(&mut r, &header, &key, |_| Ok(())).map_err(|e| img_err(e.to_string()))?;
        Ok(header)
    }
}
