//! The attestation steps of the VM holding the PCR lease (`vm/lease.rs`): its
//! measurements extended into PCR 23 and checked against the files, the management
//! event, the tunnel measurement into PCR 16, the evidence (quote plus event log), the
//! handover, and the end of the lease with PCRs 16 and 23 reset. Each mailbox request
//! answers `Ok` or the [`Refused`] the guest gets.

use log::{info, warn};
use tvp_verifier::{CelRecord, EventKind};

use super::Manager;
use crate::lock;
use crate::vm::boot::Step;
use crate::vm::management::ManagementView;
use crate::vm::state::MeasurementView;

/// PCR holding the leased VM's firmware and configuration.
pub const PCR_VM: u32 = 23;
/// PCR holding the leased VM's tunnel measurement.
pub const PCR_TUNNEL: u32 = 16;

/// Refusal codes sent to the guest (mailbox `detail`).
pub mod refusal {
    /// The VM does not hold the PCR lease.
    pub const NOT_LEASE_HOLDER: u32 = 1;
    /// The request is out of order for tvpd (e.g. a second tunnel measurement).
    pub const OUT_OF_ORDER: u32 = 2;
    /// The TPM failed.
    pub const TPM_FAILED: u32 = 3;
}

/// A mailbox request tvpd refused: what the guest is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    /// One of [`refusal`]'s codes.
    pub code: u32,
    /// Why, for the guest's log.
    pub message: String,
}

impl Refused {
    fn new(code: u32, message: impl Into<String>) -> Refused {
        Refused {
            code,
            message: message.into(),
        }
    }
}

/// What checking the measurements yields: PCR 23, this lease's records, and the
/// management event as the API shows it.
struct Measured {
    pcr23: [u8; 32],
    log: Vec<CelRecord>,
    management: Option<MeasurementView>,
}

fn record(pcr: u32, digest: [u8; 32], kind: EventKind, description: String) -> CelRecord {
    // Numbered when the evidence is assembled.
    CelRecord::tvp(0, pcr, digest, kind, description)
}

/// A VM whose image key was released for `bound` (`tvp_kms::ParsedUse::digest` of
/// its page, firmware digest and management binding) must be measured as exactly that
/// VM: the VMM's firmware event, the page and the management binding give the same
/// digest, or the firmware never starts (docs/kms.md, "VM binding").
fn check_bound(
    bound: [u8; 32],
    page: &[u8],
    views: &[MeasurementView],
    digests: &[[u8; 32]],
    management: Option<&ManagementView>,
) -> Result<(), String> {
    let firmware_event = tvp_abi::measure::EventType::FirmwareImage.name();
    let firmware = views
        .iter()
        .zip(digests)
        .find(|(v, _)| v.event_type == firmware_event)
        .map(|(_, d)| *d)
        .ok_or("vm-binding: the VMM reported no firmware measurement")?;
    let m = management.ok_or("vm-binding: the VM has no management binding")?;
    let measured = tvp_kms::KeyUse::vm(page, firmware, &m.public_key_pem, &m.policy)
        .and_then(|u| u.parse())
        .map_err(|e| format!("vm-binding: {e}"))?
        .digest();
    if measured != bound {
        return Err(format!(
            "vm-binding: the measured VM (firmware {}) is not the one its image key was released for",
            hex::encode(firmware)
        ));
    }
    Ok(())
}

impl Manager {
    /// `Ok` if VM `id` holds the lease; else the refusal (logged).
    pub(super) fn require_lease(&self, id: &str, what: &str) -> Result<(), Refused> {
        if lock(&self.registry).lease.holds(id) {
            return Ok(());
        }
        warn!(vm = id, request = what; "mailbox request refused: VM does not hold the PCR lease");
        Err(Refused::new(
            refusal::NOT_LEASE_HOLDER,
            "not the lease holder",
        ))
    }

    /// Lease held and measurements in: measure, and say whether the firmware may
    /// start (`Err` is why not; the caller aborts the VM).
    pub(super) fn measure_boot(&self, id: &str) -> Result<(), String> {
        // The boot's own lease flag says so too; the PCRs are reset below only for
        // the VM the lease queue names.
        if !lock(&self.registry).lease.holds(id) {
            return Err("measuring refused: the VM does not hold the PCR lease".into());
        }
        self.advance(id, Step::StartMeasuring)
            .map_err(|e| e.to_string())?;
        let m = self.measure(id)?;
        let pcr23 = m.pcr23;
        let management = m.management;
        self.advance_with(id, Step::FirmwareStarted { log: m.log }, |vm| {
            vm.run.pcr23 = Some(pcr23);
            vm.run.measurements.extend(management);
        })
        .map_err(|e| e.to_string())
    }

