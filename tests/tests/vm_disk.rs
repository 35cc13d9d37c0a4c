//! The tenant's encrypted disk (`disk` of `POST /v1/vms`, issue #17) end to end on real
//! KVM, swtpm and tvp-kms: tvpd names the disk in the configuration page (its header's
//! SHA-256 and plaintext length, measured into PCR 23 with the page), obtains its key
//! for exactly that VM through the TPM, and passes disk and key (a pipe) to tvp-vmm,
//! which serves it read-only over virtio-blk; a stand-in guest (`guests/diskvm.S`) reads
//! it. The key goes only to a VM the tenant's release policy allows: a caller who gives
//! the tenant's disk and key service to a VM with its own CA or management key gets a
//! refusal naming the check, and no VMM starts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tvp_tests::kms::{assert_release_refused, tvpd_and_inventory, Kms};
use tvp_tests::vm::expected_pcr23;
use tvp_tests::{bin, ended, require, wait_vm, Need, Swtpm, Tenant, Tvpd, VmSpec};

/// How long a VM may take to end.
const TO_END: Duration = Duration::from_secs(60);

/// What the guest prints for its reads of sectors 0 and 16 of the disk below.
const SECTOR_0: &str = "R0 s=00000000 u=00000201 TVP-DISK-SECTOR-0-first-chunk---";
const SECTOR_16: &str = "R0 s=00000000 u=00000201 TVP-DISK-SECTOR-16-third-chunk--";

/// Runs a tool, asserting success; returns its stdout, trimmed.
fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(bin(cmd)).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The tenant's disk in `tenant`: `kms.key`/`kms.pub`, `disk.enc` (three 4 KiB chunks
/// and a partial one, sectors 0, 8 and 16 starting with a marker the guest prints) and
/// the plaintext `disk.raw`; returns `tvpctl --json image inspect disk.enc`.
fn tenant_disk(tenant: &Path) -> Value {
    let p = |n: &str| tenant.join(n).to_str().unwrap().to_string();
    run("tvpctl", &["image", "keygen", &p("kms")]);
    let mut plain: Vec<u8> = (0..3 * 4096 + 1000)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    for (sector, marker) in [
        (0, b"TVP-DISK-SECTOR-0-first-chunk---"),
        (8, b"TVP-DISK-SECTOR-8-second-chunk--"),
        (16, b"TVP-DISK-SECTOR-16-third-chunk--"),
    ] {
        plain[sector * 512..sector * 512 + 32].copy_from_slice(marker);
    }
    std::fs::write(p("disk.raw"), &plain).unwrap();
    run(
        "tvpctl",
        &[
            "image",
            "encrypt",
            &p("disk.raw"),
            &p("disk.enc"),
            "--kms-pub",
            &p("kms.pub"),
            "--chunk-size",
            "4096",
        ],
    );
    serde_json::from_str(&run(
        "tvpctl",
        &["--json", "image", "inspect", &p("disk.enc")],
    ))
    .unwrap()
}

/// A tvpd whose VMs run the diskvm guest as their firmware, with `tenant` as image_dir;
/// returns it, its inventory entry and the guest.
fn host(tpm: &Swtpm, dir: &Path, tenant: &Path) -> (Tvpd, Value, std::path::PathBuf) {
    let fw = tvp_tests::guests::build_guest("diskvm", &tpm.scratch("guest"));
    let flags = [
        "--image-dir",
        tenant.to_str().unwrap(),
        "--firmware",
        fw.to_str().unwrap(),
    ];
    let (t, inventory) = tvpd_and_inventory(tpm, dir, &flags);
    (t, inventory, fw)
}

/// [`host`] with the tenant's disk made in `tenant` ([`tenant_disk`]); returns tvpd,
/// its inventory entry, the guest and the disk's `image inspect`.
fn host_with_disk(
    tpm: &Swtpm,
    dir: &Path,
    tenant: &Path,
) -> (Tvpd, Value, std::path::PathBuf, Value) {
    let (t, inventory, fw) = host(tpm, dir, tenant);
    (t, inventory, fw, tenant_disk(tenant))
}

fn console(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("state/vms/{id}/console.log"))).unwrap_or_default()
}

