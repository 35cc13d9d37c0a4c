//! The boot server checks what the tenant's reservation states about the VM, and a
//! reservation is spent only by a delivery (issue 15, items 2 and 5), end to end on
//! real KVM, swtpm, TAP and the real firmware (`docs/boot-server.md`):
//! - a VM whose memory size, image, disk, TPM, management key or policy is not what its
//!   reservation states is refused with that field named (report and firmware
//!   console), and the VM as reserved still boots;
//! - clients that know U and fail do not burn the reservation: the genuine VM boots
//!   afterwards, once;
//! - failed attempts are bounded: after N, the reservation is refused
//!   (`too-many-failures`) even for the genuine VM;
//! - a restarted boot server keeps both from its ledger.

use serde_json::json;
use tvp_tests::netboot::*;
use tvp_tests::{require, Need};

/// The shared tenant's CA, read from its files.
fn ca_of(t: &TenantFiles) -> String {
    std::fs::read_to_string(t.dir.join("ca.pem")).unwrap()
}

/// Another management key (a cloud manager's own, to authorize operations itself).
fn impostor() -> tvp_tests::Tenant {
    tvp_tests::Tenant::new(
        &["pause", "resume", "power-off", "reboot", "delete"],
        "power-off",
    )
}

#[test]
fn a_vm_whose_memory_management_key_or_policy_is_not_the_reservations_is_refused_naming_the_field()
{
    require!(Need::Netns, "swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let ns = NetNs::create("fields");
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = ca_of(&ten);
    let mut server = BootServer::builder(&ns, &h, &ten)
        .expect_memory(64)
        .expect_vcpus(1)
        .expect_image(None)
        .reservations(
            "10.0.0.2 U-mem memory=128 vcpus=1 image=none disk=none management=tenant\n\
             10.0.0.2 U-key\n10.0.0.2 U-pol\n10.0.0.2 U-ok\n",
        )
        .connections(4)
        .start();

    // The administrator gives the VM 64 MiB where the tenant reserved 128: refused at
    // the page check, before attestation.
    let o = boot(&h, &mut server, "f-mem", "U-mem", &ca);
    o.assert_refused("reservation-refused", 8, "config-mismatch:memory");
    assert_eq!(o.report["field"], "memory", "{}", o.report);
    assert_eq!(o.report["expected"], "128 MiB");
    assert_eq!(o.report["found"], "64 MiB");
    assert!(o
        .console
        .contains("boot server: REFUSED config-mismatch:memory"));

    // Its own management key: the management event (bound by the quote) is not the
    // tenant's, and tvpd's description names another key.
    let other = impostor();
    let o = boot_spec(
        &h,
        &mut server,
        "f-key",
        &vm_spec("f-key", "U-key", &ca).managed_by(&other),
    );
    o.assert_refused("attestation-rejected", 10, "config-mismatch:management-key");
    assert_eq!(o.report["field"], "management-key", "{}", o.report);
    let shared_id = tvp_tests::Tenant::shared().signer.public().key_id();
    let other_id = other.signer.public().key_id();
    assert_eq!(o.report["expected"], format!("key {shared_id}"));
    assert!(
        o.report["found"].as_str().unwrap().contains(&other_id),
        "{}",
        o.report
    );

    // The tenant's key with a weaker policy (plaintext images allowed).
    let o = boot_spec(
        &h,
        &mut server,
        "f-pol",
        &vm_spec("f-pol", "U-pol", &ca).policy_with(json!({"allow_plaintext_images": true})),
    );
    o.assert_refused("attestation-rejected", 10, "config-mismatch:policy");
    assert_eq!(o.report["field"], "policy", "{}", o.report);

    // The VM as reserved boots.
    let o = boot(&h, &mut server, "f-ok", "U-ok", &ca);
    assert_eq!(o.report["event"], "delivered", "{}", o.report);
    assert!(o.workload_ran(), "{}", o.console);
}

#[test]
fn a_vm_given_an_image_the_reservation_does_not_name_is_refused_and_the_named_image_boots() {
    require!(Need::Netns, "swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let ns = NetNs::create("image");
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    // An image the administrator attaches (plaintext, so no key service is needed;
    // the VM's policy allows it, and these reservations accept any management).
    let image = b"AN-IMAGE-FROM-THE-ADMINISTRATORS-KEY-SERVICE".repeat(1000);
    std::fs::write(images.join("admin.img"), &image).unwrap();
    let digest = hex::encode(tvp_abi::measure::sha256(&image));
    let h = host_with(&ns, dir.path(), &["--image-dir", images.to_str().unwrap()]);
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = ca_of(&ten);
    let mut server = BootServer::builder(&ns, &h, &ten)
        .any_management()
        .expect_image(None)
        .reservations(&format!(
            "10.0.0.2 U-none\n10.0.0.2 U-named memory=any vcpus=any image={digest} disk=none management=any\n"
        ))
        .connections(2)
        .start();
    let with_image = |id: &str, u: &str| {
        vm_spec(id, u, &ca)
            .set("image", json!({"path": "admin.img"}))
            .policy_with(json!({"allow_plaintext_images": true}))
    };

    // The tenant reserved a VM without an image.
    let o = boot_spec(&h, &mut server, "i-1", &with_image("i-1", "U-none"));
    o.assert_refused("reservation-refused", 8, "config-mismatch:image");
    assert_eq!(o.report["expected"], "no image", "{}", o.report);
    assert_eq!(o.report["found"], format!("image sha256 {digest}"));

    // A reservation naming this very image accepts it.
    let o = boot_spec(&h, &mut server, "i-2", &with_image("i-2", "U-named"));
    assert_eq!(o.report["event"], "delivered", "{}", o.report);
    assert!(o.workload_ran(), "{}", o.console);
}

/// Issue #20: whether the VM has a TPM of its own is in the page (flag bit 2, and the
/// measured ACPI tables), so the reservation states it (`tpm=`, `no` when absent). A
/// host that gives the VM a TPM the tenant did not reserve (one the host runs, which
/// the tenant's OS might trust) is refused naming `tpm`; a reservation with `tpm=yes`
/// boots the same VM.
#[test]
fn a_vm_given_a_tpm_the_reservation_does_not_state_is_refused_and_a_reserved_one_boots() {
    require!(Need::Netns, "swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let ns = NetNs::create("vtpm");
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = ca_of(&ten);
    let mut server = BootServer::builder(&ns, &h, &ten)
        .any_management()
        .expect_image(None)
        .reservations(
            "10.0.0.2 U-none\n10.0.0.2 U-tpm memory=any vcpus=any image=none disk=none management=any tpm=yes\n",
        )
        .connections(2)
        .start();
    let with_tpm = |id: &str, u: &str| vm_spec(id, u, &ca).set("vtpm", json!(true));

    let o = boot_spec(&h, &mut server, "t-1", &with_tpm("t-1", "U-none"));
    o.assert_refused("reservation-refused", 8, "config-mismatch:tpm");
    assert_eq!(o.report["expected"], "no TPM", "{}", o.report);
    assert_eq!(o.report["found"], "a TPM of its own", "{}", o.report);

    let o = boot_spec(&h, &mut server, "t-2", &with_tpm("t-2", "U-tpm"));
    assert_eq!(o.report["event"], "delivered", "{}", o.report);
    // Its TPM's quote checked with the host's evidence (deep evidence).
    assert_eq!(o.report["vtpm_quote"], "verified", "{}", o.report);
    assert!(o.workload_ran(), "{}", o.console);
}

/// Issue #17: the disk is in the page (its header's SHA-256), so the tenant's
/// reservation states which disk its VM may be given. An administrator who gives the VM
/// another disk (here: another of the tenant's encrypted disks, whose key the service
/// releases) is refused at the page check naming `disk`; the reserved disk boots.
#[test]
fn a_vm_given_a_disk_the_reservation_does_not_name_is_refused_and_the_named_disk_boots() {
    require!(Need::Netns, "swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let ns = NetNs::create("disk");
    let dir = tempfile::tempdir().unwrap();
    let disks = dir.path().join("disks");
    std::fs::create_dir_all(&disks).unwrap();
    tvp_tests::encrypted_image(&disks, &b"THE-TENANT-S-RESERVED-DISK".repeat(2000));
    let d = |n: &str| disks.join(n).to_str().unwrap().to_string();
    std::fs::write(d("other"), b"ANOTHER-DISK-OF-THE-TENANT".repeat(2000)).unwrap();
    let tvpctl = |args: &[&str]| {
        let o = std::process::Command::new(tvp_tests::bin("tvpctl"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    tvpctl(&[
        "image",
        "encrypt",
        &d("other"),
        &d("other.enc"),
        "--kms-pub",
        &d("kms.pub"),
    ]);
    let header = |f: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&tvpctl(&["--json", "image", "inspect", &d(f)])).unwrap();
        v["header_digest"].as_str().unwrap().to_string()
    };
    let (reserved, other) = (header("img.enc"), header("other.enc"));
    let h = host_with(&ns, dir.path(), &["--image-dir", disks.to_str().unwrap()]);
    let inventory: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&h.inventory).unwrap()).unwrap();
    let kms = tvp_tests::kms::Kms::start(&disks, &disks.join("kms.key"), &inventory, "kms");
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = ca_of(&ten);
    let mut server = BootServer::builder(&ns, &h, &ten)
        .expect_image(None)
        .expect_disk(Some(&reserved))
        .reservations("10.0.0.2 U-other\n10.0.0.2 U-named\n")
        .connections(2)
        .start();
    let with_disk = |id: &str, u: &str, disk: &str| vm_spec(id, u, &ca).disk(disk, &kms.socket);

    // Another disk than the reserved one: refused naming the field and both digests.
    let o = boot_spec(
        &h,
        &mut server,
        "k-1",
        &with_disk("k-1", "U-other", "other.enc"),
    );
    o.assert_refused("reservation-refused", 8, "config-mismatch:disk");
    assert_eq!(o.report["field"], "disk", "{}", o.report);
    assert_eq!(
        o.report["expected"],
        format!("disk header sha256 {reserved}")
    );
    assert_eq!(o.report["found"], format!("disk header sha256 {other}"));
    assert!(o
        .console
        .contains("boot server: REFUSED config-mismatch:disk"));

    // The reserved disk: delivered, the workload runs.
    let o = boot_spec(
        &h,
        &mut server,
        "k-2",
        &with_disk("k-2", "U-named", "img.enc"),
    );
    assert_eq!(o.report["event"], "delivered", "{}", o.report);
    assert!(o.workload_ran(), "{}", o.console);
}

#[test]
fn clients_that_know_u_and_fail_do_not_burn_the_reservation_the_genuine_vm_boots_afterwards_once() {
    require!(Need::Netns, "swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let ns = NetNs::create("burn");
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = ca_of(&ten);
    let mut server = BootServer::builder(&ns, &h, &ten)
        .expect_memory(64)
        .reservations("10.0.0.2 U-r\n")
        .connections(4)
        .start();

    // Someone who learned U boots a VM of theirs with it: refused at attestation
    // (their management key), and at the page check (other memory).
    let o = boot_spec(
        &h,
        &mut server,
        "b-1",
        &vm_spec("b-1", "U-r", &ca).managed_by(&impostor()),
    );
    o.assert_refused("attestation-rejected", 10, "config-mismatch:management-key");
    let first = o.report;
    let o = boot_spec(
        &h,
        &mut server,
        "b-2",
        &vm_spec("b-2", "U-r", &ca).memory_mib(128),
    );
    o.assert_refused("reservation-refused", 8, "config-mismatch:memory");
    let second = o.report;

    // The genuine VM still boots with it.
    let o = boot(&h, &mut server, "b-3", "U-r", &ca);
    assert_eq!(o.report["event"], "delivered", "{}", o.report);
    assert!(o.workload_ran(), "{}", o.console);
    // Each failed attempt was counted and reported; the delivery spent it.
    assert_eq!(
        (&first["failures"], &first["spent"]),
        (&json!(1), &json!(false)),
        "{first}"
    );
    assert_eq!(second["failures"], 2, "{second}");
    assert_eq!(o.report["failures_before"], 2, "{}", o.report);
    assert_eq!(o.report["spent"], true, "{}", o.report);

    // The delivery spent it.
    boot(&h, &mut server, "b-4", "U-r", &ca).assert_refused(
        "reservation-refused",
        8,
        "reused-auth-code",
    );
}

#[test]
fn after_max_failures_failed_attempts_the_reservation_is_refused_even_for_the_genuine_vm() {
    require!(Need::Netns, "swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let ns = NetNs::create("bound");
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = ca_of(&ten);
    let mut server = BootServer::builder(&ns, &h, &ten)
        .expect_memory(64)
        .max_failures(2)
        .reservations("10.0.0.2 U-n\n")
        .connections(3)
        .start();
    for (i, exhausted) in [(1, false), (2, true)] {
        let id = format!("n-{i}");
        let o = boot_spec(
            &h,
            &mut server,
            &id,
            &vm_spec(&id, "U-n", &ca).memory_mib(128),
        );
        o.assert_refused("reservation-refused", 8, "config-mismatch:memory");
        assert_eq!(o.report["failures"], i, "{}", o.report);
        assert_eq!(o.report["max_failures"], 2, "{}", o.report);
        assert_eq!(o.report["exhausted"].as_bool().unwrap_or(false), exhausted);
    }
    let o = boot(&h, &mut server, "n-3", "U-n", &ca);
    o.assert_refused("reservation-refused", 8, "too-many-failures");
    assert!(
        o.report["detail"]
            .as_str()
            .unwrap()
            .contains("after 2 failed attempts"),
        "{}",
        o.report
    );
    assert!(o.console.contains("boot server: REFUSED too-many-failures"));
}

#[test]
fn a_restarted_boot_server_keeps_spent_reservations_spent_and_failures_counted() {
    // The attack: a reservation's workload was delivered, then the tenant's boot server
    // restarted (a crash, an upgrade). Whoever knows U boots another VM as reserved
    // and, with the spend forgotten, receives the workload a second time; a failure
    // count forgotten likewise lifts the bound on attempts. The ledger keeps both.
    require!(Need::Netns, "swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let ns = NetNs::create("ledger");
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = ca_of(&ten);
    let ledger = dir.path().join("reservations.ledger");
    let server = || {
        BootServer::builder(&ns, &h, &ten)
            .expect_memory(64)
            .max_failures(2)
            .ledger(&ledger)
            .reservations("10.0.0.2 U-s\n10.0.0.2 U-f\n")
            .connections(3)
            .start()
    };
    let mut first = server();
    let o = boot(&h, &mut first, "s-1", "U-s", &ca);
    assert_eq!(o.report["event"], "delivered", "{}", o.report);
    assert!(o.workload_ran(), "{}", o.console);
    let o = boot_spec(
        &h,
        &mut first,
        "f-1",
        &vm_spec("f-1", "U-f", &ca).memory_mib(128),
    );
    o.assert_refused("reservation-refused", 8, "config-mismatch:memory");
    assert_eq!(o.report["failures"], 1, "{}", o.report);
    // The ledger names reservations by their code's digest, never the code itself.
    let text = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains("U-s") && !text.contains("U-f"), "{text}");
    drop(first);

    let mut second = server();
    boot(&h, &mut second, "s-2", "U-s", &ca).assert_refused(
        "reservation-refused",
        8,
        "reused-auth-code",
    );
    // What it started from.
    assert_eq!(
        second.listening["ledger"],
        json!({"path": ledger.display().to_string(), "spent": 1, "failures": 1, "unknown": 0}),
        "{}",
        second.listening
    );
    let o = boot_spec(
        &h,
        &mut second,
        "f-2",
        &vm_spec("f-2", "U-f", &ca).memory_mib(128),
    );
    o.assert_refused("reservation-refused", 8, "config-mismatch:memory");
    assert_eq!(o.report["failures"], 2, "{}", o.report);
    assert_eq!(o.report["exhausted"], true, "{}", o.report);
    boot(&h, &mut second, "f-3", "U-f", &ca).assert_refused(
        "reservation-refused",
        8,
        "too-many-failures",
    );
}