    /// Reset PCRs 16 and 23, extend the VMM's events and require PCR 23 to equal both
    /// the VMM's replay and the value computed from the firmware file and the page;
    /// then the management event.
    fn measure(&self, id: &str) -> Result<Measured, String> {
        let (digests, reported, page, views, management, bound) = {
            let reg = lock(&self.registry);
            let vm = reg.vms.get(id).ok_or("VM vanished")?;
            let vmm = vm.run.vmm.as_ref().ok_or("VMM gone")?;
            (
                vm.run.digests.clone(),
                vm.boot.reported_pcr23(),
                vmm.page.clone(),
                vm.run.measurements.clone(),
                vm.management.clone(),
                vmm.bound,
            )
        };
        if let Some(bound) = bound {
            check_bound(bound, &page, &views, &digests, management.as_ref())?;
        }
        let firmware = std::fs::read(&self.cfg.firmware)
            .map_err(|e| format!("cannot read firmware {}: {e}", self.cfg.firmware.display()))?;
        let expected = tvp_abi::measure::expected_pcr23(&firmware, &page)
            .map_err(|e| format!("cannot compute the expected PCR 23: {e}"))?;
        let d = digests.clone();
        let pcr23 = self
            .tpm
            .call(move |t| {
                t.pcr_reset(PCR_TUNNEL)?;
                t.pcr_reset(PCR_VM)?;
                for digest in &d {
                    t.pcr_extend(PCR_VM, digest)?;
                }
                Ok(t.pcr_read(&[PCR_VM])?.get(&PCR_VM).copied())
            })
            .map_err(|e| format!("TPM: {e}"))?
            .ok_or("PCR 23 not returned")?;
        if Some(pcr23) != reported || pcr23 != expected {
            return Err(format!(
                "measurement mismatch: PCR 23 {} reported {} expected {}",
                hex::encode(pcr23),
                reported.map(hex::encode).unwrap_or_default(),
                hex::encode(expected)
            ));
        }
        let mut log: Vec<CelRecord> = views
            .iter()
            .zip(&digests)
            .map(|(m, d)| {
                record(
                    PCR_VM,
                    *d,
                    EventKind::VmMeasurement,
                    format!("{id}: {} {}", m.event_type, m.description),
                )
            })
            .collect();
        let Some(m) = management else {
            let pcr23 = self.read_pcr23()?;
            return Ok(Measured {
                pcr23,
                log,
                management: None,
            });
        };
        let (pcr23, description, digest) = self.measure_management(&m, &firmware, &page)?;
        log.push(record(
            PCR_VM,
            digest,
            EventKind::VmMeasurement,
            format!("{id}: {} {description}", tvp_abi::measure::MANAGEMENT_EVENT),
        ));
        Ok(Measured {
            pcr23,
            log,
            management: Some(MeasurementView {
                event_type: tvp_abi::measure::MANAGEMENT_EVENT.into(),
                digest: hex::encode(digest),
                description,
            }),
        })
    }

    fn read_pcr23(&self) -> Result<[u8; 32], String> {
        self.tpm
            .call(|t| Ok(t.pcr_read(&[PCR_VM])?.get(&PCR_VM).copied()))
            .map_err(|e| format!("TPM: {e}"))?
            .ok_or_else(|| "PCR 23 not returned".to_string())
    }

