//! Measured VMs through tvpd's API on real KVM and a real swtpm: the lease, PCR 23
//! measurement checked against the value computed from the files, serialized
//! attestation, release with PCRs reset, the attestation deadline.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tvp_tests::guests::build_guest;
use tvp_tests::phases::{entered, states, FULL_BOOT};
use tvp_tests::{nonce_hex, require_tools, Swtpm, Tenant, Tvpd};

fn spec(id: &str, deadline: u64) -> String {
    let mut s = json!({"id": id, "vip": "10.0.0.2/24", "gateway": "10.0.0.1", "mac": "02:00:00:00:00:01",
        "auth_code": format!("U-{id}"), "boot_server": "10.0.0.1:8443",
        "boot_server_name": "boot.tenant.example",
        "tenant_ca_pem": "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
        "memory_mib": 16, "attestation_deadline_secs": deadline});
    Tenant::shared().add_to_spec(&mut s);
    s.to_string()
}

fn wait_final(t: &Tvpd, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = t.api_json("GET", &format!("/v1/vms/{id}"), None);
        if matches!(v["state"].as_str(), Some("failed" | "destroyed")) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "VM {id} did not finish: {v}\n{}",
            t.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn leased_pcrs_zero(t: &Tvpd) {
    let ev = t.api_json(
        "POST",
        "/v1/host/quote",
        Some(&format!(
            "{{\"nonce\":\"{}\",\"pcrs\":[16,23]}}",
            nonce_hex(8)
        )),
    );
    for p in ["16", "23"] {
        assert_eq!(
            ev["pcrs"]["sha256"][p],
            "00".repeat(32),
            "PCR {p} not reset"
        );
    }
}

#[test]
fn measured_vm_attests_hands_over_and_releases_the_lease() {
    require_tools!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = build_guest("happy", &tpm.scratch("guest"));
    let t = Tvpd::start(&tpm, &dir, &["--firmware", fw.to_str().unwrap()]);
    let r = t.api("POST", "/v1/vms", Some(&spec("vm-1", 60)));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_final(&t, "vm-1");
    let s = states(&v);
    assert_eq!(s, FULL_BOOT, "{v}");
    assert_eq!(v["reason"], "powered-off");
    assert_eq!(v["measurements"].as_array().unwrap().len(), 6);
    assert_eq!(v["measurements"][5]["event_type"], "management");
    // The boot log: every phase in order, each closed, and the handover digest.
    let phases: Vec<&str> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
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
    let key = dir.join("tenant.pem");
    let policy = dir.join("policy.json");
    std::fs::write(&key, Tenant::shared().key_pem()).unwrap();
    std::fs::write(&policy, Tenant::shared().policy.to_string()).unwrap();
    let (code, out, err) = t.tvpctl(&[
        "expected-pcrs",
        "--firmware",
        fw.to_str().unwrap(),
        "--config-page",
        page.to_str().unwrap(),
        "--management-key",
        key.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let expected: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pcr23"], expected["pcrs"]["sha256"]["23"]);
    leased_pcrs_zero(&t);
    assert!(t.log().contains("tunnel measurement extended into PCR 16"));
    assert!(t.log().contains("quote for the lease holder"));
    // Errors name the field; duplicates and unknown VMs are refused.
    let bad = t.api("POST", "/v1/vms", Some(&spec("Bad_Id", 60)));
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("id:"));
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("vm-1", 60))).status,
        409
    );
    assert_eq!(t.api("GET", "/v1/vms/nope", None).status, 404);
}

#[test]
fn vms_queue_for_the_lease_and_a_stuck_one_is_destroyed_at_its_deadline() {
    require_tools!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let g = tpm.scratch("guest");
    let spin = build_guest("spin", &g);
    let happy = build_guest("happy", &g);
    // The firmware is per tvpd; the spinning guest stands for a boot that never
    // reaches its boot server: it holds the lease until its deadline.
    let mut t = Tvpd::start(&tpm, &dir, &["--firmware", spin.to_str().unwrap()]);
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("stuck", 2))).status,
        201
    );
    let v = wait_final(&t, "stuck");
    assert_eq!(v["state"], "failed");
    assert_eq!(v["reason"], "attestation-deadline");
    leased_pcrs_zero(&t);
    assert_eq!(t.stop(), Some(0), "tvpd must stop cleanly with VMs gone");

    // Three at once: they attest one after another, in order.
    let dir2 = tpm.scratch("b");
    t = Tvpd::start(&tpm, &dir2, &["--firmware", happy.to_str().unwrap()]);
    for id in ["q-1", "q-2", "q-3"] {
        assert_eq!(t.api("POST", "/v1/vms", Some(&spec(id, 60))).status, 201);
    }
    let views: Vec<Value> = ["q-1", "q-2", "q-3"]
        .iter()
        .map(|id| wait_final(&t, id))
        .collect();
    let at = entered;
    for w in views.windows(2) {
        assert!(
            at(&w[0], "running") <= at(&w[1], "measuring"),
            "lease overlapped: {} / {}",
            w[0],
            w[1]
        );
    }
    for v in &views {
        assert_eq!(states(v), FULL_BOOT, "{v}");
    }
    leased_pcrs_zero(&t);
}

