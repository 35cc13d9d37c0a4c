//! A quote for a VM's firmware under the PCR lease (`vm/lease.rs`). The lease covers
//! only the TPM steps, all in ONE job on tvpd's TPM thread, so no other TPM command
//! (another VM's quote, an API quote, an audit anchor) runs between them: reset PCRs
//! 16 and 23, extend PCR 23 from the VM's recorded measurements, read it back and
//! require the value checked when the VM was measured, extend the tunnel measurement
//! into PCR 16, quote, reset PCRs 16 and 23. Then the lease passes to the next VM in
//! line. A second quote in the same boot takes the lease again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use tvp_verifier::CelRecord;

use super::attestation::{refusal, Refused, PCR_TUNNEL, PCR_VM};
use super::Manager;
use crate::lock;
use crate::tpm::error::TpmError;
use crate::tpm::quote::QuoteResult;
use crate::tpm::Tpm;
use crate::vm::boot::{Ending, Step};
use crate::vm::state::LeaseView;

/// Longest wait for the lease before a quote is refused ([`refusal::LEASE_WAIT`]);
/// each holder keeps it for a few TPM commands, so this is hundreds of VMs deep.
pub const LEASE_WAIT: Duration = Duration::from_secs(30);
/// Most leases kept per boot in the VM's view (a VM may quote again and again).
const MAX_LEASES_KEPT: usize = 16;

/// What one boot's quote extends under the lease.
struct Extends {
    /// Its PCR 23 records' digests, in order.
    pcr23: Vec<[u8; 32]>,
    /// PCR 23 as checked when the VM was measured.
    expected: [u8; 32],
    /// Its tunnel measurement.
    tunnel: [u8; 32],
}

/// What the TPM steps under the lease gave.
enum Steps {
    /// The quote.
    Quoted(QuoteResult),
    /// PCR 23 read back another value than the one checked at measuring.
    Mismatch(Option<[u8; 32]>),
}

/// The lease's TPM steps, then the reset of both PCRs whatever happened (its own
/// result), and the platform PCR's records as they were at the quote.
fn leased_steps(
    t: &mut Tpm,
    x: &Extends,
    nonce: &[u8],
    pcrs: &[u32],
) -> (Result<Steps, TpmError>, Result<(), TpmError>) {
    let steps = (|| {
        t.pcr_reset(PCR_TUNNEL)?;
        t.pcr_reset(PCR_VM)?;
        for d in &x.pcr23 {
            t.pcr_extend(PCR_VM, d)?;
        }
        let now = t.pcr_read(&[PCR_VM])?.get(&PCR_VM).copied();
        if now != Some(x.expected) {
            return Ok(Steps::Mismatch(now));
        }
        t.pcr_extend(PCR_TUNNEL, &x.tunnel)?;
        Ok(Steps::Quoted(t.quote(nonce, pcrs)?))
    })();
    let reset = t.pcr_reset(PCR_TUNNEL).and_then(|()| t.pcr_reset(PCR_VM));
    (steps, reset)
}

impl Manager {
    /// Evidence for VM `id`'s firmware: a quote over the platform PCR, 16 and 23 (and
    /// 0-10 with the IMA list on a host with IMA) with `nonce`, taken under the lease,
    /// with the platform's records and this boot's. Delivering it starts the
    /// workload's delivery.
    pub(super) fn quote(&self, id: &str, nonce: Vec<u8>) -> Result<Vec<u8>, Refused> {
        crate::tpm::quote::check_nonce(&nonce)
            .map_err(|e| Refused::new(refusal::TPM_FAILED, format!("TPM: {e}")))?;
        let (log, extends) = self.extends(id)?;
        let mut pcrs = vec![self.cfg.platform_pcr, PCR_TUNNEL, PCR_VM];
        // The host's runtime integrity: PCR 10 and the IMA list read after the quote,
        // and PCRs 0-9, whose digest the list's boot_aggregate must be (a verifier
        // pinning them pins the kernel that keeps the list).
        let ima = crate::host_ima::present();
        if ima {
            pcrs.extend(0..=crate::host_ima::IMA_PCR);
        }
        let host_log = self.host_log.clone();
        let platform = self.cfg.platform_pcr;
        let n = nonce.clone();
        let (granted_at, granted) = self.take_lease(id)?;
        let done = self.tpm.call(move |t| {
            let (steps, reset) = leased_steps(t, &extends, &n, &pcrs);
            // Records and extends of the platform PCR happen in TPM jobs too: these
            // are the ones the quote covers.
            let records = lock(&host_log).records_for(&[platform]);
            Ok((steps, reset, records))
        });
        let held = granted.elapsed();
        self.release_lease(id, granted_at, held);
        let (steps, reset, mut records) =
            done.map_err(|e| Refused::new(refusal::TPM_FAILED, format!("TPM: {e}")))?;
        if let Err(e) = reset {
            // The next holder resets again before it extends.
            warn!(vm = id, error = e.to_string(); "cannot reset the leased PCRs");
        }
        let quote = match steps {
            Ok(Steps::Quoted(q)) => q,
            Ok(Steps::Mismatch(now)) => {
                let reason = format!(
                    "measurement mismatch: PCR 23 {} under the lease, expected {}",
                    now.map(hex::encode).unwrap_or_default(),
                    hex::encode(self.expected_pcr23(id).unwrap_or_default())
                );
                warn!(vm = id, reason = reason.as_str(); "quote refused");
                self.end(id, Ending::Failed, reason.clone());
                return Err(Refused::new(refusal::MEASUREMENT_MISMATCH, reason));
            }
            Err(e) => return Err(Refused::new(refusal::TPM_FAILED, format!("TPM: {e}"))),
        };
        let ima_log = if ima {
            crate::host_ima::list_for_evidence()
        } else {
            None
        };
        records.extend(log);
        for (i, r) in records.iter_mut().enumerate() {
            r.recnum = i as u64;
        }
        let mut ev = crate::evidence::build(self.tpm.identity(), &nonce, quote, records);
        ev.ima_log = ima_log;
        let evidence = serde_json::to_vec(&ev)
            .map_err(|e| Refused::new(refusal::TPM_FAILED, e.to_string()))?;
        info!(vm = id, bytes = evidence.len(), lease_us = held.as_micros() as u64; "quote for the lease holder");
        self.advance(id, Step::EvidenceDelivered)
            .map_err(|e| Refused::new(refusal::OUT_OF_ORDER, e.to_string()))?;
        Ok(evidence)
    }

