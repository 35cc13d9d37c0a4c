//! A compromised `tvp-vmm` (after a guest escape) against tvpd: tvpd checks every VMM
//! message against its own state machine. `tvp-test-vmm` plays the hostile VMM (its
//! script chosen by the VM id, `tests/bin/test_vmm.rs`); the VM holding the lease
//! beside it runs the real `tvp-vmm` with a guest that never measures a tunnel, so its
//! PCRs 16 and 23 stay as its measuring left them unless someone else touches them.

use std::time::Duration;

use serde_json::Value;
use tvp_tests::guests::build_guest;
use tvp_tests::vm::eventually;
use tvp_tests::{ended, require, state_is, wait_vm, Need, Swtpm, Tvpd, VmSpec};

/// How long a VM may take to end.
const TO_END: Duration = Duration::from_secs(60);
/// How long a VM may take to get the lease and run its firmware.
const TO_ATTESTING: Duration = Duration::from_secs(30);
/// tvpd's grace for a VMM after its VM ended (`END_GRACE`, 5 s), with room for a
/// loaded machine.
const TO_KILLED: Duration = Duration::from_secs(20);
/// Reason prefix of a VM whose VMM broke the channel protocol.
const VIOLATION: &str = "vmm-protocol-violation: ";

/// tvpd with the spinning guest as firmware and `tvp-test-vmm` as its VMM.
fn tvpd() -> (Swtpm, Tvpd) {
    let tpm = Swtpm::blank();
    let fw = build_guest("spin", &tpm.scratch("guest"));
    let t = Tvpd::start(
        &tpm,
        &tpm.scratch("a"),
        &[
            "--firmware",
            fw.to_str().unwrap(),
            "--vmm-binary",
            tvp_tests::bin("tvp-test-vmm").to_str().unwrap(),
        ],
    );
    (tpm, t)
}

fn spec(id: &str) -> VmSpec {
    VmSpec::measured(id).deadline_secs(120)
}

/// Create VM `id`; its VMM's pid.
fn create(t: &Tvpd, id: &str) -> u64 {
    let r = t.create_vm(&spec(id));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["pid"].as_u64().unwrap()
}

/// PCRs 16 and 23 now (hex), through tvpd's host quote.
fn leased_pcrs(t: &Tvpd) -> (String, String) {
    let body = format!(
        "{{\"nonce\":\"{}\",\"pcrs\":[16,23]}}",
        tvp_tests::nonce_hex(8)
    );
    let ev = t.api_json("POST", "/v1/host/quote", Some(&body));
    let pcr = |p: &str| ev["pcrs"]["sha256"][p].as_str().unwrap().to_string();
    (pcr("16"), pcr("23"))
}

/// The holder: the real VMM, measured and its firmware started, waiting for a tunnel
/// that never comes. Returns its view and PCRs 16 and 23 as its lease left them.
fn holder(t: &Tvpd) -> (Value, (String, String)) {
    assert_eq!(t.create_vm(&spec("holder")).status, 201);
    let v = wait_vm(t, "holder", state_is("attesting"), TO_ATTESTING);
    let pcrs = leased_pcrs(t);
    assert_eq!(pcrs.0, "00".repeat(32), "PCR 16 before any tunnel");
    assert_eq!(Some(pcrs.1.as_str()), v["pcr23"].as_str(), "{v}");
    (v, pcrs)
}

/// Whether process `pid` is gone (or is a zombie tvpd has yet to reap).
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn assert_killed(t: &Tvpd, pid: u64) {
    assert!(
        eventually(TO_KILLED, Duration::from_millis(100), || gone(pid)),
        "VMM {pid} still runs; log:\n{}",
        t.log()
    );
}

/// The log line that refused VM `id`'s message of kind `kind`.
fn logged(t: &Tvpd, id: &str, kind: &str, what: &str) -> bool {
    t.log().lines().any(|l| {
        l.contains(what)
            && l.contains(&format!("vm={id}"))
            && l.contains(&format!("message={kind}"))
    })
}

/// The audited state change that ended VM `id`, with its reason.
fn ending_record(t: &Tvpd, id: &str) -> Option<Value> {
    t.audit_records()
        .into_iter()
        .filter(|r| r["vm"] == id && r["op"] == "vm-state-change")
        .find(|r| r["state_after"] == "failed")
}

