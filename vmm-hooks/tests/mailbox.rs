//! Attestation mailbox tests: real tvp-vmm processes on /dev/kvm, assembly guests, and
//! a test peer playing tvpd on the channel.
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use tvp_abi::mailbox::{Status, RESPONSE_PAYLOAD_MAX};
use tvp_vmm_channel::{ExitReason, VmmMessage};

const OK: u32 = Status::Ok as u32;

#[test]
fn every_command_happy_path_reaches_tvpd_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-happy");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.statuses(), vec![OK, OK, OK, OK, Status::Closed as u32]);
    let r = run.responses();
    assert!(
        r[0].contains("l=00000010"),
        "GET_VERSION payload is 16 bytes: {}",
        r[0]
    );
    assert!(
        r[2].contains("l=00000014 p=44495645"),
        "evidence EVID+nonce written back: {}",
        r[2]
    );
    let mb = run.mailbox_messages();
    assert_eq!(mb.len(), 3, "{mb:?}");
    assert!(
        matches!(mb[0], VmmMessage::TunnelEstablished { measurement, .. } if *measurement == [0xab; 32])
    );
    assert!(matches!(mb[1], VmmMessage::QuoteRequest { nonce, .. } if *nonce == vec![0x11; 16]));
    assert!(matches!(mb[2], VmmMessage::Handover { digest, .. } if *digest == [0xcd; 32]));
    let milestones: Vec<u8> = run
        .messages
        .iter()
        .filter_map(|m| match m {
            VmmMessage::Milestone { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(milestones, vec![0, 1]);
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::PoweredOff,
            exit_code: 0,
            ..
        })
    ));
}

#[test]
fn malformed_and_out_of_order_requests_get_error_codes_and_never_reach_tvpd() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("malformed", dir.path());
    let cfg = write_config(dir.path(), b"U-malformed");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    use Status::*;
    let expected: Vec<u32> = [
        BadMagic,
        BadVersion,
        UnknownCommand,
        BadLength,
        BadLength,
        BadLength,
        BadLength,
        BadField,
        OutOfOrder,
        OutOfOrder,
        BadLength,
        Ok,
        OutOfOrder,
        Ok,
        Closed,
        Closed,
    ]
    .iter()
    .map(|s| *s as u32)
    .collect();
    assert_eq!(run.statuses(), expected, "{:#?}", run.responses());
    let mb = run.mailbox_messages();
    assert_eq!(
        mb.len(),
        2,
        "only the two valid requests reach tvpd: {mb:?}"
    );
    assert!(matches!(mb[0], VmmMessage::TunnelEstablished { .. }));
    assert!(matches!(mb[1], VmmMessage::BootFailed { reason: 7, .. }));
}

#[test]
fn guest_spamming_the_doorbell_with_garbage_cannot_crash_or_flood() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("garbage", dir.path());
    let cfg = write_config(dir.path(), b"U-garbage");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(
        run.exit_code,
        Some(0),
        "VMM survived 2000 garbage doorbells"
    );
    assert!(run.console.contains("done"));
    let quotes = run
        .mailbox_messages()
        .iter()
        .filter(|m| matches!(m, VmmMessage::QuoteRequest { .. }))
        .count();
    assert!(quotes <= tvp_vmm::mailbox::QUOTE_LIMIT as usize);
    assert!(
        run.stderr.len() < 64 * 1024,
        "logging stays bounded ({} bytes)",
        run.stderr.len()
    );
}

#[test]
fn evidence_larger_than_the_response_area_is_refused_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-big");
    let run = run_vm(
        dir.path(),
        &fw,
        &cfg,
        PeerMode::BigEvidence(RESPONSE_PAYLOAD_MAX + 1),
    );
    assert_eq!(run.exit_code, Some(0));
    let st = run.statuses();
    assert_eq!(st[2], Status::ResponseTooLarge as u32);
    assert!(run.responses()[2].contains(&format!("d={:08x}", RESPONSE_PAYLOAD_MAX + 1)));
}

#[test]
fn tvpd_refusing_a_quote_reaches_the_guest_as_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-refuse");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::RefuseQuotes(0x1234));
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.statuses()[2], Status::PlatformRefused as u32);
    assert!(
        run.responses()[2].contains("d=00001234 l=00000000"),
        "{}",
        run.responses()[2]
    );
}

#[test]
fn silent_tvpd_cannot_hang_the_guest_forever() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-silent");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::SilentMailbox);
    assert_eq!(run.exit_code, Some(0));
    let unavailable = Status::PlatformUnavailable as u32;
    let out_of_order = Status::OutOfOrder as u32;
    // The tunnel times out (not accepted), so quote and handover are out of order.
    assert_eq!(
        run.statuses(),
        vec![OK, unavailable, out_of_order, out_of_order, OK]
    );
    assert!(run.secs < (HOST_TIMEOUT_MS as f64 / 1000.0) + 30.0);
}
