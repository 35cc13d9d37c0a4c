//! Several vCPUs on real KVM: the application processors exist in KVM's wait-for-SIPI
//! state, the guest starts one itself with INIT/SIPI through the in-kernel LAPIC and
//! it runs (its port I/O reaches the shared devices), a VM whose vCPUs can never run
//! again ends as halted, and any vCPU's end ends the VM; interrupts (LAPIC timer, PIT through
//! the PIC, COM1 through its irqfd) reach the guest through the in-kernel irqchip.
// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use tvp_vmm::vm::exit_code;
use tvp_vmm_channel::{ExitReason, VmmMessage};

/// The `mp_state` each vCPU thread logged when it ended, by vCPU index.
fn final_mp_states(stderr: &str) -> Vec<(usize, String)> {
    let mut v: Vec<(usize, String)> = stderr
        .lines()
        .filter(|l| l.contains("vCPU thread ended"))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or_else(|| panic!("{k} missing in {l}"))
                    .to_string()
            };
            (field("vcpu=").parse().unwrap(), field("mp_state="))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn two_vcpus_the_ap_waits_for_sipi_while_the_bsp_runs_the_firmware() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "happy", b"U-smp2", 2, PeerMode::Normal);
    assert_eq!(
        run.exit_code,
        Some(exit_code::POWERED_OFF),
        "{}",
        run.stderr
    );
    assert!(run.console.contains("done"), "{}", run.console);
    // Both vCPU threads existed; the AP was never started, so KVM still holds it in
    // wait-for-SIPI (KVM_MP_STATE_UNINITIALIZED) at the end.
    let states = final_mp_states(&run.stderr);
    assert_eq!(states.len(), 2, "{}", run.stderr);
    assert_eq!(
        states[1],
        (1, "uninitialized".to_string()),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("vcpus=2"), "{}", run.stderr);
}

#[test]
fn the_guest_starts_its_ap_with_init_and_sipi_and_the_ap_runs() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "smp", b"U-smp-sipi", 2, PeerMode::Normal);
    assert_eq!(
        run.exit_code,
        Some(exit_code::POWERED_OFF),
        "{}",
        run.stderr
    );
    // The AP's CPUID says APIC id 1 in leaf 1 and in leaf 0xb; the BSP's says 0, two
    // logical processors, hypervisor bit set (tvp-vmm's normalisation, seen by the
    // guest on real KVM).
    assert!(
        run.console.contains("AP 1 1\n"),
        "the AP's output: {:?}",
        run.console
    );
    assert!(
        run.console
            .contains("cpu a=00000000 n=00000002 h=00000001\n"),
        "{:?}",
        run.console
    );
    assert!(run.console.contains("smp ok"), "{:?}", run.console);
    // The AP ran its trampoline and halted with interrupts off.
    let states = final_mp_states(&run.stderr);
    assert_eq!(states[1], (1, "halted".to_string()), "{}", run.stderr);
}

#[test]
fn with_one_vcpu_the_sipi_goes_nowhere() {
    // The same guest on a one-vCPU VM: no AP answers, the BSP says so and powers off.
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "smp", b"U-smp-one", 1, PeerMode::Normal);
    assert_eq!(
        run.exit_code,
        Some(exit_code::POWERED_OFF),
        "{}",
        run.stderr
    );
    assert!(run.console.contains("no AP"), "{:?}", run.console);
    assert!(
        run.console
            .contains("cpu a=00000000 n=00000001 h=00000001\n"),
        "{:?}",
        run.console
    );
    assert_eq!(final_mp_states(&run.stderr).len(), 1, "{}", run.stderr);
}

#[test]
fn a_halted_bsp_with_its_ap_waiting_for_sipi_ends_the_vm_as_halted() {
    // Neither vCPU can ever run again (no NMI source, interrupts off, nobody to send
    // a SIPI): the VM ends instead of hanging.
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "halt", b"U-smp-halt", 2, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(exit_code::HALTED), "{}", run.stderr);
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::Halted,
            ..
        })
    ));
}

#[test]
fn a_stop_ends_every_vcpu_thread() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(
        dir.path(),
        "spin",
        b"U-smp-stop",
        3,
        PeerMode::StopAfterFirstMilestone,
    );
    assert_eq!(
        run.exit_code,
        Some(exit_code::STOPPED_BY_HOST),
        "{}",
        run.stderr
    );
    assert_eq!(final_mp_states(&run.stderr).len(), 3, "{}", run.stderr);
}

#[test]
fn lapic_timer_pit_and_com1_interrupts_reach_a_guest_through_the_in_kernel_irqchip() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "irq", b"U-irq", 2, PeerMode::Normal);
    assert_eq!(
        run.exit_code,
        Some(exit_code::POWERED_OFF),
        "{}\n{}",
        run.console,
        run.stderr
    );
    // The LAPIC timer woke a halted vCPU, the PIT's IRQ 0 came through the PIC and
    // LINT0, and COM1's IRQ 4 through tvp-vmm's irqfd.
    for line in ["lapic timer ok", "pit ok", "com1 irq ok"] {
        assert!(run.console.contains(line), "{line}: {:?}", run.console);
    }
}

#[test]
fn an_ap_powering_off_ends_the_vm_while_the_bsp_spins() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "ap_off", b"U-ap-off", 2, PeerMode::Normal);
    assert_eq!(
        run.exit_code,
        Some(exit_code::POWERED_OFF),
        "{}",
        run.stderr
    );
    assert!(run.console.contains("AP 1 1\n"), "{:?}", run.console);
    // vCPU 1 ended the VM; vCPU 0 was kicked out of its spin and stopped.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("vCPU ended the VM") && l.contains("vcpu=1")),
        "{}",
        run.stderr
    );
    assert_eq!(final_mp_states(&run.stderr).len(), 2, "{}", run.stderr);
}
