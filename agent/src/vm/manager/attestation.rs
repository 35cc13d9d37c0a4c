//! The attestation steps of a measured VM: its measurements checked by computation
//! when the VMM reports them (against the firmware file, the page and the management
//! binding) before the firmware starts, its tunnel measurement recorded once, the
//! evidence (a quote under the PCR lease, `leased.rs`), and the handover. Each mailbox
//! request answers `Ok` or the [`Refused`] the guest gets.

use log::info;
use tvp_abi::measure::{extend, replay};
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
    // 1 (not the lease holder) is no longer sent: no VM holds the lease outside its
    // own quote; a mailbox request out of order is refused with 2.
    /// The request is out of order for tvpd (e.g. a second tunnel measurement).
    pub const OUT_OF_ORDER: u32 = 2;
    /// The TPM failed.
    pub const TPM_FAILED: u32 = 3;
    /// The PCR lease was not granted in time (`leased::LEASE_WAIT`).
    pub const LEASE_WAIT: u32 = 4;
    /// PCR 23 under the lease is not the value checked when the VM was measured.
    pub const MEASUREMENT_MISMATCH: u32 = 5;
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
    pub(super) fn new(code: u32, message: impl Into<String>) -> Refused {
        Refused {
            code,
            message: message.into(),
        }
    }
}

/// What checking the measurements yields: PCR 23 as every quote's lease must
/// reproduce it, this boot's PCR 23 records, and the management event as the API
/// shows it.
struct Measured {
    pcr23: [u8; 32],
    log: Vec<CelRecord>,
    management: Option<MeasurementView>,
}

pub(super) fn record(
    pcr: u32,
    digest: [u8; 32],
    kind: EventKind,
    description: String,
) -> CelRecord {
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
    /// The VMM's measurements are in: check them, and say whether the firmware may
    /// start (`Err` is why not; the caller aborts the VM). No TPM command and no
    /// lease: PCR 23 is extended from these records under each quote's lease.
    pub(super) fn measure_boot(&self, id: &str) -> Result<(), String> {
        let m = self.measure(id)?;
        let pcr23 = m.pcr23;
        let management = m.management;
        self.advance_with(id, Step::FirmwareStarted { log: m.log }, |vm| {
            vm.run.pcr23 = Some(pcr23);
            vm.run.measurements.extend(management);
        })
        .map_err(|e| e.to_string())
    }

    /// Require the replay of the VMM's events to equal both the VMM's own replay and
    /// the value computed from the firmware file and the page; then the same with the
    /// management event appended.
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
        let pcr23 = replay(&digests);
        if Some(pcr23) != reported || pcr23 != expected {
            return Err(format!(
                "measurement mismatch: PCR 23 replayed from the VMM's events {}, reported by the VMM {}, expected from {} and the configuration page {}",
                hex::encode(pcr23),
                reported.map(hex::encode).unwrap_or_else(|| "nothing".into()),
                self.cfg.firmware.display(),
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
            return Ok(Measured {
                pcr23,
                log,
                management: None,
            });
        };
        let (pcr23, description, digest) = measure_management(pcr23, &m, &firmware, &page)?;
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

    /// The firmware's tunnel measurement: recorded once, for PCR 16 under each
    /// quote's lease (the conversation refuses a second one and one before the
    /// firmware runs).
    pub(super) fn record_tunnel(&self, id: &str, measurement: [u8; 32]) -> Result<(), Refused> {
        let record = record(
            PCR_TUNNEL,
            measurement,
            EventKind::TunnelMeasurement,
            format!("{id}: TLS exporter EXPORTER-tvp-tunnel-measurement"),
        );
        self.advance(id, Step::TunnelMeasured { record })
            .map_err(|e| Refused::new(refusal::OUT_OF_ORDER, e.to_string()))?;
        info!(vm = id; "tunnel measurement recorded for PCR 16");
        Ok(())
    }

    /// The firmware hands over to the workload with SHA-256 `digest`.
    pub(super) fn hand_over(&self, id: &str, digest: [u8; 32]) -> Result<(), Refused> {
        self.advance_with(id, Step::HandedOver, |vm| {
            vm.run.handover_digest = Some(digest)
        })
        .map_err(|e| Refused::new(refusal::OUT_OF_ORDER, e.to_string()))?;
        info!(vm = id, digest = hex::encode(digest); "handover");
        Ok(())
    }

    /// VM `id` ends or reboots: it gives up its place in the lease queue, if it
    /// waits. A holder is always inside its own quote's TPM steps, which end with the
    /// reset and the release (`leased.rs`), so nothing is reset here.
    pub(super) fn leave_lease(&self, id: &str) {
        lock(&self.registry).lease.leave(id);
        self.lease_passed.notify_all();
    }
}

/// After the VMM's events (whose replay is `pcr23`): the VM's management binding
/// appended, checked against the value computed from firmware, page and binding.
/// Returns PCR 23 and the event's description and digest.
fn measure_management(
    pcr23: [u8; 32],
    m: &ManagementView,
    firmware: &[u8],
    page: &[u8],
) -> Result<([u8; 32], String, [u8; 32]), String> {
    let digest = m.digest_bytes()?;
    let expected = tvp_abi::measure::expected_pcr23_managed(firmware, page, &digest)
        .map_err(|e| format!("cannot compute the expected PCR 23: {e}"))?;
    let pcr23 = extend(&pcr23, &digest);
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
            disk: None,
            tpm: None,
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
