//! The boot state machine: derivations and refused transitions.

use super::*;
use tvp_verifier::EventKind;

fn rec(n: u8) -> CelRecord {
    CelRecord::tvp(0, 16, [n; 32], EventKind::TunnelMeasurement, "t".into())
}

fn run(boot: &mut Boot, steps: Vec<Step>) -> Vec<(VmState, Option<Phase>)> {
    steps
        .into_iter()
        .map(|s| {
            boot.step(s).unwrap();
            (boot.state(), boot.phase())
        })
        .collect()
}

#[test]
fn a_full_boot_derives_every_api_state_and_phase() {
    let mut b = Boot::queued();
    let seen = run(
        &mut b,
        vec![
            Step::Measured {
                reported_pcr23: [1; 32],
            },
            Step::LeaseGranted,
            Step::StartMeasuring,
            Step::FirmwareStarted { log: vec![rec(1)] },
            Step::EvidenceDelivered,
            Step::TunnelMeasured { record: rec(2) },
            Step::EvidenceDelivered,
            Step::EvidenceDelivered,
            Step::HandedOver,
            Step::End {
                how: Ending::Destroyed,
                reason: "powered-off".into(),
            },
        ],
    );
    use Phase as P;
    use VmState as S;
    assert_eq!(
        seen,
        [
            (S::Queued, Some(P::Queued)),
            (S::Queued, Some(P::Queued)),
            (S::Measuring, Some(P::Measuring)),
            (S::Attesting, Some(P::Tunnel)),
            (S::Attesting, Some(P::Tunnel)),
            (S::Attesting, Some(P::Attestation)),
            (S::BootingWorkload, Some(P::Delivery)),
            (S::BootingWorkload, Some(P::Delivery)),
            (S::Running, Some(P::Running)),
            (S::Destroyed, None),
        ]
    );
    assert_eq!(b.reason(), Some("powered-off"));
}

#[test]
fn impossible_transitions_are_refused_and_change_nothing() {
    let mut b = Boot::queued();
    b.step(Step::LeaseGranted).unwrap();
    let before = b.clone();
    assert!(matches!(
        b.step(Step::LeaseGranted),
        Err(BootError::OutOfOrder {
            step: "lease-granted",
            ..
        })
    ));
    assert!(b.step(Step::StartMeasuring).is_err(), "not measured yet");
    assert!(b.step(Step::HandedOver).is_err(), "firmware not started");
    assert_eq!(b, before);
    b.step(Step::Measured {
        reported_pcr23: [2; 32],
    })
    .unwrap();
    assert!(!b.accepts_measurements());
    assert!(b.ready_to_measure());
    b.step(Step::StartMeasuring).unwrap();
    assert_eq!(b.reported_pcr23(), Some([2; 32]));
    b.step(Step::FirmwareStarted { log: vec![] }).unwrap();
    b.step(Step::TunnelMeasured { record: rec(3) }).unwrap();
    assert!(
        b.step(Step::TunnelMeasured { record: rec(4) }).is_err(),
        "one tunnel measurement per boot"
    );
    assert_eq!(b.lease_log().len(), 1);
    b.step(Step::End {
        how: Ending::Failed,
        reason: "x".into(),
    })
    .unwrap();
    let ended = b.clone();
    for s in [
        Step::LeaseGranted,
        Step::Pause,
        Step::Reboot,
        Step::End {
            how: Ending::Destroyed,
            reason: "y".into(),
        },
    ] {
        assert!(matches!(
            b.step(s),
            Err(BootError::Ended {
                state: "failed",
                ..
            })
        ));
    }
    assert_eq!(b, ended);
    assert!(b.lease_log().is_empty());
}

#[test]
fn pause_is_a_flag_of_live_boots_only_and_reboot_starts_over() {
    let mut b = Boot::queued();
    assert_eq!(b.step(Step::Resume), Err(BootError::NotPaused));
    b.step(Step::Pause).unwrap();
    assert_eq!(b.label(), "queued, paused");
    assert_eq!(b.step(Step::Pause), Err(BootError::AlreadyPaused));
    b.step(Step::LeaseGranted).unwrap();
    assert!(b.paused(), "the boot goes on while paused");
    b.step(Step::Reboot).unwrap();
    assert_eq!(b, Boot::queued());
    b.step(Step::Pause).unwrap();
    b.step(Step::End {
        how: Ending::Destroyed,
        reason: "deleted".into(),
    })
    .unwrap();
    assert!(!b.paused());
    assert_eq!(b.label(), "destroyed");
}