    /// This boot's records and what its quote extends: only once its tunnel
    /// measurement is recorded (the conversation refuses a quote before).
    fn extends(&self, id: &str) -> Result<(Vec<CelRecord>, Extends), Refused> {
        let reg = lock(&self.registry);
        let out_of_order = |why: &str| Refused::new(refusal::OUT_OF_ORDER, why);
        let vm = reg
            .vms
            .get(id)
            .filter(|vm| vm.boot.tunnel_measured())
            .ok_or_else(|| out_of_order("the tunnel measurement is not recorded"))?;
        let log = vm.boot.lease_log().to_vec();
        let expected = vm
            .run
            .pcr23
            .ok_or_else(|| out_of_order("the VM was not measured"))?;
        let pcr23 = log
            .iter()
            .filter(|r| r.pcr == PCR_VM)
            .map(|r| {
                r.sha256()
                    .ok_or_else(|| out_of_order("a record without a digest"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tunnel = log
            .iter()
            .rfind(|r| r.pcr == PCR_TUNNEL)
            .and_then(|r| r.sha256())
            .ok_or_else(|| out_of_order("the tunnel measurement is not recorded"))?;
        Ok((
            log,
            Extends {
                pcr23,
                expected,
                tunnel,
            },
        ))
    }

    fn expected_pcr23(&self, id: &str) -> Option<[u8; 32]> {
        lock(&self.registry).vms.get(id)?.run.pcr23
    }

    /// Wait in line for the lease (FIFO) and take it; refused if the VM stops
    /// attesting meanwhile or after [`LEASE_WAIT`]. Returns when it was granted.
    fn take_lease(&self, id: &str) -> Result<(SystemTime, Instant), Refused> {
        let deadline = Instant::now() + LEASE_WAIT;
        let mut reg = lock(&self.registry);
        loop {
            if !reg.vms.get(id).is_some_and(|vm| vm.boot.tunnel_measured()) {
                reg.lease.leave(id);
                self.lease_passed.notify_all();
                return Err(Refused::new(
                    refusal::OUT_OF_ORDER,
                    "the VM stopped attesting while waiting for the PCR lease",
                ));
            }
            if reg.lease.request(id) {
                return Ok((SystemTime::now(), Instant::now()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                reg.lease.leave(id);
                self.lease_passed.notify_all();
                warn!(vm = id, wait_secs = LEASE_WAIT.as_secs(); "PCR lease not granted in time");
                return Err(Refused::new(
                    refusal::LEASE_WAIT,
                    format!(
                        "the PCR lease was not granted within {} s",
                        LEASE_WAIT.as_secs()
                    ),
                ));
            }
            reg = match self.lease_passed.wait_timeout(reg, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// The holder's TPM steps are over (PCRs reset): the lease passes to the next in
    /// line; the hold is kept in the VM's view.
    fn release_lease(&self, id: &str, granted_at: SystemTime, held: Duration) {
        let mut reg = lock(&self.registry);
        reg.lease.release(id);
        if let Some(vm) = reg.vms.get_mut(id) {
            if vm.run.leases.len() < MAX_LEASES_KEPT {
                vm.run.leases.push(LeaseView {
                    granted_unix_us: granted_at
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_micros() as u64)
                        .unwrap_or(0),
                    held_us: held.as_micros() as u64,
                });
            }
        }
        drop(reg);
        self.lease_passed.notify_all();
        info!(vm = id, held_us = held.as_micros() as u64; "PCR lease released; PCRs 16 and 23 reset");
    }
}