#[test]
fn a_vm_created_with_the_tenant_s_disk_reads_it_and_the_page_measures_which_disk_it_is() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let (dir, tenant) = (tpm.scratch("a"), tpm.scratch("tenant"));
    let (t, inventory, fw, inspect) = host_with_disk(&tpm, &dir, &tenant);
    let kms = Kms::start(&tenant, &tenant.join("kms.key"), &inventory, "inv");
    let spec = |id: &str| {
        VmSpec::measured(id)
            .memory_mib(64)
            .deadline_secs(60)
            .disk("disk.enc", &kms.socket)
    };

    // The disk's key is released for this VM, tvp-vmm serves the disk and the guest
    // reads the decrypted sectors.
    let r = t.create_vm(&spec("d1"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "d1", ended, TO_END);
    assert_eq!(v["reason"], "powered-off", "{v}");
    let out = console(&dir, "d1");
    assert!(out.contains(SECTOR_0) && out.contains(SECTOR_16), "{out}");
    // The page names the disk (header SHA-256, plaintext length) and is measured:
    // PCR 23 as measured is what `tvpctl expected-pcrs` computes from firmware and page.
    let page_path = dir.join("state/vms/d1/config.page");
    let page = std::fs::read(&page_path).unwrap();
    let cfg = tvp_abi::config::decode(&page).unwrap();
    let disk = cfg.disk.expect("the page has a disk descriptor");
    assert_eq!(
        hex::encode(disk.header_digest),
        inspect["header_digest"].as_str().unwrap()
    );
    assert_eq!(disk.len, inspect["plaintext_len"].as_u64().unwrap());
    assert!(cfg.image.is_none());
    assert_eq!(
        v["pcr23"],
        expected_pcr23(&t, &fw, &page_path, Tenant::shared())
    );
    let vmm_log = std::fs::read_to_string(dir.join("state/vms/d1/vmm.log")).unwrap();
    assert!(vmm_log.contains("virtio-blk totals"), "{vmm_log}");

    // Refusals before anything starts, naming the field.
    std::fs::copy(tenant.join("disk.raw"), tenant.join("plain.disk")).unwrap();
    let r = t.create_vm(&spec("d2").disk("plain.disk", &kms.socket));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 400, "{text}");
    assert!(
        text.contains("disk plain.disk") && text.contains("not an encrypted tvp image"),
        "{text}"
    );
    // The image's plaintext policy does not govern the disk.
    let r = t.create_vm(
        &spec("d3")
            .disk("plain.disk", &kms.socket)
            .policy_with(json!({"allow_plaintext_images": true})),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = t.create_vm(&spec("d4").disk("disk.enc", Path::new("/tmp/elsewhere.sock")));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 400, "{text}");
    assert!(text.contains("disk.kms_socket"), "{text}");
    let r = t.create_vm(&spec("d5").set("disk", json!({"path": "disk.enc"})));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 422, "{text}");
    assert!(text.contains("kms_socket"), "{text}");
    let r = t.create_vm(&spec("d6").disk("../a/state/vms/d1/config.page", &kms.socket));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    // A tampered first chunk (header intact, so the key is released): tvp-vmm checks
    // chunk 0 before the guest starts and fails the VM, naming the disk.
    let mut enc = std::fs::read(tenant.join("disk.enc")).unwrap();
    let header_len = enc.len() - (3 * (4096 + 16) + 1000 + 16);
    enc[header_len + 100] ^= 1;
    std::fs::write(tenant.join("bad.enc"), &enc).unwrap();
    let r = t.create_vm(&spec("d7").disk("bad.enc", &kms.socket));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "d7", ended, TO_END);
    assert_eq!(v["state"], "failed", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("disk: chunk 0 of 4 fails authentication"),
        "{v}"
    );
    assert!(!console(&dir, "d7").contains("R0"), "the guest ran");
    assert!(v["pcr23"].is_null(), "measured although refused: {v}");

    // A tampered third chunk: the VM runs, its read of sector 16 is an I/O error with
    // no data, and tvpd hears of the tampered chunk.
    let mut enc = std::fs::read(tenant.join("disk.enc")).unwrap();
    enc[header_len + 2 * (4096 + 16) + 40] ^= 1;
    std::fs::write(tenant.join("bad2.enc"), &enc).unwrap();
    let r = t.create_vm(&spec("d8").disk("bad2.enc", &kms.socket));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "d8", ended, TO_END);
    assert_eq!(v["reason"], "powered-off", "{v}");
    let out = console(&dir, "d8");
    assert!(out.contains(SECTOR_0), "{out}");
    assert!(
        out.contains(&format!("R0 s=00000001 u=00000001 {}", ".".repeat(32))),
        "{out}"
    );
    assert!(
        !out.contains("third-chunk"),
        "tampered plaintext reached the guest: {out}"
    );
    assert!(
        t.log()
            .lines()
            .any(|l| l.contains("disk-tamper") && l.contains("chunk=2")),
        "{}",
        t.log()
    );
    // The tenant learns of it from the VM's audit trail, not only from the host's log.
    let tampers: Vec<_> = t
        .audit_records()
        .into_iter()
        .filter(|r| r["op"] == "disk-tamper")
        .collect();
    assert_eq!(tampers.len(), 1, "{tampers:?}");
    assert_eq!(tampers[0]["vm"], "d8", "{tampers:?}");
    assert_eq!(tampers[0]["stage"], "event", "{tampers:?}");
    assert!(
        tampers[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("chunk 2 ")),
        "{tampers:?}"
    );

    for id in ["d2", "d3", "d4", "d5", "d6"] {
        assert_eq!(t.api("GET", &format!("/v1/vms/{id}"), None).status, 404);
        assert!(!dir.join(format!("state/vms/{id}/console.log")).exists());
    }
}

