//! Measured VMs through tvpd's API on real KVM and a real swtpm: PCR 23 measurement
//! checked against the value computed from the files, the PCR lease taken only for a
//! quote's TPM steps (one holder at a time, PCRs reset after), the attestation
//! deadline.

use std::time::Duration;

use serde_json::Value;
use tvp_tests::guests::build_guest;
use tvp_tests::phases::{phase_names, states, FULL_BOOT};
use tvp_tests::procfs::{net_device_exists, vmm_alive};
use tvp_tests::vm::{expected_pcr23, poll};
use tvp_tests::{ended, require, state_is, wait_vm, Swtpm, Tenant, Tvpd, VmSpec};

/// How long a VM may take to end.
const TO_END: Duration = Duration::from_secs(60);
/// How long a VM may take to be measured and run its firmware.
const TO_ATTESTING: Duration = Duration::from_secs(20);

/// A measured VM with attestation deadline `deadline` seconds.
fn spec(id: &str, deadline: u64) -> VmSpec {
    VmSpec::measured(id).deadline_secs(deadline)
}

#[test]
fn measured_vm_attests_hands_over_and_releases_the_lease() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = build_guest("happy", &tpm.scratch("guest"));
    let t = Tvpd::start(&tpm, &dir, &["--firmware", fw.to_str().unwrap()]);
    let r = t.create_vm(&spec("vm-1", 60));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "vm-1", ended, TO_END);
    let s = states(&v);
    assert_eq!(s, FULL_BOOT, "{v}");
    assert_eq!(v["reason"], "powered-off");
    assert_eq!(v["measurements"].as_array().unwrap().len(), 7);
    assert_eq!(v["measurements"][4]["event_type"], "acpi-tables");
    assert_eq!(v["measurements"][6]["event_type"], "management");
    // The boot log: every phase in order, each closed, and the handover digest.
    let phases = phase_names(&v);
    assert_eq!(
        phases,
        [
            "queued",
            "measuring",
            "tunnel",
            "attestation",
            "delivery",
            "running"
        ],
        "{v}"
    );
    assert!(v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["ended_at"].is_string()));
    assert_eq!(v["handover_digest"].as_str().unwrap().len(), 64, "{v}");
    // PCR 23 as measured equals what tvpctl computes from the firmware, the page and
    // the tenant's management key and policy.
    let page = dir.join("state/vms/vm-1/config.page");
    assert_eq!(v["pcr23"], expected_pcr23(&t, &fw, &page, Tenant::shared()));
    t.assert_leased_pcrs_free();
    assert!(t.log().contains("tunnel measurement recorded for PCR 16"));
    assert!(t.log().contains("quote for the lease holder"));
    // One quote, one lease, held for the TPM steps only.
    let leases = v["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 1, "{v}");
    let held = leases[0]["held_us"].as_u64().unwrap();
    assert!(held > 0 && held < 5_000_000, "{v}");
    // Errors name the field; duplicates and unknown VMs are refused.
    let bad = t.create_vm(&spec("Bad_Id", 60));
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("id:"));
    assert_eq!(t.create_vm(&spec("vm-1", 60)).status, 409);
    assert_eq!(t.api("GET", "/v1/vms/nope", None).status, 404);
}

