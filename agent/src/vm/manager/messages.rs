//! The VMM's messages to its supervisor: its hello, its measurements, boot milestones,
//! and the guest's mailbox requests (tunnel measurement, quote, handover, boot
//! failure), each answered with `ack`, evidence, or the refusal its handler returned.
//! A message the supervisor found out of protocol ([`Violation`]) is refused here
//! instead: logged with the VM and the message kind, the VMM killed, and the VM ended
//! `failed` with reason `vmm-protocol-violation: ...` (its audited state change).

use std::os::unix::net::UnixStream;

use log::warn;
use tvp_vmm_channel::{ExitReason, HostMessage, VmmMessage};

use super::attestation::{refusal, Refused};
use super::record::MAX_DISK_TAMPER_RECORDS;
use super::supervise::Flow;
use super::Manager;
use crate::audit::HostEvent;
use crate::lock;
use crate::vm::boot::{kind, Ending, Step, Violation};
use crate::vm::process::VmmProcess;
use crate::vm::state::VmState;

/// Reason prefix of VMs ended because their VMM broke the channel protocol.
pub(super) const VMM_VIOLATION: &str = "vmm-protocol-violation";

impl Manager {
    /// Handle one VMM message. Mailbox requests are answered here, with `ack`,
    /// evidence or the refusal their handler returned.
    pub(super) fn on_message(&self, id: &str, msg: VmmMessage, w: &mut UnixStream) {
        match msg {
            VmmMessage::Hello {
                protocol_version, ..
            } => {
                if protocol_version != tvp_vmm_channel::PROTOCOL_VERSION {
                    let reason = format!("unsupported protocol {protocol_version}");
                    self.send(id, w, &HostMessage::Abort { reason });
                    self.end(id, Ending::Failed, "VMM protocol mismatch".into());
                }
            }
            VmmMessage::Measurement {
                event_type,
                digest,
                description,
                ..
            } => {
                let added = lock(&self.registry)
                    .vms
                    .get_mut(id)
                    .map(|vm| vm.add_measurement(event_type, digest, description));
                if let Some(Err(e)) = added {
                    warn!(vm = id, error = e.to_string(); "VMM measurement refused");
                }
            }
            VmmMessage::MeasurementsDone { pcr23, .. } => {
                if self
                    .advance(
                        id,
                        Step::Measured {
                            reported_pcr23: pcr23,
                        },
                    )
                    .is_ok()
                {
                    self.start_if_measured(id, w);
                }
            }
            VmmMessage::Milestone {
                code,
                micros_since_start,
                ..
            } => {
                log::debug!(vm = id, code = code, micros = micros_since_start; "boot milestone");
            }
            VmmMessage::DiskTamper { chunk } => {
                // The guest got an I/O error, never the chunk's plaintext.
                log::error!(vm = id, chunk = chunk; "disk-tamper: a chunk of the VM's encrypted disk failed authentication");
                // And its tenant learns of it from the VM's audit trail (bounded per
                // VMM; not under the manager's lock).
                let state = lock(&self.registry).vms.get_mut(id).and_then(|vm| {
                    let vmm = vm.run.vmm.as_mut()?;
                    vmm.disk_tampers = vmm.disk_tampers.saturating_add(1);
                    (vmm.disk_tampers <= MAX_DISK_TAMPER_RECORDS).then(|| vm.boot.label())
                });
                if let Some(state) = state {
                    let reason = format!("chunk {chunk} of the VM's encrypted disk failed authentication; the guest got an I/O error, never that chunk's plaintext");
                    self.record_host_event(id, HostEvent::DiskTamper, &state, &reason);
                }
            }
            VmmMessage::TunnelEstablished {
                request_id,
                measurement,
            } => {
                let answer = self
                    .record_tunnel(id, measurement)
                    .map(|()| HostMessage::Ack { request_id });
                self.answer(id, w, request_id, answer);
            }
            VmmMessage::QuoteRequest { request_id, nonce } => {
                let answer = self.quote(id, nonce).map(|evidence| HostMessage::Evidence {
                    request_id,
                    evidence,
                });
                self.answer(id, w, request_id, answer);
            }
            VmmMessage::Handover { request_id, digest } => {
                let answer = self.hand_over(id, digest);
                let handed_over = answer.is_ok();
                let answer = answer.map(|()| HostMessage::Ack { request_id });
                self.answer(id, w, request_id, answer);
                if handed_over {
                    // From now on the VMM waits for a restarted tvpd instead of
                    // stopping when its channel closes (docs/vm-lifecycle.md).
                    self.send(id, w, &HostMessage::Running);
                }
            }
            VmmMessage::BootFailed { request_id, reason } => {
                self.send(id, w, &HostMessage::Ack { request_id });
                let reason = format!("boot-failed: firmware reason {reason}");
                self.end(id, Ending::Failed, reason);
            }
            VmmMessage::Exited {
                reason,
                exit_code,
                detail,
            } => {
                if self.boot_is(id, |b| b.state() == VmState::Running)
                    && reason == ExitReason::PoweredOff
                {
                    self.end(id, Ending::Destroyed, "powered-off".into());
                } else if self.boot_is(id, |b| b.state() == VmState::Running)
                    && reason == ExitReason::Reset
                {
                    // A guest reboot never re-runs the workload: the VM ends here and a
                    // new boot is a new VM, measured and attested afresh.
                    self.end(id, Ending::Destroyed, "reboot-requested".into());
                } else if self.boot_is(id, |b| b.is_live()) {
                    let why = format!("{reason:?} (exit code {exit_code}) {detail}");
                    self.end(id, Ending::Failed, why);
                }
                self.leave_lease(id);
            }
            // Refused by the vetting (`Violation::AdoptedOutsideHandshake`).
            VmmMessage::Adopted { .. } => {}
        }
    }