#[test]
fn a_stale_lease_is_reset_at_start_and_own_vms_are_not_unmanaged() {
    require_tools!("swtpm", "gcc", "ld");
    let (_tpm, mut t) = tvpd_with_guest("spin", &["--kvm-scan-interval-ms", "100"]);
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("holder", 60))).status,
        201
    );
    wait_attesting(&t, "holder");
    // While it runs, tvpd's own VMM is not reported as unmanaged.
    std::thread::sleep(Duration::from_millis(400));
    let pid = t.api_json("GET", "/v1/vms/holder", None)["pid"]
        .as_u64()
        .unwrap();
    let unmanaged = t.api_json("GET", "/v1/host/unmanaged-vms", None);
    assert!(
        unmanaged
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["pid"] != pid),
        "{unmanaged}"
    );
    // PCR 23 holds the VM's measurement; tvpd dies mid-lease.
    let ev = t.api_json(
        "POST",
        "/v1/host/quote",
        Some(&format!("{{\"nonce\":\"{}\",\"pcrs\":[23]}}", nonce_hex(8))),
    );
    assert_ne!(ev["pcrs"]["sha256"]["23"], "00".repeat(32));
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
    t.start_again();
    leased_pcrs_zero(&t);
    assert!(t.log().contains("PCRs 16 and 23 reset"));
    // Recovery: no orphaned VMM, no orphaned TAP device, the state says what happened.
    assert!(!vmm_alive(pid as u32, "holder"), "orphaned tvp-vmm {pid}");
    assert!(!net_device_exists(&tap), "orphaned TAP {tap}");
    if made {
        assert!(!net_device_exists(&stray), "stray TAP {stray} not deleted");
    }
    let v = t.api_json("GET", "/v1/vms/holder", None);
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["reason"], "tvpd-restarted", "{v}");
    assert!(v["pid"].is_null() && v["tap"].is_null(), "{v}");
    // It is served again: the ended VM is forgotten on DELETE and its id reused.
    let token = Tenant::shared().token("holder", "delete", &[]);
    assert_eq!(
        t.api_token("DELETE", "/v1/vms/holder", None, &token).status,
        200
    );
    assert_eq!(t.api("GET", "/v1/vms/holder", None).status, 404);
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("holder", 60))).status,
        201
    );
    wait_attesting(&t, "holder");
}

fn net_device_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Whether `pid` is still a tvp-vmm for VM `id`.
fn vmm_alive(pid: u32, id: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--vm-id" && w[1] == id.as_bytes())
        })
        .unwrap_or(false)
}

#[test]
fn sigterm_stops_live_vms_releases_the_lease_and_deletes_their_taps() {
    require_tools!("swtpm", "gcc", "ld");
    let (_tpm, mut t) = tvpd_with_guest("spin", &[]);
    for id in ["first", "second"] {
        assert_eq!(t.api("POST", "/v1/vms", Some(&spec(id, 60))).status, 201);
    }
    wait_attesting(&t, "first");
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
    leased_pcrs_zero(&t);
    for id in ["first", "second"] {
        let v = t.api_json("GET", &format!("/v1/vms/{id}"), None);
        assert_eq!(v["state"], "destroyed", "{v}");
        assert_eq!(v["reason"], "tvpd-stopped", "{v}");
    }
}

/// A swtpm and a tvpd whose measured VMs boot the test guest `guest`, with `extra` flags.
fn tvpd_with_guest(guest: &str, extra: &[&str]) -> (Swtpm, Tvpd) {
    let tpm = Swtpm::blank();
    let fw = build_guest(guest, &tpm.scratch("guest"));
    let args = [&["--firmware", fw.to_str().unwrap()][..], extra].concat();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &args);
    (tpm, t)
}

