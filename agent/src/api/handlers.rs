//! The single place where API requests are executed: one `match` over [`ApiRequest`].

use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Serialize;

use super::error::ApiError;
use super::request::ApiRequest;
use super::types::{ActivateCredentialResponse, BindingKeyResponse, HostInfo, VerifyImageResponse};
use crate::host_log::HostEventLog;
use crate::platform_watch::PlatformState;
use crate::tpm::binding::BindingKey;
use crate::tpm::service::TpmClient;
use crate::unmanaged_vms::Census;
use crate::{evidence, lock};

/// What the handlers share.
pub struct AppState {
    /// The TPM thread.
    pub tpm: TpmClient,
    /// The host event log. Locked only inside TPM-thread jobs (so a quote and the log
    /// it carries are consistent) and briefly by readers.
    pub host_log: Arc<Mutex<HostEventLog>>,
    /// The platform PCR.
    pub platform_pcr: u32,
    /// The audit trail and authorization gate.
    pub audit: Arc<crate::audit::Audit>,
    /// KVM VMs on this host that tvpd did not create.
    pub unmanaged: Arc<Mutex<Census>>,
    /// Changes to measured platform files since start.
    pub platform: Arc<Mutex<PlatformState>>,
    /// The host binding key, bound to the platform PCR as measured at this start.
    pub binding_key: BindingKey,
    /// Measured VMs.
    pub vms: Arc<crate::vm::Manager>,
}

/// A successful reply: status and JSON body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
}

fn ok<T: Serialize>(v: &T) -> Result<Reply, ApiError> {
    serde_json::to_vec_pretty(v)
        .map(|body| Reply { status: 200, body })
        .map_err(|e| ApiError::internal(format!("cannot encode response: {e}")))
}

