//! Hostile or broken guests: faults and KVM failures end the VM with a clear reason;
//! the read-only configuration page stays intact.
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use tvp_vmm_channel::{ExitReason, VmmMessage};

#[test]
fn triple_fault_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("triple_fault", dir.path());
    let cfg = write_config(dir.path(), b"U-tf");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(tvp_vmm::vm::exit_code::TRIPLE_FAULT));
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::TripleFault,
            ..
        })
    ));
}

#[test]
fn sse_at_cpl0_surfaces_kvm_internal_error_with_suberror_and_rip() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("sse", dir.path());
    let insn = symbol(&fw, "sse_insn");
    let cfg = write_config(dir.path(), b"U-sse");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    if run.exit_code == Some(0) {
        // A real KVM host executes SSE natively; nothing to report there.
        assert!(run.console.contains("done"));
        eprintln!("note: pxor ran natively (not the nested development machine)");
        return;
    }
    assert_eq!(
        run.exit_code,
        Some(tvp_vmm::vm::exit_code::KVM_INTERNAL_ERROR)
    );
    let Some(VmmMessage::Exited { reason, detail, .. }) = run.exited() else {
        panic!("no Exited message");
    };
    assert_eq!(*reason, ExitReason::KvmInternalError);
    assert!(detail.contains("suberror="), "{detail}");
    assert!(
        detail.contains(&format!("rip={insn:#x}")),
        "{detail} (pxor at {insn:#x})"
    );
}

#[test]
fn guest_cannot_modify_the_read_only_configuration_page() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("ro_config", dir.path());
    let cfg = write_config(dir.path(), b"U-ro");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    let magic = u32::from_le_bytes(*b"TVPC");
    let vip = u32::from_le_bytes([10, 0, 0, 2]);
    assert!(
        run.console
            .contains(&format!(" b={magic:08x} a={magic:08x} v={vip:08x}")),
        "{}",
        run.console
    );
    assert!(run.stderr.contains("read-only configuration page"));
}

#[test]
fn i8042_reset_ends_a_measured_vm_instead_of_rebooting_it() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("reset", dir.path());
    let cfg = write_config(dir.path(), b"U-reset");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(tvp_vmm::vm::exit_code::RESET));
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::Reset,
            ..
        })
    ));
}

#[test]
fn halt_without_interrupt_source_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("halt", dir.path());
    let cfg = write_config(dir.path(), b"U-halt");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(tvp_vmm::vm::exit_code::HALTED));
}

#[test]
fn console_flood_is_capped_so_a_guest_cannot_fill_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("flood", dir.path());
    let cfg = write_config(dir.path(), b"U-flood");
    let run = VmRun::new(dir.path(), &fw, &cfg)
        .args(&["--console-limit", "4096"])
        .run();
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.console.len(), 4096);
    assert!(run.stderr.contains("cap"));
}