    /// Refuse `msg`, which breaks the channel protocol as `v` says: a mailbox request
    /// is answered with its refusal (unless the VMM had reported its end: then nothing
    /// is answered), the VMM is killed at once, and a live VM ends `failed` with the
    /// violation as its reason. Nothing of the message reaches the TPM.
    pub(super) fn refuse_message(
        &self,
        id: &str,
        msg: &VmmMessage,
        v: &Violation,
        w: &mut UnixStream,
        child: &mut VmmProcess,
    ) -> Flow {
        let what = kind(msg);
        let reason = v.to_string();
        if v.after_end() {
            warn!(vm = id, message = what, reason = reason.as_str(); "VMM message after its reported end ignored; killing the VMM");
        } else {
            warn!(vm = id, message = what, reason = reason.as_str(); "VMM message refused: out of protocol; destroying the VM");
            if let Some(request_id) = request_id(msg) {
                let code = refusal::OUT_OF_ORDER;
                let refused = HostMessage::Refused {
                    request_id,
                    code,
                    message: reason.clone(),
                };
                self.send(id, w, &refused);
            }
        }
        let flow = self.kill_vmm(id, child);
        self.end(id, Ending::Failed, format!("{}: {reason}", VMM_VIOLATION));
        flow
    }

    /// Measurements in: check them and start the firmware, or abort the VM.
    fn start_if_measured(&self, id: &str, w: &mut UnixStream) {
        match self.measure_boot(id) {
            Ok(()) => self.send(id, w, &HostMessage::Start),
            Err(reason) => {
                warn!(vm = id, reason = reason.as_str(); "measurement refused");
                let abort = HostMessage::Abort {
                    reason: reason.clone(),
                };
                self.send(id, w, &abort);
                self.end(id, Ending::Failed, reason);
            }
        }
    }

    /// Answer mailbox request `request_id` with `answer`, or with its refusal.
    fn answer(
        &self,
        id: &str,
        w: &mut UnixStream,
        request_id: u64,
        answer: Result<HostMessage, Refused>,
    ) {
        let msg = answer.unwrap_or_else(|r| HostMessage::Refused {
            request_id,
            code: r.code,
            message: r.message,
        });
        self.send(id, w, &msg);
    }
}

/// The request id of a mailbox request (the ones answered with `ack`, evidence or a
/// refusal).
fn request_id(msg: &VmmMessage) -> Option<u64> {
    match msg {
        VmmMessage::TunnelEstablished { request_id, .. }
        | VmmMessage::QuoteRequest { request_id, .. }
        | VmmMessage::Handover { request_id, .. }
        | VmmMessage::BootFailed { request_id, .. } => Some(*request_id),
        _ => None,
    }
}