/// The host identity as the API reports it.
pub fn host_info(state: &AppState) -> HostInfo {
    let id = state.tpm.identity();
    let b64 = base64::engine::general_purpose::STANDARD;
    let platform_changes = lock(&state.platform).changes();
    HostInfo {
        host_id: id.host_id.clone(),
        ek_public_pem: id.ek_public_pem.clone(),
        ek_certificate_pem: id
            .ek_certificate_der
            .as_ref()
            .map(|der| pem("CERTIFICATE", der)),
        ak_public_pem: id.ak_public_pem.clone(),
        ak_public: b64.encode(&id.ak_public_tpm2b),
        ak_name: hex::encode(&id.ak_name),
        ek_name: hex::encode(&id.ek_name),
        pcr_bank: "sha256".into(),
        platform_pcr: state.platform_pcr,
        platform_intact: platform_changes.is_empty(),
        platform_changes,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// PEM-encode DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// Run an authorized restricted VM operation off the async runtime.
async fn vm_operation(
    state: &AppState,
    id: crate::vm::VmId,
    op: crate::vm::Op,
) -> Result<Reply, ApiError> {
    let vms = state.vms.clone();
    let view = tokio::task::spawn_blocking(move || vms.operate(id.as_str(), op))
        .await
        .map_err(|e| ApiError::internal(format!("{} task: {e}", op.name())))??;
    ok(&view)
}

/// Execute one request. Only the audit gate ([`super::gate::run`]) calls this, after
/// the request's decision allowed it.
pub async fn execute(state: &AppState, req: ApiRequest) -> Result<Reply, ApiError> {
    match req {
        ApiRequest::CreateVm(spec) => {
            let vms = state.vms.clone();
            let view = tokio::task::spawn_blocking(move || vms.create(*spec))
                .await
                .map_err(|e| ApiError::internal(format!("create task: {e}")))??;
            let mut reply = ok(&view)?;
            reply.status = 201;
            Ok(reply)
        }
        ApiRequest::ListVms => ok(&state.vms.list()),
        ApiRequest::GetVm { id } => ok(&state.vms.get(id.as_str())?),
        ApiRequest::GetVtpmIdentity { id, nonce } => {
            let identity = state.vms.vtpm_identity(id.as_str())?;
            let cert = state
                .tpm
                .call_async(move |t| t.vtpm_ca_certify(&nonce))
                .await?;
            ok(&tvp_verifier::vtpm::VtpmIdentity {
                version: tvp_verifier::vtpm::VTPM_IDENTITY_VERSION,
                host_id: state.tpm.identity().host_id.clone(),
                vm_id: id.as_str().to_string(),
                ca_public: cert.public,
                ca_certify: tvp_verifier::evidence::QuoteBlobs {
                    attest: cert.attest,
                    signature: cert.signature,
                },
                ca_certificate_pem: identity.ca_certificate_pem,
                ek_certificate_pem: identity.ek_certificate_pem,
                ak_certificate_pem: identity.ak_certificate_pem,
            })
        }
        ApiRequest::DeleteVm { id } => vm_operation(state, id, crate::vm::Op::Delete).await,
        ApiRequest::VmOperation {
            id,
            op: crate::vm::Op::RotateKey,
            params,
        } => {
            let key = super::types::rotation_key(&params).map_err(ApiError::invalid_argument)?;
            let vms = state.vms.clone();
            let view =
                tokio::task::spawn_blocking(move || vms.set_management_key(id.as_str(), Some(key)))
                    .await
                    .map_err(|e| ApiError::internal(format!("rotate-key task: {e}")))??;
            ok(&view)
        }
        ApiRequest::VmOperation { id, op, .. } => vm_operation(state, id, op).await,
        ApiRequest::GetHost => ok(&host_info(state)),
        ApiRequest::GetUnmanagedVms => ok(&lock(&state.unmanaged).current()),
        ApiRequest::VerifyImage { image, kms_socket } => {
            crate::vm::spec::check_kms_socket(
                "kms_socket",
                &kms_socket,
                state.vms.kms_socket_dir(),
            )
            .map_err(ApiError::invalid_argument)?;
            let image = crate::vm::image::resolve(
                crate::vm::image::IMAGE,
                state.vms.image_dir(),
                &image.to_string_lossy(),
            )
            .map_err(crate::vm::VmError::from)?;
            let releaser = crate::image_release::Releaser {
                tpm: state.tpm.clone(),
                binding_key: state.binding_key.clone(),
                host_log: state.host_log.clone(),
                platform_pcr: state.platform_pcr,
            };
            let header =
                tokio::task::spawn_blocking(move || releaser.verify_image(&kms_socket, &image))
                    .await
                    .map_err(|e| ApiError::internal(format!("image verification task: {e}")))??;
            ok(&VerifyImageResponse {
                key_released: true,
                image_verified: true,
                plaintext_len: header.plaintext_len,
                chunk_count: header.chunk_count,
                image_digest: hex::encode(header.image_digest),
            })
        }
        ApiRequest::CertifyBindingKey { nonce } => {
            let key = state.binding_key.clone();
            let pcrs = key.pcrs.clone();
            let public_pem = crate::tpm::keys::public_to_pem(&key.public)?;
            let cert = state
                .tpm
                .call_async(move |t| t.certify_binding_key(&key, &nonce))
                .await?;
            let b64 = base64::engine::general_purpose::STANDARD;
            ok(&BindingKeyResponse {
                public: b64.encode(cert.public_tpm2b),
                public_pem,
                policy_pcrs: pcrs,
                certify_attest: b64.encode(cert.attest),
                certify_signature: b64.encode(cert.signature),
            })
        }
        ApiRequest::GetEventLog => {
            let records = lock(&state.host_log).records().to_vec();
            ok(&records)
        }
        ApiRequest::Quote { nonce, pcrs } => {
            let pcrs = pcrs.unwrap_or_else(|| vec![state.platform_pcr]);
            let log = state.host_log.clone();
            let n = nonce.clone();
            // PCR 10 asked for on a host with IMA: the list, read after the quote.
            let ima = pcrs.contains(&crate::host_ima::IMA_PCR) && crate::host_ima::present();
            let queued = std::time::Instant::now();
            let (quote, records, ima_log, waited, quoting) = state
                .tpm
                .call_async(move |t| {
                    let waited = queued.elapsed();
                    let q = t.quote(&n, &pcrs)?;
                    let quoting = queued.elapsed() - waited;
                    let ima_log = ima.then(crate::host_ima::list_for_evidence).flatten();
                    let quoted: Vec<u32> = q.pcrs.keys().copied().collect();
                    let records = lock(&log).records_for(&quoted);
                    Ok((q, records, ima_log, waited, quoting))
                })
                .await?;
            let built = std::time::Instant::now();
            let mut ev = evidence::build(state.tpm.identity(), &nonce, quote, records);
            ev.ima_log = ima_log;
            let reply = ok(&ev);
            ::log::debug!(tpm_wait_us = waited.as_micros() as u64, tpm_quote_us = quoting.as_micros() as u64, evidence_us = built.elapsed().as_micros() as u64; "quote timing");
            reply
        }
        ApiRequest::ActivateCredential {
            credential_blob,
            secret,
        } => {
            let credential = state
                .tpm
                .call_async(move |t| t.activate_credential(&credential_blob, &secret))
                .await?;
            ok(&ActivateCredentialResponse {
                credential: base64::engine::general_purpose::STANDARD.encode(credential),
            })
        }
        ApiRequest::GetAudit { since } => ok(&state.audit.admin_view(since).await),
        ApiRequest::CertifyAuditAnchor { nonce } => ok(&state.audit.certify(nonce).await?),
        ApiRequest::GetVmAudit { vm, since, nonce } => {
            ok(&state.audit.extract(vm.as_str(), since, nonce).await?)
        }
    }
}
