//! A measured VM's own TPM (`"vtpm": true` in `POST /v1/vms`, issue #20) through tvpd
//! on real KVM: tvpd starts a swtpm for the VM as the VMM's user (state in
//! `vms/<id>/vtpm`, mode 0700, reached without rights on the directories above it),
//! hands its socket to tvp-vmm, which serves it as a TPM CRB device; the stand-in guest
//! (`guests/tpmvm.S`) starts the TPM, extends PCR 16 and reads it back before its
//! attested boot. The page's TPM flag puts the TPM2 table into the measured ACPI
//! tables. swtpm ends with the VM; the state goes with the VM's delete. A VM without
//! `vtpm` has no TPM: the guest reads no device there.

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tvp_tests::{ended, require, wait_vm, Need, Swtpm, Tenant, Tvpd, VmSpec};

/// How long a VM may take to end.
const TO_END: Duration = Duration::from_secs(60);

/// The `pid=` of tvpd's "vTPM: swtpm started" line for VM `id`.
fn swtpm_pid(log: &str, id: &str) -> Option<u32> {
    log.lines()
        .filter(|l| l.contains("vTPM: swtpm started") && l.contains(&format!("vm={id}")))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("pid="))
                .and_then(|p| p.trim_matches('"').parse().ok())
        })
}

#[test]
fn a_vm_with_vtpm_gets_its_own_swtpm_for_its_life_and_the_tables_say_so() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = tvp_tests::guests::build_guest("tpmvm", &tpm.scratch("guest"));
    // VMMs (and so swtpm) run as nobody, as on a host: swtpm must reach its state
    // without any right on the directories above it.
    let t = Tvpd::start(
        &tpm,
        &dir,
        &[
            "--firmware",
            fw.to_str().unwrap(),
            "--vmm-user",
            "65534:65534",
        ],
    );
    let spec = |id: &str| VmSpec::measured(id).deadline_secs(60);

    let r = t.create_vm(&spec("t1").set("vtpm", json!(true)));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "t1", ended, TO_END);
    assert_eq!(v["reason"], "powered-off", "{v}");
    let vm_dir = dir.join("state/vms/t1");
    let console = std::fs::read_to_string(vm_dir.join("console.log")).unwrap();
    // The guest's TPM answered: Startup, Extend, Read succeeded, PCR 16 is the extend
    // of the guest's digest, and the hostile size was refused by the device.
    assert!(console.contains("T g=00000001 i="), "{console}");
    assert!(
        console.contains("T s=00000000 x=00000000 r=00000000"),
        "{console}"
    );
    assert!(console.contains("T b=00000142"), "{console}");
    let digest: Vec<u8> = (1..=32u8).collect();
    let pcr = Sha256::new()
        .chain_update([0u8; 32])
        .chain_update(&digest)
        .finalize();
    let printed: String = console
        .lines()
        .find_map(|l| l.strip_prefix("P "))
        .unwrap_or_else(|| panic!("no PCR line: {console}"))
        .split_whitespace()
        .collect();
    assert_eq!(printed, hex::encode(pcr), "{console}");
    // The measured ACPI tables are the ones with the TPM.
    let acpi = v["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["event_type"] == "acpi-tables")
        .unwrap_or_else(|| panic!("{v}"))["digest"]
        .clone();
    let with = hex::encode(tvp_abi::measure::acpi_tables_digest(1, true).unwrap());
    assert_eq!(acpi, json!(with), "{v}");
    // The VM's swtpm: its state kept private in the VM's directory, ended with the VM.
    let log = t.log();
    let pid = swtpm_pid(&log, "t1").unwrap_or_else(|| panic!("no swtpm start: {log}"));
    let state = vm_dir.join("vtpm");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    use std::os::unix::fs::MetadataExt;
    let files: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .collect();
    assert!(!files.is_empty(), "swtpm kept no state");
    assert!(
        files.iter().all(|m| m.uid() == 65534),
        "the state is written by swtpm as the VMM's user"
    );
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), 65534);
    let t0 = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "swtpm {pid} outlived its VM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Deleting the VM removes its TPM's state.
    let r = t.delete_vm("t1", Tenant::shared());
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    assert!(!state.exists(), "the vTPM state outlived the VM");

    // Without vtpm: no swtpm, the plain tables, and the guest finds no TPM (its reads
    // of the window are all-ones).
    let r = t.create_vm(&spec("t2"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "t2", ended, TO_END);
    assert_eq!(v["reason"], "powered-off", "{v}");
    assert!(swtpm_pid(&t.log(), "t2").is_none());
    let console = std::fs::read_to_string(dir.join("state/vms/t2/console.log")).unwrap();
    assert!(console.contains("T g=ffffffff"), "{console}");
    let without = hex::encode(tvp_abi::measure::acpi_tables_digest(1, false).unwrap());
    assert!(
        v["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["event_type"] == "acpi-tables" && m["digest"] == json!(without)),
        "{v}"
    );
}