/// What tvpd sent the hostile VMM (one JSON message per line of its console log).
fn replies(t: &Tvpd, id: &str) -> Vec<Value> {
    let path = t.state_dir.join(format!("vms/{id}/console.log"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_second_measurements_done_during_another_vms_lease_destroys_the_vm_and_leaves_the_pcrs() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let (_tpm, t) = tvpd();
    // The hostile VM boots first and honestly, up to the handover: the lease passes on.
    let id = "hostile-remeasure";
    let pid = create(&t, id);
    wait_vm(&t, id, state_is("running"), TO_ATTESTING);
    let (_, before) = holder(&t);
    // The attack: a second measurements-done, i.e. a second lease start.
    std::fs::write(t.state_dir.join(format!("vms/{id}/go")), "").unwrap();
    let v = wait_vm(&t, id, ended, TO_END);
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(
        v["reason"],
        format!("{VIOLATION}a second measurements-done (the lease start runs once per boot)"),
        "{v}"
    );
    assert_killed(&t, pid);
    // The holder's PCRs are as its own measuring left them, and it attests on.
    assert_eq!(leased_pcrs(&t), before, "the holder's PCRs 16/23 changed");
    assert_eq!(t.vm("holder")["state"], "attesting");
    assert!(
        logged(&t, id, "measurements-done", "VMM message refused"),
        "{}",
        t.log()
    );
    let rec = ending_record(&t, id).expect("the VM's end is audited");
    assert_eq!(rec["reason"], v["reason"], "{rec}");
}

#[test]
fn a_quote_or_tunnel_extend_without_the_lease_destroys_the_vm_and_leaves_the_pcrs() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let (_tpm, t) = tvpd();
    let (_, before) = holder(&t);
    for (id, kind) in [
        ("hostile-quote", "quote-request"),
        ("hostile-tunnel", "tunnel-established"),
    ] {
        let pid = create(&t, id);
        let v = wait_vm(&t, id, ended, TO_END);
        assert_eq!(v["state"], "failed", "{v}");
        assert_eq!(
            v["reason"],
            format!("{VIOLATION}'{kind}' without the PCR lease"),
            "{v}"
        );
        // The VMM was told why (code 1: not the lease holder) and killed at once (it
        // may not have got to log the refusal): never evidence, an ack or a start.
        let r = replies(&t, id);
        assert!(
            r.iter().all(|m| m["type"] == "refused" && m["code"] == 1),
            "{r:?}"
        );
        assert_killed(&t, pid);
        assert!(logged(&t, id, kind, "VMM message refused"), "{}", t.log());
        assert!(ending_record(&t, id).is_some(), "the VM's end is audited");
    }
    assert_eq!(leased_pcrs(&t), before, "the holder's PCRs 16/23 changed");
    assert_eq!(t.vm("holder")["state"], "attesting");
}

#[test]
fn a_vmm_that_reports_boot_failed_and_keeps_running_is_killed_after_the_grace() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let (_tpm, t) = tvpd();
    let id = "hostile-bootfail";
    let pid = create(&t, id);
    let v = wait_vm(&t, id, ended, TO_END);
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["reason"], "boot-failed: firmware reason 7", "{v}");
    // Ended, yet its VMM (which ignores the stop) still runs: tvpd kills it.
    assert!(!gone(pid), "the hostile VMM did not linger");
    assert_killed(&t, pid);
    assert!(
        t.log().lines().any(
            |l| l.contains("the VMM still runs after its VM ended: killing it")
                && l.contains(&format!("vm={id}"))
        ),
        "{}",
        t.log()
    );
    assert!(eventually(TO_KILLED, Duration::from_millis(100), || t
        .vm(id)["pid"]
        .is_null()));
    t.assert_leased_pcrs_free();
    // Nothing of it is left for the unmanaged-VM scan either.
    t.assert_not_unmanaged(pid);
}

#[test]
fn messages_after_the_vmms_exit_are_ignored_logged_and_the_vmm_killed() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let (_tpm, t) = tvpd();
    let id = "hostile-afterexit";
    let pid = create(&t, id);
    let v = wait_vm(&t, id, ended, TO_END);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["reason"].as_str().unwrap().starts_with("Halted"),
        "the VMM's own exit is the reason: {v}"
    );
    assert_killed(&t, pid);
    // Only `start` went to the VMM: the quote and tunnel after its exit got nothing.
    let r = replies(&t, id);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["type"], "start");
    assert!(
        logged(
            &t,
            id,
            "quote-request",
            "VMM message after its reported end ignored"
        ),
        "{}",
        t.log()
    );
    t.assert_leased_pcrs_free();
}
