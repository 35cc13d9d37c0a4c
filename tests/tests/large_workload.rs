//! Workloads larger than the firmware's heap (issue #18): the signed container is
//! streamed through the TLS tunnel straight into the top of the VM's workload window,
//! verified there and loaded below it. A 64 MiB Linux bundle (the stand-in bzImage and
//! a 64 MiB initrd) is delivered and handed over; the same bundle with one byte changed
//! at the end of its payload is refused after the transfer; a bundle larger than the
//! VM's workload window is refused by the boot server before attestation and transfer.
//! Real KVM, swtpm, TAP, tvpd and rustls on both ends.

use tvp_tests::netboot::*;
use tvp_tests::require;
use tvp_tests::Need;

/// A recognisable initrd of `len` bytes: its first 16 bytes are what the stand-in
/// kernel prints.
fn initrd(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    v[..16].copy_from_slice(b"TVP-INITRD-LARGE");
    v
}

#[test]
fn a_64_mib_workload_is_streamed_verified_and_handed_over_and_a_changed_last_byte_is_refused() {
    require!(
        Need::Netns,
        "swtpm",
        "swtpm_setup",
        "ip",
        "openssl",
        "gcc",
        "objcopy"
    );
    let ns = NetNs::create("large");
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let signed = sign_linux(
        &ten,
        &test_bzimage(&ten),
        "console=ttyS0",
        &initrd(64 << 20),
    )
    .unwrap();
    let good = std::fs::read(&signed).unwrap();
    assert!(good.len() > 64 << 20);
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();

    // One byte changed at the end of the payload (just before the signature): the
    // whole container arrives, the signature check fails, nothing is handed over.
    let mut bad = good.clone();
    let at = bad.len() - 65;
    bad[at] ^= 0x80;
    let tampered = dir.path().join("tampered.signed");
    std::fs::write(&tampered, &bad).unwrap();
    let mut server = BootServer::builder(&ns, &h, &ten)
        .reservations("10.0.0.2 U-bad\n")
        .workload(&tampered)
        .start();
    let spec = vm_spec("bad", "U-bad", &ca).memory_mib(192);
    let o = boot_spec(&h, &mut server, "bad", &spec);
    o.assert_refused("bad-signature", 11, "firmware-failed:bad-signature");
    assert!(
        o.console
            .contains(&format!("workload: {} bytes received", bad.len())),
        "the whole container arrived first:\n{}",
        o.console
    );
    drop(server);

    let mut server = BootServer::builder(&ns, &h, &ten)
        .reservations("10.0.0.2 U-big\n")
        .workload(&signed)
        .start();
    let spec = vm_spec("big", "U-big", &ca).memory_mib(192);
    let o = boot_spec(&h, &mut server, "big", &spec);
    assert_eq!(o.report["event"], "delivered", "{}", o.report);
    assert!(
        o.console
            .contains(&format!("workload: {} bytes received", good.len())),
        "{}",
        o.console
    );
    // The stand-in kernel saw the initrd the loader placed below the staged container.
    assert!(
        o.console.contains(
            "tvp-bzimage: loader=0xff cmdline=console=ttyS0 e820=03 initrd=TVP-INITRD-LARGE"
        ),
        "{}",
        o.console
    );
    assert_eq!(o.vm["state"], "destroyed", "{}", o.vm);
    assert_eq!(o.vm["handover_digest"], o.report["workload_digest"]);
}

#[test]
fn a_workload_larger_than_the_vms_window_is_refused_before_attestation_and_transfer() {
    require!(
        Need::Netns,
        "swtpm",
        "swtpm_setup",
        "ip",
        "openssl",
        "gcc",
        "objcopy"
    );
    let ns = NetNs::create("toolarge");
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    // A 64 MiB VM's window is [32 MiB, 64 MiB): a 40 MiB bundle does not fit.
    let signed = sign_linux(
        &ten,
        &test_bzimage(&ten),
        "console=ttyS0",
        &initrd(40 << 20),
    )
    .unwrap();
    let len = std::fs::metadata(&signed).unwrap().len();
    let mut server = BootServer::builder(&ns, &h, &ten)
        .reservations("10.0.0.2 U-big\n")
        .workload(&signed)
        .start();
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    let spec = vm_spec("big", "U-big", &ca).memory_mib(64);
    let o = boot_spec(&h, &mut server, "big", &spec);
    o.assert_refused("reservation-refused", 8, "workload-too-large");
    assert!(
        o.console
            .contains("boot server: REFUSED workload-too-large"),
        "{}",
        o.console
    );
    assert_eq!(o.report["workload_bytes"], len, "{}", o.report);
    assert_eq!(o.report["workload_capacity"], 32u64 << 20, "{}", o.report);
    // Refused at the page check: no nonce was sent, so no attestation, no transfer.
    assert!(o.report.get("nonce").is_none(), "{}", o.report);
    assert!(!o.console.contains("bytes received"), "{}", o.console);
}