    /// After the VMM's events: extend the VM's management binding into PCR 23 and
    /// check the result against the value computed from firmware, page and binding.
    /// Returns PCR 23 and the event's description and digest.
    fn measure_management(
        &self,
        m: &ManagementView,
        firmware: &[u8],
        page: &[u8],
    ) -> Result<([u8; 32], String, [u8; 32]), String> {
        let digest = m.digest_bytes()?;
        let expected = tvp_abi::measure::expected_pcr23_managed(firmware, page, &digest)
            .map_err(|e| format!("cannot compute the expected PCR 23: {e}"))?;
        let pcr23 = self
            .tpm
            .call(move |t| {
                t.pcr_extend(PCR_VM, &digest)?;
                Ok(t.pcr_read(&[PCR_VM])?.get(&PCR_VM).copied())
            })
            .map_err(|e| format!("TPM: {e}"))?
            .ok_or("PCR 23 not returned")?;
        if pcr23 != expected {
            return Err(format!(
                "measurement mismatch: PCR 23 {} after the management event, expected {}",
                hex::encode(pcr23),
                hex::encode(expected)
            ));
        }
        let description = format!(
            "key {} policy allows [{}] on_tampering {}",
            m.key_id,
            m.policy.allowed_operations.join(","),
            m.policy.on_tampering.as_str()
        );
        Ok((pcr23, description, digest))
    }

    /// The firmware's tunnel measurement: extended into PCR 16, once, by the lease
    /// holder whose firmware waits for it.
    pub(super) fn extend_tunnel(&self, id: &str, measurement: [u8; 32]) -> Result<(), Refused> {
        self.require_lease(id, "tunnel measurement")?;
        let (awaits, started) = {
            let reg = lock(&self.registry);
            let boot = reg.vms.get(id).map(|vm| &vm.boot);
            (
                boot.is_some_and(|b| b.awaits_tunnel()),
                boot.is_some_and(|b| b.firmware_started()),
            )
        };
        if !awaits {
            let why = if started {
                "tunnel already measured"
            } else {
                "the firmware has not been started"
            };
            return Err(Refused::new(refusal::OUT_OF_ORDER, why));
        }
        self.tpm
            .call(move |t| t.pcr_extend(PCR_TUNNEL, &measurement))
            .map_err(|e| Refused::new(refusal::TPM_FAILED, e.to_string()))?;
        let record = record(
            PCR_TUNNEL,
            measurement,
            EventKind::TunnelMeasurement,
            format!("{id}: TLS exporter EXPORTER-tvp-tunnel-measurement"),
        );
        self.advance(id, Step::TunnelMeasured { record })
            .map_err(|e| Refused::new(refusal::OUT_OF_ORDER, e.to_string()))?;
        info!(vm = id; "tunnel measurement extended into PCR 16");
        Ok(())
    }

    /// Evidence for the lease holder's firmware: a quote over the platform PCR, 16
    /// and 23 (and 0-10 with the IMA list on a host with IMA) with `nonce`, with the
    /// platform's records and this lease's. Once the
    /// tunnel is measured, delivering it starts the workload's delivery.
    pub(super) fn quote(&self, id: &str, nonce: Vec<u8>) -> Result<Vec<u8>, Refused> {
        self.require_lease(id, "quote")?;
        let lease_log = {
            let reg = lock(&self.registry);
            match reg.vms.get(id) {
                Some(vm) if vm.boot.firmware_started() => vm.boot.lease_log().to_vec(),
                _ => {
                    return Err(Refused::new(
                        refusal::OUT_OF_ORDER,
                        "the firmware has not been started",
                    ))
                }
            }
        };
        let mut pcrs = vec![self.cfg.platform_pcr, PCR_TUNNEL, PCR_VM];
        // The host's runtime integrity: PCR 10 and the IMA list read after the quote,
        // and PCRs 0-9, whose digest the list's boot_aggregate must be (a verifier
        // pinning them pins the kernel that keeps the list).
        let ima = crate::host_ima::present();
        if ima {
            pcrs.extend(0..=crate::host_ima::IMA_PCR);
        }
        let log = self.host_log.clone();
        let platform = self.cfg.platform_pcr;
        let n = nonce.clone();
        let (quote, mut records, ima_log) = self
            .tpm
            .call(move |t| {
                let q = t.quote(&n, &pcrs)?;
                let ima_log = if ima {
                    crate::host_ima::list_for_evidence()
                } else {
                    None
                };
                Ok((q, lock(&log).records_for(&[platform]), ima_log))
            })
            .map_err(|e| Refused::new(refusal::TPM_FAILED, format!("TPM: {e}")))?;
        records.extend(lease_log);
        for (i, r) in records.iter_mut().enumerate() {
            r.recnum = i as u64;
        }
        let mut ev = crate::evidence::build(self.tpm.identity(), &nonce, quote, records);
        ev.ima_log = ima_log;
        let evidence = serde_json::to_vec(&ev)
            .map_err(|e| Refused::new(refusal::TPM_FAILED, e.to_string()))?;
        info!(vm = id, bytes = evidence.len(); "quote for the lease holder");
        // Before the tunnel this changes nothing; the evidence still goes out.
        let _ = self.advance(id, Step::EvidenceDelivered);
        Ok(evidence)
    }

