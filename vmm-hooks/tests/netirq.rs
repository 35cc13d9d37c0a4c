//! virtio-net's interrupt on real KVM, with a real TAP device in a network namespace:
//! once the workload's driver reset the device after the handover, the receive thread
//! delivers frames while the guest touches no device register, and the interrupt
//! reaches the guest through the IOAPIC (GSI 5); before the handover the device stays
//! polled as the firmware needs (no interrupt), its receive ring filled by the same
//! thread (stand-in guest `tests/guests/vnet_irq.S`).
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;

/// A broadcast frame for the guest's receive queue (EtherType 0x88b5, local use),
/// sent on the TAP side every 20 ms while the guest runs.
fn inbound_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xfe, 0x88, 0xb5]);
    f.extend_from_slice(&[0x77; 64]);
    f
}

fn run_guest(name: &str) -> Run {
    let ns = NetNs::create(name);
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest(name, dir.path());
    let page = write_config(dir.path(), b"U-netirq");
    let side = ns.tap_side(Some(inbound_frame()));
    let run = VmRun::new(dir.path(), &fw, &page)
        .in_netns(&ns.name)
        .args(&["--tap", "tap0"])
        .run();
    side.finish();
    run
}

#[test]
fn the_guests_interrupt_line_is_the_abis() {
    // tests/guests/vnet_irq.S hard-codes the IOAPIC pin.
    assert_eq!(tvp_abi::layout::VIRTIO_NET_GSI, 5);
}

#[test]
fn after_the_handover_frames_arrive_with_their_interrupt_and_no_register_access() {
    require!(Need::Kvm, Need::Netns);
    let run = run_guest("vnet_irq");
    assert_eq!(run.exit_code, Some(0), "{}\n{}", run.console, run.stderr);
    assert!(
        run.stderr.lines().any(
            |l| l.contains("virtio-net: reset by the workload, interrupt mode")
                && l.contains("gsi=5")
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.console
            .contains(" i=00000001 u=00000001 i=00000002 u=00000002"),
        "both frames delivered by the receive thread, each with its interrupt:\n{}",
        run.console
    );
}

#[test]
fn before_the_handover_the_device_stays_polled_and_the_thread_fills_its_ring() {
    require!(Need::Kvm, Need::Netns);
    let run = run_guest("vnet_irq_polled");
    assert_eq!(run.exit_code, Some(0), "{}\n{}", run.console, run.stderr);
    assert!(
        run.console
            .contains(" i=00000000 u=00000001 i=00000000 u=00000002"),
        "the I/O thread fills the polled ring (no register access), no interrupt:\n{}",
        run.console
    );
    assert!(!run.stderr.contains("interrupt mode"));
}