#[test]
fn a_stuck_vm_holds_no_lease_and_vms_created_at_once_hold_it_one_after_another() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let g = tpm.scratch("guest");
    let spin = build_guest("spin", &g);
    let happy = build_guest("happy", &g);
    // The firmware is per tvpd; the spinning guest stands for a boot that never
    // reaches its boot server: it attests until its deadline and holds no lease
    // meanwhile.
    let mut t = Tvpd::start(&tpm, &dir, &["--firmware", spin.to_str().unwrap()]);
    assert_eq!(t.create_vm(&spec("stuck", 3)).status, 201);
    wait_vm(&t, "stuck", state_is("attesting"), TO_ATTESTING);
    t.assert_leased_pcrs_free();
    assert!(t.vm("stuck")["lease_position"].is_null());
    let v = wait_vm(&t, "stuck", ended, TO_END);
    assert_eq!(v["state"], "failed");
    assert_eq!(v["reason"], "attestation-deadline");
    t.assert_leased_pcrs_free();
    assert_eq!(t.stop(), Some(0), "tvpd must stop cleanly with VMs gone");

    // Three at once: they boot side by side and hold the lease one after another.
    let dir2 = tpm.scratch("b");
    t = Tvpd::start(&tpm, &dir2, &["--firmware", happy.to_str().unwrap()]);
    for id in ["q-1", "q-2", "q-3"] {
        assert_eq!(t.create_vm(&spec(id, 60)).status, 201);
    }
    let views: Vec<Value> = ["q-1", "q-2", "q-3"]
        .iter()
        .map(|id| wait_vm(&t, id, ended, TO_END))
        .collect();
    let mut leases: Vec<(u64, u64)> = Vec::new();
    for v in &views {
        assert_eq!(states(v), FULL_BOOT, "{v}");
        let held = v["leases"].as_array().unwrap();
        assert_eq!(held.len(), 1, "{v}");
        let at = held[0]["granted_unix_us"].as_u64().unwrap();
        leases.push((at, at + held[0]["held_us"].as_u64().unwrap()));
    }
    leases.sort();
    for w in leases.windows(2) {
        assert!(w[0].1 <= w[1].0, "leases overlapped: {w:?}");
    }
    t.assert_leased_pcrs_free();
}

