//! VM lifecycle: tvpd's start decision, stop, signals, channel loss, bad inputs, and
//! the inherited-descriptor channel tvpd uses.
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use tvp_vmm::vm::exit_code;
use tvp_vmm_channel::{ExitReason, VmmMessage};

#[test]
fn no_vcpu_runs_before_tvpd_says_start_abort_means_never() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-abort");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Abort);
    assert_eq!(run.exit_code, Some(exit_code::ABORTED));
    assert!(!run
        .messages
        .iter()
        .any(|m| matches!(m, VmmMessage::Milestone { .. })));
    assert!(run.console.is_empty());
}

#[test]
fn tvpd_stop_ends_a_spinning_guest() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("spin", dir.path());
    let cfg = write_config(dir.path(), b"U-stop");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::StopAfterFirstMilestone);
    assert_eq!(run.exit_code, Some(exit_code::STOPPED_BY_HOST));
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::StoppedByHost,
            ..
        })
    ));
}

#[test]
fn sigterm_ends_the_vm_with_killed_by_signal() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("spin", dir.path());
    let cfg = write_config(dir.path(), b"U-sig");
    let run = run_vm_with(dir.path(), &fw, &cfg, PeerMode::Normal, |pid| {
        // SAFETY (test code): plain kill(2) of our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    });
    assert_eq!(run.exit_code, Some(exit_code::KILLED_BY_SIGNAL));
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::KilledBySignal,
            ..
        })
    ));
}

#[test]
fn losing_the_channel_to_tvpd_ends_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("spin", dir.path());
    let cfg = write_config(dir.path(), b"U-close");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::CloseAfterFirstMilestone);
    assert_eq!(run.exit_code, Some(exit_code::CHANNEL_CLOSED));
}

#[test]
fn with_an_adoption_socket_a_channel_lost_before_running_still_ends_the_vm_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("spin", dir.path());
    let cfg = write_config(dir.path(), b"U-close");
    let sock = dir.path().join("adopt.sock");
    let run = VmRun::new(dir.path(), &fw, &cfg)
        .mode(PeerMode::CloseAfterFirstMilestone)
        .args(&[
            "--adopt-socket",
            sock.to_str().unwrap(),
            "--adopt-grace-secs",
            "60",
        ])
        .run();
    assert_eq!(run.exit_code, Some(exit_code::CHANNEL_CLOSED));
    assert!(run.secs < 30.0, "it waited for adoption: {} s", run.secs);
    assert!(!run.stderr.contains("waiting for a restarted tvpd"));
}

#[test]
fn a_running_vm_waits_for_adoption_through_its_grace_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("spin", dir.path());
    let cfg = write_config(dir.path(), b"U-close");
    let sock = dir.path().join("adopt.sock");
    let run = VmRun::new(dir.path(), &fw, &cfg)
        .mode(PeerMode::RunningThenClose)
        .args(&[
            "--adopt-socket",
            sock.to_str().unwrap(),
            "--adopt-grace-secs",
            "2",
        ])
        .run();
    assert_eq!(run.exit_code, Some(exit_code::CHANNEL_CLOSED));
    assert!(run.secs >= 2.0, "it did not wait: {} s", run.secs);
    assert!(
        run.stderr.contains("waiting for a restarted tvpd"),
        "{}",
        run.stderr
    );
    assert!(run
        .stderr
        .contains("no tvpd adopted the VM within the grace"));
}

#[test]
fn firmware_overlapping_the_platform_area_is_rejected_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest_at("happy", dir.path(), tvp_abi::layout::CONFIG_PAGE_GPA);
    let cfg = write_config(dir.path(), b"U-overlap");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(exit_code::SETUP_FAILED));
    assert!(
        run.stderr.contains("outside firmware RAM"),
        "{}",
        run.stderr
    );
    assert!(!run
        .messages
        .iter()
        .any(|m| matches!(m, VmmMessage::Measurement { .. })));
}

#[test]
fn tampered_configuration_page_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-tamper");
    let mut page = std::fs::read(&cfg).unwrap();
    page[4095] = 1;
    std::fs::write(&cfg, &page).unwrap();
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(exit_code::SETUP_FAILED));
    assert!(
        run.stderr.contains("invalid configuration page"),
        "{}",
        run.stderr
    );
}

#[test]
fn channel_over_an_inherited_socketpair_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-fd");
    let run = VmRun::new(dir.path(), &fw, &cfg).channel_fd().run();
    assert_eq!(run.exit_code, Some(0));
    assert!(matches!(
        run.messages.first(),
        Some(VmmMessage::Hello {
            protocol_version: 1,
            ..
        })
    ));
    assert_eq!(run.mailbox_messages().len(), 3);
}

#[test]
fn vmm_runs_the_guest_under_a_seccomp_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("spin", dir.path());
    let cfg = write_config(dir.path(), b"U-lockdown");
    let status = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = status.clone();
    let run = run_vm_with(dir.path(), &fw, &cfg, PeerMode::Normal, move |pid| {
        *seen.lock().unwrap() =
            std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        // SAFETY (test code): plain kill(2) of our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    });
    assert_eq!(run.exit_code, Some(exit_code::KILLED_BY_SIGNAL));
    let status = status.lock().unwrap().clone();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    assert_eq!(
        field("Seccomp:"),
        "2",
        "filter mode while the guest runs:\n{status}"
    );
    assert_eq!(field("NoNewPrivs:"), "1");
}
