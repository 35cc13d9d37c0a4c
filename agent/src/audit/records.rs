//! What tvpd writes into the trail besides the log mechanics: the records of a
//! request (whatever carried it) and of events tvpd itself observes (VM state
//! changes, host events).

use tvp_audit::params::Params;
use tvp_audit::record::{Decision, RecordDraft, Stage};
use tvp_audit::Digest32;

/// What a request's records say about it: who asked, what, about which VM, and
/// what was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's pid, if known.
    pub pid: Option<i32>,
    /// Operation name.
    pub op: String,
    /// The VM, if any.
    pub vm: Option<String>,
    /// Digest of the canonical parameters.
    pub params_digest: Digest32,
    /// Allowed or denied.
    pub decision: Decision,
    /// Why.
    pub reason: String,
}

impl RequestRecord {
    /// The record of the decision (stage `decision`, before execution).
    pub fn decision_draft(&self) -> RecordDraft {
        self.draft(Stage::Decision, None, None, 0)
    }

    /// The record of the result: `status` and `outcome`, for the request whose
    /// decision record is `request` (0: a read-only request recorded once).
    pub fn result_draft(&self, status: u16, outcome: String, request: u64) -> RecordDraft {
        self.draft(Stage::Result, Some(status), Some(outcome), request)
    }

    fn draft(
        &self,
        stage: Stage,
        status: Option<u16>,
        result: Option<String>,
        request: u64,
    ) -> RecordDraft {
        RecordDraft {
            time_ms: super::now_ms(),
            uid: self.uid,
            pid: self.pid,
            vm: self.vm.clone(),
            op: self.op.clone(),
            params_digest: self.params_digest,
            stage,
            decision: self.decision,
            reason: self.reason.clone(),
            status,
            result,
            state_before: None,
            state_after: None,
            request,
        }
    }
}

/// Host events written into every live VM's trail, so each affected tenant sees them
/// in its extract as they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    /// A measured platform file changed while the VM was live: the trust its
    /// attestation established no longer holds (op `platform-revocation`).
    PlatformRevocation,
    /// A KVM VM tvpd did not create appeared on, or left, the host (op
    /// `out-of-context-vm`).
    OutOfContextVm,
    /// A chunk of the VM's encrypted disk failed authentication when the guest read
    /// it: the file was altered under the VM (op `disk-tamper`).
    DiskTamper,
}

impl HostEvent {
    /// The record's operation name.
    pub fn op(self) -> &'static str {
        match self {
            HostEvent::PlatformRevocation => "platform-revocation",
            HostEvent::OutOfContextVm => "out-of-context-vm",
            HostEvent::DiskTamper => "disk-tamper",
        }
    }
}

/// An event tvpd observed about `vm` (stage `event`: `before` → `after`, and why),
/// attributed to tvpd itself (its uid and pid).
pub fn event_draft(vm: &str, op: &str, before: &str, after: &str, reason: &str) -> RecordDraft {
    let mut p = Params::new();
    p.insert("from".into(), before.to_string());
    p.insert("to".into(), after.to_string());
    RecordDraft {
        time_ms: super::now_ms(),
        uid: nix::unistd::geteuid().as_raw(),
        pid: i32::try_from(std::process::id()).ok(),
        vm: Some(vm.to_string()),
        op: op.into(),
        params_digest: tvp_audit::params::digest(&p),
        stage: Stage::Event,
        decision: Decision::Allow,
        reason: reason.to_string(),
        status: None,
        result: None,
        state_before: Some(before.to_string()),
        state_after: Some(after.to_string()),
        request: 0,
    }
}