#[test]
fn a_stale_lease_is_reset_at_start_and_own_vms_are_not_unmanaged() {
    require!("swtpm", "gcc", "ld", "tpm2_pcrextend");
    let (tpm, mut t) = tvpd_with_guest("spin", &["--kvm-scan-interval-ms", "100"]);
    assert_eq!(t.create_vm(&spec("holder", 60)).status, 201);
    wait_vm(&t, "holder", state_is("attesting"), TO_ATTESTING);
    // While it runs, tvpd's own VMM is not reported as unmanaged.
    std::thread::sleep(Duration::from_millis(400));
    let pid = t.api_json("GET", "/v1/vms/holder", None)["pid"]
        .as_u64()
        .unwrap();
    t.assert_not_unmanaged(pid);
    // An attesting VM holds no lease: PCRs 16 and 23 are free.
    t.assert_leased_pcrs_free();
    // The VM has its TAP device, up, named under this tvpd's prefix.
    let tap = t.api_json("GET", "/v1/vms/holder", None)["tap"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tap.starts_with(&t.tap_prefix), "{tap}");
    assert!(net_device_exists(&tap));
    let flags = std::fs::read_to_string(format!("/sys/class/net/{tap}/flags")).unwrap();
    assert_eq!(
        u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap() & 1,
        1
    );
    // A TAP device left by an earlier tvpd without a record is an orphan too.
    let stray = format!("{}strayx", t.tap_prefix);
    let made = std::process::Command::new("ip")
        .args(["tuntap", "add", "dev", &stray, "mode", "tap"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    t.crash();
    // A lease a crash left (tvpd killed inside a quote's TPM steps): values in 16/23.
    for pcr in [16, 23] {
        let out = std::process::Command::new("tpm2_pcrextend")
            .args(["-T", &tpm.tools_tcti()])
            .arg(format!("{pcr}:sha256={}", "ab".repeat(32)))
            .output()
            .expect("tpm2_pcrextend");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ev = tpm2_pcrread(&tpm);
    assert!(
        !ev.contains(&"0".repeat(64)),
        "stale values not in place: {ev}"
    );
    t.start_again();
    t.assert_leased_pcrs_free();
    assert!(t.log().contains("PCRs 16 and 23 reset"));
    // Recovery: no orphaned VMM, no orphaned TAP device, the state says what happened.
    assert!(!vmm_alive(pid, "holder"), "orphaned tvp-vmm {pid}");
    assert!(!net_device_exists(&tap), "orphaned TAP {tap}");
    if made {
        assert!(!net_device_exists(&stray), "stray TAP {stray} not deleted");
    }
    let v = t.api_json("GET", "/v1/vms/holder", None);
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["reason"], "tvpd-restarted", "{v}");
    assert!(v["pid"].is_null() && v["tap"].is_null(), "{v}");
    // It is served again: the ended VM is forgotten on DELETE and its id reused.
    assert_eq!(t.delete_vm("holder", Tenant::shared()).status, 200);
    assert_eq!(t.api("GET", "/v1/vms/holder", None).status, 404);
    assert_eq!(t.create_vm(&spec("holder", 60)).status, 201);
    wait_vm(&t, "holder", state_is("attesting"), TO_ATTESTING);
}

#[test]
fn sigterm_stops_live_vms_releases_the_lease_and_deletes_their_taps() {
    require!("swtpm", "gcc", "ld");
    let (_tpm, mut t) = tvpd_with_guest("spin", &[]);
    for id in ["first", "second"] {
        assert_eq!(t.create_vm(&spec(id, 60)).status, 201);
    }
    wait_vm(&t, "first", state_is("attesting"), TO_ATTESTING);
    let live: Vec<(u32, String, String)> = ["first", "second"]
        .iter()
        .map(|id| {
            let v = t.api_json("GET", &format!("/v1/vms/{id}"), None);
            (
                v["pid"].as_u64().unwrap() as u32,
                v["tap"].as_str().unwrap().to_string(),
                id.to_string(),
            )
        })
        .collect();
    assert_eq!(t.stop(), Some(0), "{}", t.log());
    for (pid, tap, id) in &live {
        assert!(!vmm_alive(*pid, id), "tvp-vmm of {id} survived SIGTERM");
        assert!(
            !net_device_exists(tap),
            "TAP {tap} of {id} survived SIGTERM"
        );
    }
    t.start_again();
    t.assert_leased_pcrs_free();
    for id in ["first", "second"] {
        let v = t.api_json("GET", &format!("/v1/vms/{id}"), None);
        assert_eq!(v["state"], "destroyed", "{v}");
        assert_eq!(v["reason"], "tvpd-stopped", "{v}");
    }
}

/// PCRs 16 and 23 as `tpm2_pcrread` prints them (with tvpd down).
fn tpm2_pcrread(tpm: &Swtpm) -> String {
    let out = std::process::Command::new("tpm2_pcrread")
        .args(["-T", &tpm.tools_tcti(), "sha256:16,23"])
        .output()
        .expect("tpm2_pcrread");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

/// A swtpm and a tvpd whose measured VMs boot the test guest `guest`, with `extra` flags.
fn tvpd_with_guest(guest: &str, extra: &[&str]) -> (Swtpm, Tvpd) {
    let tpm = Swtpm::blank();
    let fw = build_guest(guest, &tpm.scratch("guest"));
    let args = [&["--firmware", fw.to_str().unwrap()][..], extra].concat();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &args);
    (tpm, t)
}

#[test]
fn a_guest_reboot_after_the_handover_ends_the_vm_and_never_reruns_it() {
    require!("swtpm", "gcc", "ld");
    // The guest attests, is handed over, then writes the ACPI reset register.
    let (_tpm, t) = tvpd_with_guest("happy_reboot", &[]);
    let r = t.create_vm(&spec("vm-rb", 60));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "vm-rb", ended, TO_END);
    assert_eq!(v["state"], "destroyed", "{v}");
    assert_eq!(v["reason"], "reboot-requested", "{v}");
    // It ran once: one handover, one `running`, and it stays ended (tvpd restarts
    // nothing by itself; a new boot is a new, attested one).
    let running = |v: &Value| states(v).iter().filter(|s| *s == "running").count();
    assert_eq!(running(&v), 1, "{v}");
    std::thread::sleep(Duration::from_secs(2));
    let again = t.api("GET", "/v1/vms/vm-rb", None);
    let v2: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(v2["state"], "destroyed", "{v2}");
    assert_eq!(running(&v2), 1, "{v2}");
    t.assert_leased_pcrs_free();
}

#[test]
fn a_vmm_syscall_outside_its_filter_kills_it_and_tvpd_names_the_reason() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let g = tpm.scratch("guest");
    let spin = build_guest("spin", &g);
    // The real tvp-vmm, told to make a forbidden syscall once it is locked down.
    let wrapper = g.join("tvp-vmm-fault");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} \"$@\" --fault-forbidden-syscall\n",
            tvp_tests::bin("tvp-vmm").display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", wrapper.to_str().unwrap()])
        .status()
        .unwrap();
    let t = Tvpd::start(
        &tpm,
        &tpm.scratch("a"),
        &[
            "--firmware",
            spin.to_str().unwrap(),
            "--vmm-binary",
            wrapper.to_str().unwrap(),
        ],
    );
    assert_eq!(t.create_vm(&spec("victim", 60)).status, 201);
    let v = wait_vm(&t, "victim", ended, TO_END);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("seccomp filter (SIGSYS)"),
        "{v}"
    );
    assert!(
        t.log().contains("killed by its seccomp filter"),
        "{}",
        t.log()
    );
    t.assert_leased_pcrs_free();
}

