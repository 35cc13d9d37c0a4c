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
            Step::FirmwareStarted { log: vec![rec(1)] },
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
            (S::Measuring, Some(P::Measuring)),
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
    let before = b.clone();
    assert!(matches!(
        b.step(Step::FirmwareStarted { log: vec![] }),
        Err(BootError::OutOfOrder {
            step: "firmware-started",
            ..
        })
    ));
    assert!(b.step(Step::HandedOver).is_err(), "firmware not started");
    assert!(b.step(Step::EvidenceDelivered).is_err(), "no quote before");
    assert_eq!(b, before);
    b.step(Step::Measured {
        reported_pcr23: [2; 32],
    })
    .unwrap();
    assert!(!b.accepts_measurements());
    assert_eq!(b.reported_pcr23(), Some([2; 32]));
    b.step(Step::FirmwareStarted { log: vec![] }).unwrap();
    assert!(
        b.step(Step::EvidenceDelivered).is_err(),
        "no evidence before the tunnel measurement"
    );
    assert!(!b.tunnel_measured());
    b.step(Step::TunnelMeasured { record: rec(3) }).unwrap();
    assert!(b.tunnel_measured());
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
        Step::HandedOver,
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
    b.step(Step::Measured {
        reported_pcr23: [1; 32],
    })
    .unwrap();
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

mod conversation {
    use super::*;
    use tvp_vmm_channel::{ExitReason, VmmMessage};

    fn hello() -> VmmMessage {
        VmmMessage::Hello {
            protocol_version: tvp_vmm_channel::PROTOCOL_VERSION,
            vm_id: "vm".into(),
            pid: 1,
        }
    }

    fn done() -> VmmMessage {
        VmmMessage::MeasurementsDone {
            count: 1,
            pcr23: [0; 32],
        }
    }

    fn measurement() -> VmmMessage {
        VmmMessage::Measurement {
            index: 0,
            event_type: "firmware".into(),
            digest: [1; 32],
            description: "d".into(),
        }
    }

    fn quote() -> VmmMessage {
        VmmMessage::QuoteRequest {
            request_id: 1,
            nonce: vec![1; 16],
        }
    }

    fn exited() -> VmmMessage {
        VmmMessage::Exited {
            reason: ExitReason::PoweredOff,
            exit_code: 0,
            detail: String::new(),
        }
    }

    /// A boot whose firmware runs (waiting for its tunnel measurement).
    fn started() -> Boot {
        let mut b = Boot::queued();
        run(
            &mut b,
            vec![
                Step::Measured {
                    reported_pcr23: [1; 32],
                },
                Step::FirmwareStarted { log: vec![] },
            ],
        );
        b
    }

    /// A boot whose tunnel measurement is recorded.
    fn tunneled() -> Boot {
        let mut b = started();
        b.step(Step::TunnelMeasured { record: rec(1) }).unwrap();
        b
    }

    fn tunnel() -> VmmMessage {
        VmmMessage::TunnelEstablished {
            request_id: 1,
            measurement: [3; 32],
        }
    }

    #[test]
    fn the_honest_order_is_accepted() {
        let mut c = Conversation::default();
        let q = Boot::queued();
        let s = started();
        let t = tunneled();
        for (m, b) in [
            (hello(), &q),
            (measurement(), &q),
            (done(), &q),
            (tunnel(), &s),
            (quote(), &t),
            (quote(), &t),
            (
                VmmMessage::BootFailed {
                    request_id: 2,
                    reason: 7,
                },
                &s,
            ),
            (
                VmmMessage::Milestone {
                    code: 1,
                    micros_since_start: 2,
                    unix_micros: 3,
                },
                &s,
            ),
            (exited(), &s),
        ] {
            assert_eq!(c.vet(&m, b), Ok(()), "{}", kind(&m));
        }
        assert_eq!(c.reported_end(), Some(Reported::Exited));
    }

    #[test]
    fn out_of_protocol_messages_are_violations_that_change_nothing() {
        let q = Boot::queued();
        let s = started();
        let t = tunneled();
        let mut c = Conversation::default();
        assert_eq!(
            c.vet(&done(), &q),
            Err(Violation::BeforeHello {
                kind: "measurements-done"
            })
        );
        c.vet(&hello(), &q).unwrap();
        assert_eq!(c.vet(&hello(), &q), Err(Violation::SecondHello));
        c.vet(&done(), &q).unwrap();
        assert_eq!(c.vet(&done(), &s), Err(Violation::SecondMeasurementsDone));
        assert_eq!(
            c.vet(&measurement(), &q),
            Err(Violation::MeasurementAfterDone)
        );
        // PCR steps: only once its firmware runs; one tunnel, before any quote.
        assert_eq!(
            c.vet(&quote(), &q),
            Err(Violation::BeforeStart {
                kind: "quote-request"
            })
        );
        assert_eq!(c.vet(&quote(), &s), Err(Violation::QuoteBeforeTunnel));
        assert_eq!(c.vet(&tunnel(), &t), Err(Violation::SecondTunnel));
        // A VM tvpd ended already: a crossing request goes to its handler (refused).
        let ended = Boot::Ended {
            how: Ending::Failed,
            reason: None,
        };
        assert_eq!(c.vet(&quote(), &ended), Ok(()));
        c.vet(&exited(), &s).unwrap();
        for m in [quote(), exited(), hello()] {
            let v = c.vet(&m, &s).unwrap_err();
            assert!(v.after_end(), "{v}");
        }
        assert_eq!(
            c.vet(&quote(), &s).unwrap_err().to_string(),
            "'quote-request' after the VMM reported 'exited'"
        );
    }

    #[test]
    fn an_adopted_vmm_continues_after_its_hello_and_cannot_say_adopted_again() {
        let running = Boot::Live {
            stage: Stage::Running,
            paused: false,
        };
        let mut c = Conversation::adopted();
        // Its hello and measurements went to the earlier tvpd: a new one is refused.
        assert_eq!(c.vet(&hello(), &running), Err(Violation::SecondHello));
        assert_eq!(
            c.vet(&done(), &running),
            Err(Violation::SecondMeasurementsDone)
        );
        let adopted = VmmMessage::Adopted {
            protocol_version: 1,
            vm_id: "vm".into(),
            pid: 1,
        };
        assert_eq!(
            c.vet(&adopted, &running),
            Err(Violation::AdoptedOutsideHandshake)
        );
        assert_eq!(kind(&adopted), "adopted");
        // Handed over: no PCR step either.
        assert_eq!(
            c.vet(&quote(), &running),
            Err(Violation::AfterHandover {
                kind: "quote-request"
            })
        );
        assert_eq!(c.vet(&exited(), &running), Ok(()));
        assert_eq!(c.reported_end(), Some(Reported::Exited));
    }
}
