//! Out-of-context VMs: a KVM VM created by a process tvpd does not manage is reported
//! by `GET /v1/host/unmanaged-vms` within a bounded time, and disappears when it ends.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tvp_tests::{require_tools, Swtpm, Tvpd};

fn listed(t: &Tvpd, pid: u32) -> Option<serde_json::Value> {
    let v = t.api_json("GET", "/v1/host/unmanaged-vms", None);
    v.as_array()?.iter().find(|e| e["pid"] == pid).cloned()
}

#[test]
fn a_kvm_vm_created_outside_tvpd_is_reported_and_its_end_noticed() {
    require_tools!("swtpm", "python3");
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
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
    let deadline = Instant::now() + Duration::from_secs(15);
    let entry = loop {
        if let Some(e) = listed(&t, pid) {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "unmanaged VM not reported; log:\n{}",
            t.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
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
    let deadline = Instant::now() + Duration::from_secs(15);
    while listed(&t, pid).is_some() {
        assert!(Instant::now() < deadline, "vanished VM still listed");
        std::thread::sleep(Duration::from_millis(100));
    }
}