/// Whether a process running as uid/gid 65534 can open `/proc/<pid>/mem`.
fn nobody_can_open_mem(pid: u32) -> (bool, String) {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!("exec 3</proc/{pid}/mem && echo opened"))
        .output()
        .expect("setpriv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text.contains("opened"), text)
}

#[test]
fn the_vmm_drops_to_its_user_and_its_memory_is_closed_even_to_that_user() {
    require!("swtpm", "gcc", "ld", "setpriv");
    let (_tpm, t) = tvpd_with_guest("spin", &["--vmm-user", "65534:65534"]);
    assert_eq!(t.create_vm(&spec("locked", 60)).status, 201);
    let pid = wait_vm(&t, "locked", state_is("attesting"), TO_ATTESTING)["pid"]
        .as_u64()
        .unwrap() as u32;
    // The guest runs; wait until the VMM has dropped its privileges (the assertion
    // below shows the line if it never does).
    let uid_line = poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_string();
        if line.contains("\t0\t") {
            Err(line)
        } else {
            Ok(line)
        }
    })
    .unwrap_or_else(|line| line);
    let ids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert_eq!(ids, ["65534"; 4], "{uid_line}");
    let groups = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let supplementary = groups
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .unwrap()
        .trim_start_matches("Groups:")
        .trim()
        .to_string();
    assert_eq!(supplementary, "", "{groups}");
    // Control: a process of the same user can open another of its processes' memory...
    let mut control = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (opened, text) = nobody_can_open_mem(control.id());
    let _ = control.kill();
    let _ = control.wait();
    assert!(opened, "control process memory not openable: {text}");
    // ...but not the non-dumpable VMM's, although it runs as that very user.
    let (opened, text) = nobody_can_open_mem(pid);
    assert!(!opened, "VMM memory readable by uid 65534: {text}");
    assert!(text.contains("Permission denied"), "{text}");
    assert_eq!(t.delete_vm("locked", Tenant::shared()).status, 200);
    wait_vm(&t, "locked", ended, TO_END);
}

