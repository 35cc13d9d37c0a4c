//! The VMM's messages to its supervisor: its hello, its measurements, boot milestones,
//! and the guest's mailbox requests (tunnel measurement, quote, handover, boot
//! failure), each answered with `ack`, evidence, or the refusal its handler returned.

use std::os::unix::net::UnixStream;

use log::{info, warn};
use tvp_vmm_channel::{ExitReason, HostMessage, VmmMessage};

use super::attestation::Refused;
use super::Manager;
use crate::lock;
use crate::vm::boot::{Ending, Step};
use crate::vm::state::VmState;

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
                    self.measure_if_ready(id, w);
                }
            }
            VmmMessage::Milestone {
                code,
                micros_since_start,
                ..
            } => {
                log::debug!(vm = id, code = code, micros = micros_since_start; "boot milestone");
            }
            VmmMessage::TunnelEstablished {
                request_id,
                measurement,
            } => {
                let answer = self
                    .extend_tunnel(id, measurement)
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
                    self.end_lease(id);
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
                } else if self.boot_is(id, |b| b.is_live()) {
                    let why = format!("{reason:?} (exit code {exit_code}) {detail}");
                    self.end(id, Ending::Failed, why);
                }
                self.end_lease(id);
            }
        }
    }

    /// Lease held and measurements in: measure and start the firmware, or abort the
    /// VM. Nothing yet if either is missing.
    pub(super) fn measure_if_ready(&self, id: &str, w: &mut UnixStream) {
        if !self.boot_is(id, |b| b.ready_to_measure()) {
            let position = lock(&self.registry).lease.position(id);
            info!(vm = id, position = position.unwrap_or(0); "waiting for the PCR lease or the measurements");
            return;
        }
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
