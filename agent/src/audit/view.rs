//! What the audit endpoints serve: the whole log (admin), the AK-certified anchor,
//! and a tenant's extract.

use base64::Engine;
use serde::Serialize;
use tvp_audit::anchor::AnchorCertification;
use tvp_audit::extract::{self, Extract};
use tvp_audit::record::AuditRecord;

use super::gate::Audit;
use crate::api::error::ApiError;
use crate::tpm::nv::NvAnchor;

/// `GET /v1/audit?since=SEQ`.
#[derive(Debug, Serialize)]
pub struct AdminView {
    /// Records with `seq >= since`.
    pub records: Vec<AuditRecord>,
    /// Total number of records in the log.
    pub total: u64,
    /// Whether every record is in the TPM anchor.
    pub anchored: bool,
    /// The anchor's NV index.
    pub nv_index: u32,
}

impl Audit {
    /// The admin view.
    pub async fn admin_view(&self, since: u64) -> AdminView {
        let log = self.log().lock().await;
        let skip = since.saturating_sub(1) as usize;
        AdminView {
            records: log.records().iter().skip(skip).cloned().collect(),
            total: log.records().len() as u64,
            anchored: log.anchored(),
            nv_index: log.nv_index(),
        }
    }

    /// Certify the anchor with the AK for `nonce`, consistent with the log (the log
    /// is locked throughout, so no record slips in between).
    pub async fn certify(&self, nonce: Vec<u8>) -> Result<AnchorCertification, ApiError> {
        let log = self.log().lock().await;
        self.certify_locked(&log, nonce).await
    }

    async fn certify_locked(
        &self,
        log: &super::log::AuditLog,
        nonce: Vec<u8>,
    ) -> Result<AnchorCertification, ApiError> {
        if !log.anchored() {
            return Err(ApiError::audit_unavailable(
                "the last audit record is not yet in the TPM anchor; retry",
            ));
        }
        let index = log.nv_index();
        let n = nonce.clone();
        let (cert, value) = log
            .tpm()
            .call_async(move |t| t.nv_anchor_certify(index, &n))
            .await?;
        let NvAnchor::Value(value) = value else {
            return Err(ApiError::audit_unavailable(
                "the audit anchor has not been extended yet",
            ));
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(AnchorCertification {
            nv_index: index,
            records: log.records().len() as u64,
            head: hex::encode(log.head()),
            value: hex::encode(value),
            nonce: hex::encode(&nonce),
            attest: b64.encode(&cert.attest),
            signature: b64.encode(&cert.signature),
            ak_public_pem: log.tpm().identity().ak_public_pem.clone(),
        })
    }

    /// A tenant's extract of `vm` from `since`, certified if `nonce` is given. 404 if
    /// the VM has no tenant binding, live or retired (recently deleted).
    pub async fn extract(
        &self,
        vm: &str,
        since: u64,
        nonce: Option<Vec<u8>>,
    ) -> Result<Extract, ApiError> {
        let binding = self
            .extract_binding(vm)
            .ok_or_else(|| ApiError::not_found_vm(vm))?;
        let log = self.log().lock().await;
        let reported = |op: &str| binding.policy.reports(op);
        let mut x = extract::build(log.records(), vm, since, &reported);
        if let Some(n) = nonce {
            x.anchor = Some(self.certify_locked(&log, n).await?);
        }
        Ok(x)
    }
}
