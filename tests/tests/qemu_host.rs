//! tvpd on a real Linux KVM host whose TPM is swtpm behind QEMU's TPM CRB device and
//! the kernel's resource manager (`scripts/qemu-host.sh`). The scenario's checks run
//! inside the QEMU host, among them the full measured network boot with the tenant's
//! boot server in a network namespace of its own; this test asserts every one of them
//! passed.

use std::process::Command;

use tvp_tests::require;

#[test]
fn tvpd_attests_through_the_kernel_tpm_resource_manager_in_a_qemu_kvm_host() {
    require!(
        "qemu-system-x86_64",
        "swtpm",
        "swtpm_setup",
        "busybox",
        "cpio"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/qemu-host.sh"))
        .args(["--profile", "debug", "--no-build"])
        .current_dir(&root)
        .output()
        .expect("run scripts/qemu-host.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qemu-host.sh failed:\n{err}");
    // The figures, for the test log.
    for l in err.lines().filter(|l| {
        l.contains("QEMU host run")
            || l.contains("network boot:")
            || l.contains("session")
            || l.contains("console| workload:")
            || l.contains("Linux network boot")
            || l.contains("console| TVP-GUEST")
    }) {
        eprintln!("{l}");
    }
    for check in [
        "kvm-device",
        "tpm-resource-manager",
        "tenant-netns-and-bridge",
        "tvpd-provisioned-through-tpmrm0",
        "ek-certificate-chains-to-manufacturer-ca",
        "quote-through-tpmrm0",
        "quote-verified-by-tvpctl",
        "quote-verified-by-tpm2_checkquote",
        "inventory-entry",
        "boot-server-in-tenant-netns",
        "boot-server-delivered-workload",
        "workload-ran-after-handover",
        "handover-digest-is-the-delivered-workload",
        "measured-vm-attested-and-handed-over",
        "measured-vm-pcr23-as-computed",
        "measured-vm-quoted-through-tpmrm0",
        "audit-anchor-through-tpmrm0",
        // Issue 18: the 8 MB kernel alone delivered through the tunnel (its delivery
        // phase and transfer printed as the scenario's figure).
        "kernel-alone-delivered",
        // Issue 17: the tenant's Linux (the host's kernel, a busybox initramfs, a
        // command line, signed as one bundle) network-booted in a 2-vCPU VM: its /init
        // runs, sees two CPUs, reaches the boot server over virtio-net (interrupts)
        // and powers off through ACPI.
        "linux-kernel-booted-by-the-firmware",
        "linux-userspace",
        "linux-two-vcpus",
        "linux-network",
        "linux-encrypted-disk",
        "linux-vtpm",
        // Issue 20: the guest's own tpm2-tools on its TPM: a quote with the AK the host
        // certified for this VM (tpm2_checkquote with tvpctl's verified export), that
        // AK named in the attested page (the boot server's report), the certified EK
        // certificate in the guest's NV, the event log, the deep evidence.
        "linux-vtpm-identity",
        "linux-vtpm-tpm2-pcrread",
        "linux-vtpm-guest-quote",
        "linux-vtpm-ak-in-attested-page",
        "linux-vtpm-ek-certificate-in-nv",
        "linux-vtpm-event-log",
        // The firmware's quote of the VM's TPM, verified by the boot server with the
        // host's evidence as one deep evidence document.
        "linux-vtpm-deep-evidence",
        "linux-poweroff",
        "tpm2_pcrread-concurrently-with-tvpd",
        "pcr-16-and-23-zero",
        "tvpd-clean-exit",
        // Issue 15, attack 3: the host's IMA list in the evidence, judged by the
        // tenant's boot server against the inventory's allowlist.
        "ima-measures-the-host",
        "ima-boot-aggregate-is-pcrs-0-9",
        "ima-boot-pcrs-pinned",
        "ima-clean-host-attests",
        "ima-rogue-tpm-use-refused",
    ] {
        assert!(
            err.contains(&format!("TVP-CHECK {check} PASS")),
            "check {check} did not pass:\n{err}"
        );
    }
}
