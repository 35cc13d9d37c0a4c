//! Out-of-context VMs: a KVM VM created by a process tvpd does not manage is reported
//! by `GET /v1/host/unmanaged-vms` within a bounded time, and disappears when it ends;
//! the tenants of live VMs find both events in their audit trails.

use std::process::{Command, Stdio};
use std::time::Duration;

use tvp_tests::vm::{eventually, poll};
use tvp_tests::{require, Need, Swtpm, Tvpd, VmSpec};

/// How long tvpd's scan may take to notice a VM appear or go.
const WITHIN: Duration = Duration::from_secs(15);
/// How often the test asks.
const SCAN: Duration = Duration::from_millis(100);

fn listed(t: &Tvpd, pid: u32) -> Option<serde_json::Value> {
    let v = t.api_json("GET", "/v1/host/unmanaged-vms", None);
    v.as_array()?.iter().find(|e| e["pid"] == pid).cloned()
}

#[test]
fn a_kvm_vm_created_outside_tvpd_is_reported_and_its_end_noticed() {
    require!(Need::Kvm, "swtpm", "python3");
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &["--kvm-scan-interval-ms", "200"]);
    // A rogue VMM: creates a KVM VM (KVM_CREATE_VM) and keeps it.
    let mut rogue = Command::new("python3")
        .args([
            "-c",
            "import os,fcntl,sys,time\nk=os.open('/dev/kvm',os.O_RDWR)\nvm=fcntl.ioctl(k,0xAE01,0)\nprint(vm,flush=True)\ntime.sleep(120)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn rogue VMM");
    let pid = rogue.id();
    {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(rogue.stdout.as_mut().unwrap()).read_line(&mut line);
        assert!(
            line.trim().parse::<i32>().is_ok(),
            "KVM_CREATE_VM failed: {line}"
        );
    }
    let entry = poll(WITHIN, SCAN, || listed(&t, pid).ok_or(()))
        .unwrap_or_else(|()| panic!("unmanaged VM not reported; log:\n{}", t.log()));
    assert_eq!(entry["kind"], "foreign-kvm");
    assert_eq!(entry["vm_fds"], 1);
    assert!(entry["first_seen"].as_str().unwrap().ends_with('Z'));
    assert!(
        t.log()
            .lines()
            .any(|l| l.contains("unmanaged KVM VM on this host")
                && l.contains(&format!("pid={pid}"))),
        "no log line for the unmanaged VM"
    );
    let _ = rogue.kill();
    let _ = rogue.wait();
    assert!(
        eventually(WITHIN, SCAN, || listed(&t, pid).is_none()),
        "vanished VM still listed"
    );
}

#[test]
fn a_tvp_vmm_started_outside_tvpd_is_reported_as_such() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("rogue");
    let spin = tvp_tests::guests::build_guest("spin", &dir);
    let t = Tvpd::start(
        &tpm,
        &tpm.scratch("a"),
        &[
            "--kvm-scan-interval-ms",
            "200",
            "--firmware",
            spin.to_str().unwrap(),
        ],
    );
    // A tenant's VM on this host (it spins in its firmware).
    let r = t.create_vm(&VmSpec::measured("tenant-vm").auth_code("U-t"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let ca = dir.join("ca.der");
    std::fs::write(&ca, [0x30, 0x03, 0x02, 0x01, 0x01]).unwrap();
    let page = dir.join("config.page");
    let vmm = tvp_tests::bin("tvp-vmm");
    let st = Command::new(&vmm)
        .args([
            "config-page",
            "--vip",
            "10.0.0.2/24",
            "--mac",
            "02:00:00:00:00:09",
        ])
        .args([
            "--boot-server",
            "10.0.0.1:8443",
            "--server-name",
            "boot.example",
        ])
        .args(["--auth-code", "U-rogue", "--ca-cert"])
        .arg(&ca)
        .arg("--out")
        .arg(&page)
        .status()
        .unwrap();
    assert!(st.success());
    // Our own VMM binary, but started by someone else: no create request, no lease.
    let mut rogue = Command::new(&vmm)
        .args(["run", "--vm-id", "rogue", "--standalone", "--firmware"])
        .arg(&spin)
        .arg("--config-page")
        .arg(&page)
        .arg("--console-log")
        .arg(dir.join("console.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = rogue.id();
    let entry = poll(WITHIN, SCAN, || listed(&t, pid).ok_or(()))
        .unwrap_or_else(|()| panic!("rogue tvp-vmm not reported"));
    let _ = rogue.kill();
    let _ = rogue.wait();
    assert_eq!(entry["kind"], "tvp-vmm-outside-tvpd", "{entry}");
    // The tenant learns of it in its audit trail: appeared, then gone.
    let appeared = format!("appeared: tvp-vmm-outside-tvpd pid {pid} ");
    let gone = format!("gone: tvp-vmm-outside-tvpd pid {pid} ");
    poll(WITHIN, SCAN, || {
        let x = t.api_json("GET", "/v1/vms/tenant-vm/audit", None);
        let reasons: Vec<String> = x["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.get("record"))
            .filter(|r| r["op"] == "out-of-context-vm")
            .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
            .collect();
        if reasons.iter().any(|r| r.starts_with(&appeared))
            && reasons.iter().any(|r| r.starts_with(&gone))
        {
            Ok(())
        } else {
            Err(reasons)
        }
    })
    .unwrap_or_else(|reasons| {
        panic!("no out-of-context records for pid {pid} in the tenant's extract: {reasons:?}")
    });
}
