//! Workloads larger than the firmware's heap (issue #18): the signed container is
//! streamed through the TLS tunnel straight into the top of the VM's workload window,
//! verified there and loaded below it. A 64 MiB Linux bundle (the stand-in bzImage and
//! a 64 MiB initrd) is delivered and handed over; the same bundle with one byte changed
//! at the end of its payload is refused after the transfer; a bundle larger than the
//! VM's workload window is refused by the boot server before attestation and transfer;
//! a boot server that stalls mid-transfer costs the VM its delivery deadline, and the
//! next VM boots meanwhile.
//! Real KVM, swtpm, TAP, tvpd and rustls on both ends.

use tvp_tests::netboot::*;
use tvp_tests::Need;
use tvp_tests::{ended, require, wait_vm};

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
    let LinuxBoot {
        signed,
        ten,
        h,
        dir,
        ns,
    } = linux_boot("large", "console=ttyS0", &initrd(64 << 20));
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
    // A 64 MiB VM's window is [32 MiB, 64 MiB): a 40 MiB bundle does not fit.
    let LinuxBoot {
        signed,
        ten,
        h,
        dir: _dir,
        ns,
    } = linux_boot("toolarge", "console=ttyS0", &initrd(40 << 20));
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

#[test]
fn a_boot_server_that_stalls_mid_transfer_costs_the_vm_its_delivery_deadline_and_nothing_else() {
    require!(
        Need::Netns,
        "swtpm",
        "swtpm_setup",
        "ip",
        "openssl",
        "gcc",
        "objcopy"
    );
    let LinuxBoot {
        signed,
        ten,
        h,
        dir: _dir,
        ns,
    } = linux_boot("midstall", "console=ttyS0", &initrd(12 << 20));
    let mut server = BootServer::builder(&ns, &h, &ten)
        .reservations("10.0.0.3 U-mid\n10.0.0.2 U-after\n")
        .workload(&signed)
        .connections(2)
        .start();
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    // A relay in front of the boot server that passes what the VM sends, and the
    // first 4 MiB of what the server sends (handshake, attestation, the start of the
    // workload), then nothing more: the connection stays open, silent.
    const PASSED: usize = 4 << 20;
    let relay = ns.listen("10.0.0.1:8445");
    let upstream = ns.connect("10.0.0.1:8443");
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let relayed = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut vm, _) = relay.accept().unwrap();
        tvp_tests::netboot::pump(vm.try_clone().unwrap(), upstream.try_clone().unwrap());
        let mut from_server = upstream;
        let (mut n, mut b) = (0usize, vec![0u8; 64 << 10]);
        while n < PASSED {
            let want = (PASSED - n).min(b.len());
            let Ok(k) = from_server.read(&mut b[..want]) else {
                break;
            };
            if k == 0 || vm.write_all(&b[..k]).is_err() {
                break;
            }
            n += k;
        }
        // Hold both ends open until the test is done.
        let _ = held.recv();
        drop((vm, from_server));
        n
    });
    // Its own MAC and address: two VMs with one MAC on the bridge would take each
    // other's frames.
    let spec = vm_spec("mid", "U-mid", &ca)
        .vip("10.0.0.3/24")
        .mac("02:00:00:00:00:03")
        .boot_server("10.0.0.1:8445")
        .phase_deadline_secs("delivery", 6);
    let r = h.t.create_vm(&spec);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // The next VM, straight to the boot server, while the first one's transfer hangs.
    let o = boot(&h, &mut server, "after", "U-after", &ca);
    assert_eq!(o.report["event"], "delivered", "{}", o.report);
    assert!(
        o.console.contains("initrd=TVP-INITRD-LARGE"),
        "the stand-in kernel ran: {}",
        o.console
    );
    let s = wait_vm(&h.t, "mid", ended, BOOT_WITHIN);
    drop(hold);
    assert_eq!(
        relayed.join().unwrap(),
        PASSED,
        "the relay passed its 4 MiB"
    );
    // The stalled VM was attested (one lease, released after its quote), then ran out
    // of its delivery deadline: failed, nothing handed over.
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["reason"], "phase-deadline: delivery exceeded 6 s", "{s}");
    assert!(s["handover_digest"].is_null(), "{s}");
    assert_eq!(s["leases"].as_array().map(Vec::len), Some(1), "{s}");
    // PCRs 16 and 23 are free again.
    let q = h.t.api_json(
        "POST",
        "/v1/host/quote",
        Some(r#"{"nonce":"00","pcrs":[16,23]}"#),
    );
    for p in ["16", "23"] {
        assert_eq!(q["pcrs"]["sha256"][p], "0".repeat(64), "{q}");
    }
}
