//! tvpd on a real Linux KVM host whose TPM is swtpm behind QEMU's TPM CRB device and
//! the kernel's resource manager (`scripts/qemu-host.sh`). The scenario's checks run
//! inside the QEMU host; this test asserts every one of them passed.

use std::process::Command;

use tvp_tests::require_tools;

#[test]
fn tvpd_attests_through_the_kernel_tpm_resource_manager_in_a_qemu_kvm_host() {
    require_tools!(
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
    for check in [
        "kvm-device",
        "tpm-resource-manager",
        "tvpd-provisioned-through-tpmrm0",
        "ek-certificate-chains-to-manufacturer-ca",
        "quote-through-tpmrm0",
        "quote-verified-by-tvpctl",
        "quote-verified-by-tpm2_checkquote",
        "measured-vm-attested-and-handed-over",
        "measured-vm-pcr23-as-computed",
        "measured-vm-quoted-through-tpmrm0",
        "audit-anchor-through-tpmrm0",
        "tpm2_pcrread-concurrently-with-tvpd",
        "pcr-16-and-23-zero",
        "tvpd-clean-exit",
    ] {
        assert!(
            err.contains(&format!("TVP-CHECK {check} PASS")),
            "check {check} did not pass:\n{err}"
        );
    }
}