/// Wait until VM `id` holds the lease and runs its firmware.
fn wait_attesting(t: &Tvpd, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = t.api_json("GET", &format!("/v1/vms/{id}"), None);
        if v["state"] == "attesting" {
            return v;
        }
        assert!(Instant::now() < deadline, "VM never got the lease: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_vmm_syscall_outside_its_filter_kills_it_and_tvpd_names_the_reason() {
    require_tools!("swtpm", "gcc", "ld");
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
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("victim", 60))).status,
        201
    );
    let v = wait_final(&t, "victim");
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
    leased_pcrs_zero(&t);
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
    require_tools!("swtpm", "gcc", "ld", "setpriv");
    let (_tpm, t) = tvpd_with_guest("spin", &["--vmm-user", "65534:65534"]);
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("locked", 60))).status,
        201
    );
    let pid = wait_attesting(&t, "locked")["pid"].as_u64().unwrap() as u32;
    // The guest runs; wait until the VMM has dropped its privileges.
    let deadline = Instant::now() + Duration::from_secs(10);
    let uid_line = loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_string();
        if !line.contains("\t0\t") || Instant::now() > deadline {
            break line;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
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
    assert_eq!(
        t.api_token(
            "DELETE",
            "/v1/vms/locked",
            None,
            &Tenant::shared().token("locked", "delete", &[]),
        )
        .status,
        200
    );
    wait_final(&t, "locked");
}

#[test]
fn a_boot_phase_that_overruns_its_deadline_aborts_cleanly_and_the_next_vm_proceeds() {
    require_tools!("swtpm", "gcc", "ld");
    let (_tpm, t) = tvpd_with_guest("spin", &[]);
    // The spinning guest never measures a tunnel: its 2-second tunnel phase runs out
    // long before the 60-second attestation deadline.
    let mut stuck: Value = serde_json::from_str(&spec("stuck", 60)).unwrap();
    stuck["phase_deadlines_secs"] = json!({"tunnel": 2});
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&stuck.to_string())).status,
        201
    );
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("next", 60))).status,
        201
    );
    let v = wait_final(&t, "stuck");
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["reason"], "phase-deadline: tunnel exceeded 2 s", "{v}");
    let phases: Vec<&str> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["queued", "measuring", "tunnel"], "{v}");
    assert!(v["phases"][2]["ended_at"].is_string(), "{v}");
    assert!(v["handover_digest"].is_null());
    // The lease passed on: the next VM is measured and runs its firmware.
    wait_attesting(&t, "next");
    // A bad phase deadline is refused, naming it.
    let mut bad: Value = serde_json::from_str(&spec("bad", 60)).unwrap();
    bad["phase_deadlines_secs"] = json!({"delivery": 0});
    let r = t.api("POST", "/v1/vms", Some(&bad.to_string()));
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("phase_deadlines_secs.delivery"));
}

#[test]
fn mailbox_requests_from_a_vm_without_the_lease_are_refused_and_logged() {
    require_tools!("swtpm", "gcc", "ld");
    // tvp-test-vmm plays a compromised VMM for ids starting with "hostile" (quote and
    // tunnel requests before tvpd started it) and runs the real tvp-vmm otherwise.
    let (_tpm, t) = tvpd_with_guest(
        "spin",
        &[
            "--vmm-binary",
            tvp_tests::bin("tvp-test-vmm").to_str().unwrap(),
        ],
    );
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("holder", 3))).status,
        201
    );
    wait_attesting(&t, "holder");
    assert_eq!(
        t.api("POST", "/v1/vms", Some(&spec("hostile", 60))).status,
        201
    );
    let v = wait_final(&t, "hostile");
    let console = std::fs::read_to_string(t.state_dir.join("vms/hostile/console.log")).unwrap();
    let replies: Vec<Value> = console
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Before the lease: both refused with code 1 (not the lease holder).
    assert_eq!(replies[0]["type"], "refused", "{console}");
    assert_eq!(replies[0]["request_id"], 1);
    assert_eq!(replies[0]["code"], 1);
    assert_eq!(replies[1]["type"], "refused", "{console}");
    assert_eq!(replies[1]["request_id"], 2);
    // Then the holder's deadline passed, the lease came, and the same requests worked.
    assert_eq!(replies[2]["type"], "start", "{console}");
    assert_eq!(replies[4]["type"], "evidence", "{console}");
    assert_eq!(v["reason"], "powered-off", "{v}");
    let holder = t.api_json("GET", "/v1/vms/holder", None);
    assert_eq!(holder["reason"], "attestation-deadline");
    let log = t.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("VM does not hold the PCR lease") && l.contains("hostile"))
            .count()
            >= 2,
        "{log}"
    );
    leased_pcrs_zero(&t);
}
