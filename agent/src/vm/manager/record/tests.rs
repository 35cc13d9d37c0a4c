//! A VM record's history, boot log and `updated_at` follow from its boot steps.

use std::sync::mpsc;

use tvp_audit::token::TenantSigner;

use super::*;
use crate::vm::phase::Phase;
use crate::vm::spec::CreateVmRequest;

fn vm() -> (Vm, mpsc::Receiver<Event>) {
    let req: CreateVmRequest = serde_json::from_value(serde_json::json!({
        "id": "vm-1", "vip": "10.0.0.2/24", "mac": "02:00:00:00:00:01",
        "auth_code": "U-1", "boot_server": "10.0.0.1:8443",
        "boot_server_name": "boot.tenant.example",
        "tenant_ca_pem": "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
        "management_public_key": TenantSigner::generate_p256().public().to_pem(),
        "policy": crate::vm::management::tests::policy_json(),
    }))
    .unwrap();
    let spec = req.validate().unwrap();
    let (tx, rx) = mpsc::channel();
    let run = Run::launched(
        std::process::id(),
        vec![0; 4096],
        None,
        tx,
        spec.deadline,
        None,
    );
    (Vm::created(&spec, "tap0".into(), run), rx)
}

fn states(vm: &Vm) -> Vec<VmState> {
    vm.history.iter().map(|(_, s)| *s).collect()
}

fn phases(vm: &Vm) -> Vec<Phase> {
    vm.phases.iter().map(|p| p.phase).collect()
}

#[test]
fn a_boot_writes_its_history_and_boot_log_and_a_reboot_continues_them() {
    let (mut vm, _rx) = vm();
    let c = vm
        .apply(Step::Measured {
            reported_pcr23: [1; 32],
        })
        .unwrap();
    assert!(c.changed && c.audited);
    assert_eq!(
        (c.before.as_str(), c.after.as_str()),
        ("queued", "measuring")
    );
    let (generation, limit, _) = c.phase_deadline.unwrap();
    assert_eq!((generation, limit.as_secs()), (2, 30));
    vm.apply(Step::FirmwareStarted { log: vec![] }).unwrap();
    let record = tvp_verifier::CelRecord::tvp(
        0,
        16,
        [2; 32],
        tvp_verifier::EventKind::TunnelMeasurement,
        "t".into(),
    );
    let c = vm.apply(Step::TunnelMeasured { record }).unwrap();
    assert!(c.changed && !c.audited, "a new phase, the same API state");
    vm.apply(Step::EvidenceDelivered).unwrap();
    vm.apply(Step::HandedOver).unwrap();
    let c = vm.apply(Step::Pause).unwrap();
    assert_eq!(
        (c.after.as_str(), c.reason.as_str()),
        ("running, paused", "pause")
    );
    assert!(vm.view("vm-1", None).paused);
    assert!(vm.phases.iter().rev().skip(1).all(|p| p.ended_at.is_some()));
    vm.apply(Step::Reboot).unwrap();
    assert_eq!(
        states(&vm),
        [
            VmState::Queued,
            VmState::Measuring,
            VmState::Attesting,
            VmState::BootingWorkload,
            VmState::Running,
            VmState::Queued
        ]
    );
    assert_eq!(
        phases(&vm),
        [
            Phase::Queued,
            Phase::Measuring,
            Phase::Tunnel,
            Phase::Attestation,
            Phase::Delivery,
            Phase::Running,
            Phase::Queued
        ]
    );
    let c = vm
        .apply(Step::End {
            how: Ending::Destroyed,
            reason: "deleted".into(),
        })
        .unwrap();
    assert_eq!(
        (c.before.as_str(), c.after.as_str()),
        ("queued", "destroyed")
    );
    let v = vm.view("vm-1", None);
    assert_eq!(
        (v.state, v.reason.as_deref()),
        (VmState::Destroyed, Some("deleted"))
    );
    assert!(
        v.phases.iter().all(|p| p.ended_at.is_some()),
        "boot log closed"
    );
    assert!(vm.apply(Step::Reboot).is_err());
    assert!(vm
        .add_measurement("x".into(), [0; 32], "late".into())
        .is_err());
    assert_eq!(vm.history.len(), 7, "refused steps leave no trace");
}

#[test]
fn a_recovered_live_vm_is_failed_and_an_ended_one_kept_as_it_was() {
    let (mut vm, _rx) = vm();
    vm.apply(Step::Pause).unwrap();
    let live = Vm::recovered(vm.view("vm-1", Some(0)), "tvpd-restarted");
    let v = live.view("vm-1", None);
    assert_eq!(
        (v.state, v.reason.as_deref(), v.paused, v.pid),
        (VmState::Failed, Some("tvpd-restarted"), false, None)
    );
    assert_eq!(states(&live), [VmState::Queued, VmState::Failed]);
    let again = Vm::recovered(v.clone(), "tvpd-restarted").view("vm-1", None);
    assert_eq!(
        again.history, v.history,
        "an ended VM is recovered unchanged"
    );
    assert_eq!(again.reason, v.reason);
}