#[test]
fn a_boot_phase_that_overruns_its_deadline_aborts_cleanly_and_the_next_vm_proceeds() {
    require!("swtpm", "gcc", "ld");
    let (_tpm, t) = tvpd_with_guest("spin", &[]);
    // The spinning guest never measures a tunnel: its 2-second tunnel phase runs out
    // long before the 60-second attestation deadline.
    let stuck = spec("stuck", 60).phase_deadline_secs("tunnel", 2);
    assert_eq!(t.create_vm(&stuck).status, 201);
    assert_eq!(t.create_vm(&spec("next", 60)).status, 201);
    let v = wait_vm(&t, "stuck", ended, TO_END);
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["reason"], "phase-deadline: tunnel exceeded 2 s", "{v}");
    let phases = phase_names(&v);
    assert_eq!(phases, ["queued", "measuring", "tunnel"], "{v}");
    assert!(v["phases"][2]["ended_at"].is_string(), "{v}");
    assert!(v["handover_digest"].is_null());
    // The next VM is measured and runs its firmware (it never waited for the stuck one).
    wait_vm(&t, "next", state_is("attesting"), TO_ATTESTING);
    // A bad phase deadline is refused, naming it.
    let bad = spec("bad", 60).phase_deadline_secs("delivery", 0);
    let r = t.create_vm(&bad);
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("phase_deadlines_secs.delivery"));
}

#[test]
fn mailbox_requests_before_the_firmware_starts_are_refused_and_logged() {
    require!("swtpm", "gcc", "ld");
    // tvp-test-vmm plays a compromised VMM for ids starting with "hostile" (quote and
    // tunnel requests before its measurements are done, so before tvpd can have
    // started it) and runs the real tvp-vmm otherwise.
    let (_tpm, t) = tvpd_with_guest(
        "spin",
        &[
            "--vmm-binary",
            tvp_tests::bin("tvp-test-vmm").to_str().unwrap(),
        ],
    );
    assert_eq!(t.create_vm(&spec("holder", 3)).status, 201);
    wait_vm(&t, "holder", state_is("attesting"), TO_ATTESTING);
    assert_eq!(t.create_vm(&spec("hostile", 60)).status, 201);
    let v = wait_vm(&t, "hostile", ended, TO_END);
    let console = std::fs::read_to_string(t.state_dir.join("vms/hostile/console.log")).unwrap();
    let replies: Vec<Value> = console
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Before the start: refused with code 2 (out of order), and the VM destroyed for
    // it, its VMM killed at once (it may not have got to log the refusal);
    // tests/tests/hostile_vmm.rs has the other attacks.
    assert!(
        replies
            .iter()
            .all(|r| r["type"] == "refused" && r["request_id"] == 1 && r["code"] == 2),
        "{console}"
    );
    assert_eq!(
        v["reason"], "vmm-protocol-violation: 'quote-request' before tvpd started the firmware",
        "{v}"
    );
    assert_eq!(v["leases"], serde_json::json!([]), "{v}");
    let holder = wait_vm(&t, "holder", ended, TO_END);
    assert_eq!(holder["reason"], "attestation-deadline");
    let log = t.log();
    assert!(
        log.lines()
            .any(|l| l.contains("before tvpd started the firmware") && l.contains("hostile")),
        "{log}"
    );
    t.assert_leased_pcrs_free();
}

#[test]
fn a_measured_vm_with_two_vcpus_attests_and_hands_over_and_one_with_65_is_refused() {
    // Issue #17: vcpus from the spec reaches the measured page and tvp-vmm runs that
    // many vCPU threads (the second waits for a start-up IPI; vmm-hooks/tests/smp.rs).
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = build_guest("happy", &tpm.scratch("guest"));
    let t = Tvpd::start(&tpm, &dir, &["--firmware", fw.to_str().unwrap()]);
    let r = t.create_vm(&spec("smp", 60).set("vcpus", serde_json::json!(2)));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "smp", ended, TO_END);
    assert_eq!(states(&v), FULL_BOOT, "{v}");
    assert_eq!(v["reason"], "powered-off", "{v}");
    let page = dir.join("state/vms/smp/config.page");
    let cfg = std::fs::read(&page).unwrap();
    assert_eq!(tvp_abi::config::decode(&cfg).unwrap().vcpus, 2);
    assert_eq!(v["pcr23"], expected_pcr23(&t, &fw, &page, Tenant::shared()));
    t.assert_leased_pcrs_free();
    let bad = t.create_vm(&spec("smp-65", 60).set("vcpus", serde_json::json!(65)));
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("vcpus"));
}
