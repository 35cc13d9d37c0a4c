//! ACPI on real KVM: a stand-in guest finds the RSDP where an OS scans for it, walks
//! XSDT → MADT and counts one enabled local APIC per vCPU; it powers off through the
//! hardware-reduced FADT's sleep control register and the VM ends `powered-off`; a
//! write of the FADT's reset value ends it as a reboot request; the tables are the
//! measured `acpi-tables` event.
// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use tvp_abi::layout::ACPI_REGION_SIZE;
use tvp_vmm::vm::exit_code;
use tvp_vmm_channel::{ExitReason, VmmMessage};

fn acpi_event(run: &Run) -> [u8; 32] {
    run.messages
        .iter()
        .find_map(|m| match m {
            VmmMessage::Measurement {
                event_type, digest, ..
            } if event_type == "acpi-tables" => Some(*digest),
            _ => None,
        })
        .expect("an acpi-tables measurement event")
}

fn tables_digest(vcpus: u16) -> [u8; 32] {
    let mut r = [0u8; ACPI_REGION_SIZE];
    tvp_abi::acpi::build_tables(vcpus, false, &mut r).unwrap();
    tvp_abi::measure::sha256(&r)
}

#[test]
fn the_guest_finds_two_lapics_through_rsdp_xsdt_madt_and_powers_off_by_acpi() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "acpi", b"U-acpi2", 2, PeerMode::Normal);
    assert!(
        run.console.contains("acpi l=00000002\n"),
        "{:?}",
        run.console
    );
    assert_eq!(
        run.exit_code,
        Some(exit_code::POWERED_OFF),
        "{}",
        run.stderr
    );
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::PoweredOff,
            ..
        })
    ));
    // The tables the guest walked are the measured event, as tvp_abi computes it.
    assert_eq!(acpi_event(&run), tables_digest(2));
}

#[test]
fn the_madt_follows_the_vcpu_count() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "acpi", b"U-acpi3", 3, PeerMode::Normal);
    assert!(
        run.console.contains("acpi l=00000003\n"),
        "{:?}",
        run.console
    );
    assert_eq!(acpi_event(&run), tables_digest(3));
    assert_ne!(tables_digest(3), tables_digest(2));
}

#[test]
fn the_acpi_reset_register_ends_the_vm_as_a_reboot_request() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_guest_vcpus(dir.path(), "acpi_reboot", b"U-acpi-rb", 1, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(exit_code::RESET), "{}", run.stderr);
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::Reset,
            ..
        })
    ));
    // On the wire (tvpd's channel and its logs) the reason is named reboot-requested.
    let wire = serde_json::to_string(&ExitReason::Reset).unwrap();
    assert_eq!(wire, "\"reboot-requested\"");
}
