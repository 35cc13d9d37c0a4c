//! Views of the trail: the whole log (admin), the AK-certified anchor, and a
//! tenant's extract (what the API's audit endpoints serve).

use base64::Engine;
use serde::Serialize;
use tvp_audit::anchor::AnchorCertification;
use tvp_audit::extract::{self, Extract};
use tvp_audit::record::{AuditRecord, Stage};

use super::trail::Audit;
use crate::tpm::nv::NvAnchor;
use crate::tpm::TpmError;

/// Why a view cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// No tenant binding, live or retired, for the VM.
    #[error("no VM '{0}' on this host")]
    UnknownVm(String),
    /// The last record is written but not yet extended into the anchor.
    #[error("the last audit record is not yet in the TPM anchor; retry")]
    NotAnchored,
    /// The anchor index holds no value yet.
    #[error("the audit anchor has not been extended yet")]
    AnchorUnwritten,
    /// The certification failed in the TPM.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// Events observed earlier cannot be written yet; a view now would leave them out.
    #[error(transparent)]
    EventsPending(super::log::AuditError),
}

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
    pub async fn certify(&self, nonce: Vec<u8>) -> Result<AnchorCertification, ViewError> {
        let mut log = self.log().lock().await;
        self.flush_events(&mut log)
            .await
            .map_err(ViewError::EventsPending)?;
        self.certify_locked(&log, nonce).await
    }

    async fn certify_locked(
        &self,
        log: &super::log::AuditLog,
        nonce: Vec<u8>,
    ) -> Result<AnchorCertification, ViewError> {
        if !log.anchored() {
            return Err(ViewError::NotAnchored);
        }
        let index = log.nv_index();
        let n = nonce.clone();
        let (cert, value) = log
            .tpm()
            .call_async(move |t| t.nv_anchor_certify(index, &n))
            .await?;
        let NvAnchor::Value(value) = value else {
            return Err(ViewError::AnchorUnwritten);
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

    /// A tenant's extract of `vm` from `since` (never before the current VM with this
    /// id was created; a `since` beyond the end gives an empty extract at the end of
    /// the log, which verifies only against a checkpoint there), certified if `nonce`
    /// is given. The VM's `create-vm` records are always in full: a tenant verifies
    /// from them or from its checkpoint (`docs/audit.md` §4); so are the records
    /// stating lost events (`audit-events-lost`). Events still waiting are written
    /// first ([`ViewError::EventsPending`] if they cannot be).
    /// [`ViewError::UnknownVm`] if the VM has no tenant binding, live or retired
    /// (recently deleted).
    pub async fn extract(
        &self,
        vm: &str,
        since: u64,
        nonce: Option<Vec<u8>>,
    ) -> Result<Extract, ViewError> {
        let binding = self
            .extract_binding(vm)
            .ok_or_else(|| ViewError::UnknownVm(vm.to_string()))?;
        let mut log = self.log().lock().await;
        // Events still waiting belong before anything this extract could certify.
        self.flush_events(&mut log)
            .await
            .map_err(ViewError::EventsPending)?;
        let reported = |op: &str| binding.policy.reports(op);
        let since = since.max(incarnation_start(log.records(), vm));
        let mut x = extract::build(log.records(), vm, since, &reported);
        if let Some(n) = nonce {
            x.anchor = Some(self.certify_locked(&log, n).await?);
        }
        Ok(x)
    }
}

/// Where the current VM with id `vm` begins in the log: the decision record of the
/// last `create-vm` request for that id that succeeded (201). An id used again after a
/// delete belongs to a new VM, possibly another tenant's: its extract must not show the
/// earlier VM's records. 1 if there is none (e.g. a log that starts later).
fn incarnation_start(records: &[AuditRecord], vm: &str) -> u64 {
    records
        .iter()
        .rev()
        .find(|r| {
            r.vm.as_deref() == Some(vm)
                && r.op == extract::CREATE_OP
                && r.stage == Stage::Result
                && r.status == Some(201)
        })
        .map_or(1, |r| r.request.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvp_audit::record::{Decision, RecordDraft};

    fn rec(
        seq: u64,
        vm: &str,
        op: &str,
        stage: Stage,
        status: Option<u16>,
        request: u64,
    ) -> AuditRecord {
        let mut r = AuditRecord::seal(
            RecordDraft {
                time_ms: seq,
                uid: 0,
                pid: None,
                vm: Some(vm.into()),
                op: op.into(),
                params_digest: [0; 32],
                stage,
                decision: Decision::Allow,
                reason: String::new(),
                status,
                result: None,
                state_before: None,
                state_after: None,
                request,
            },
            seq,
            &[0; 32],
        );
        r.request = request;
        r
    }

    #[test]
    fn an_extract_starts_at_the_last_successful_create_of_the_id() {
        let log = vec![
            rec(1, "a", "create-vm", Stage::Decision, None, 1),
            rec(2, "a", "create-vm", Stage::Result, Some(201), 1),
            rec(3, "a", "delete", Stage::Result, Some(200), 3),
            rec(4, "a", "create-vm", Stage::Decision, None, 4),
            rec(5, "a", "create-vm", Stage::Result, Some(201), 4),
            // A failed create of the live id (409) does not move the start.
            rec(6, "a", "create-vm", Stage::Decision, None, 6),
            rec(7, "a", "create-vm", Stage::Result, Some(409), 6),
            rec(8, "b", "create-vm", Stage::Result, Some(201), 8),
        ];
        assert_eq!(incarnation_start(&log, "a"), 4);
        assert_eq!(incarnation_start(&log, "b"), 8);
        assert_eq!(incarnation_start(&log, "c"), 1);
        assert_eq!(incarnation_start(&log[..3], "a"), 1);
    }
}