/// Issue #15 attack 1, for the disk: an allowed API caller creates a VM with the
/// tenant's disk and key-management socket but its own tenant CA (hence boot server)
/// or its own management key. The key service refuses the disk's key naming the
/// release policy's check, no VMM starts; the tenant's own VM still reads its disk.
#[test]
fn a_disk_key_goes_only_to_a_vm_the_tenant_s_release_policy_allows() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let (dir, tenant) = (tpm.scratch("a"), tpm.scratch("tenant"));
    let (t, inventory, fw, inspect) = host_with_disk(&tpm, &dir, &tenant);
    let p = |n: &str| tenant.join(n).to_str().unwrap().to_string();
    std::fs::write(p("ca.pem"), tvp_tests::vm::DUMMY_CA_PEM).unwrap();
    std::fs::write(p("mgmt.pem"), Tenant::shared().key_pem()).unwrap();
    std::fs::write(p("policy.json"), Tenant::shared().policy.to_string()).unwrap();
    // The release policy's entry for the disk, keyed by its plaintext digest as an
    // image's is.
    let policy = format!(
        "[[image]]\nimage_digest = \"{}\"\ntenant_ca_sha256 = [\"{}\"]\nmanagement_keys = [\"{}\"]\npolicy_digests = [\"{}\"]\nfirmware_sha256 = [\"{}\"]\n",
        inspect["image_digest"].as_str().unwrap(),
        run("tvp-kms", &["--ca-digest", &p("ca.pem")]),
        run("tvp-kms", &["--key-id", &p("mgmt.pem")]),
        run("tvp-kms", &["--policy-digest", &p("policy.json")]),
        hex::encode(tvp_abi::measure::sha256(&std::fs::read(&fw).unwrap())),
    );
    let kms = Kms::start_with_policy(&tenant, &tenant.join("kms.key"), &inventory, &policy, "t");
    let spec = |id: &str| {
        VmSpec::measured(id)
            .memory_mib(64)
            .deadline_secs(60)
            .disk("disk.enc", &kms.socket)
    };
    let attacker = Tenant::new(
        &["pause", "resume", "power-off", "reboot", "delete"],
        "alert",
    );
    let attacker_ca = "-----BEGIN CERTIFICATE-----\nMAMCAQI=\n-----END CERTIFICATE-----\n";
    for (id, s, check) in [
        (
            "ca",
            spec("ca").tenant_ca_pem(attacker_ca),
            "vm-policy:tenant-ca",
        ),
        (
            "key",
            spec("key").managed_by(&attacker),
            "vm-policy:management-key",
        ),
    ] {
        assert_release_refused(&t, &dir.join("state"), id, &s, check);
    }

    // The tenant's own VM gets the key and reads the disk.
    let r = t.create_vm(&spec("ok"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "ok", ended, TO_END);
    assert_eq!(v["reason"], "powered-off", "{v}");
    let out = console(&dir, "ok");
    assert!(out.contains(SECTOR_0), "{out}");
}