    /// The firmware hands over to the workload with SHA-256 `digest`.
    pub(super) fn hand_over(&self, id: &str, digest: [u8; 32]) -> Result<(), Refused> {
        self.require_lease(id, "handover")?;
        self.advance_with(id, Step::HandedOver, |vm| {
            vm.run.handover_digest = Some(digest)
        })
        .map_err(|e| Refused::new(refusal::OUT_OF_ORDER, e.to_string()))?;
        info!(vm = id, digest = hex::encode(digest); "handover");
        Ok(())
    }

    /// Reset PCRs 16 and 23 and pass the lease on, if `id` held it; else leave the
    /// queue. The registry lock is not held across the TPM reset: the lease stays
    /// `id`'s until the reset is done, so nobody else can extend meanwhile.
    pub(super) fn end_lease(&self, id: &str) {
        {
            let mut reg = lock(&self.registry);
            if !reg.lease.holds(id) {
                reg.lease.release(id);
                return;
            }
        }
        if let Err(e) = self.tpm.call(|t| {
            t.pcr_reset(PCR_TUNNEL)?;
            t.pcr_reset(PCR_VM)
        }) {
            warn!(vm = id, error = e.to_string(); "cannot reset the leased PCRs");
        }
        info!(vm = id; "PCR lease released; PCRs 16 and 23 reset");
        let mut reg = lock(&self.registry);
        if let Some(next) = reg.lease.release(id) {
            Self::tell(&reg, &next, super::supervise::Event::LeaseGranted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvp_audit::token::TenantSigner;

    fn page(auth: &[u8]) -> [u8; 4096] {
        tvp_abi::config::Config {
            vip: [10, 0, 0, 2],
            prefix_len: 24,
            gateway: [0; 4],
            mac: [2, 0, 0, 0, 0, 1],
            boot_server_ip: [10, 0, 0, 1],
            boot_server_port: 8443,
            vcpus: 1,
            mem_size_mib: 64,
            time_unix_secs: 1,
            entropy_seed: [0; 32],
            auth_code: auth,
            server_name: "boot",
            ca_cert_der: &[0x30, 3, 2, 1, 1],
            image: None,
        }
        .encode()
        .expect("page")
    }

    fn events(firmware: [u8; 32]) -> (Vec<MeasurementView>, Vec<[u8; 32]>) {
        let names = ["scheme", "firmware-image", "config-page"];
        let views = names
            .iter()
            .map(|n| MeasurementView {
                event_type: n.to_string(),
                digest: String::new(),
                description: String::new(),
            })
            .collect();
        (views, vec![[0; 32], firmware, [1; 32]])
    }

    /// The key was released for one VM; a VM measured with another firmware, page or
    /// management binding does not get to run its firmware.
    #[test]
    fn only_the_vm_the_key_was_released_for_passes() {
        let key = TenantSigner::generate_ed25519().public().to_pem();
        let m = ManagementView::from_request(&key, &crate::vm::management::tests::policy_json(), 1)
            .expect("binding");
        let bound = tvp_kms::KeyUse::vm(&page(b"U"), [9; 32], &key, &m.policy)
            .and_then(|u| u.parse())
            .expect("use")
            .digest();
        let (views, digests) = events([9; 32]);
        assert!(check_bound(bound, &page(b"U"), &views, &digests, Some(&m)).is_ok());
        let (v2, d2) = events([8; 32]);
        let e = check_bound(bound, &page(b"U"), &v2, &d2, Some(&m)).unwrap_err();
        assert!(e.starts_with("vm-binding:"), "{e}");
        assert!(check_bound(bound, &page(b"V"), &views, &digests, Some(&m)).is_err());
        let other = ManagementView::from_request(
            &TenantSigner::generate_ed25519().public().to_pem(),
            &crate::vm::management::tests::policy_json(),
            1,
        )
        .expect("binding");
        assert!(check_bound(bound, &page(b"U"), &views, &digests, Some(&other)).is_err());
        assert!(check_bound(bound, &page(b"U"), &views, &digests, None).is_err());
    }
}
