//! A compromised `tvp-vmm` (after a guest escape) against tvpd: tvpd checks every VMM
//! message against its own state machine. `tvp-test-vmm` plays the hostile VMM (its
//! script chosen by the VM id, `tests/bin/test_vmm.rs`); a VM beside it runs the real
//! `tvp-vmm` with a guest that never measures a tunnel. No VM holds PCRs 16 and 23
//! outside its own quote's TPM steps, so they read zero between quotes whatever a
//! VMM says; every quote shows only its own VM's values.

use std::time::Duration;

use serde_json::Value;
use tvp_tests::guests::build_guest;
use tvp_tests::vm::eventually;
use tvp_tests::{ended, require, state_is, wait_vm, Need, Swtpm, Tvpd, VmSpec};
use tvp_verifier::{verify, AkKey, Evidence, VerifyOptions};

/// How long a VM may take to end.
const TO_END: Duration = Duration::from_secs(60);
/// How long a VM may take to be measured and run its firmware.
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

/// PCRs 16 and 23 as no lease leaves them.
fn free() -> (String, String) {
    ("00".repeat(32), "00".repeat(32))
}

/// A bystander: the real VMM, measured and its firmware started, waiting for a tunnel
/// that never comes. It holds no lease: PCRs 16 and 23 read zero. Returns its view.
fn bystander(t: &Tvpd) -> Value {
    assert_eq!(t.create_vm(&spec("bystander")).status, 201);
    let v = wait_vm(t, "bystander", state_is("attesting"), TO_ATTESTING);
    assert_eq!(v["pcr23"].as_str().map(str::len), Some(64), "{v}");
    assert_eq!(
        leased_pcrs(t),
        free(),
        "an attesting VM without a quote holds no lease"
    );
    v
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
fn a_second_measurements_done_destroys_the_vm_and_leaves_the_pcrs() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let (_tpm, t) = tvpd();
    // The hostile VM boots first and honestly, up to the handover (one quote, one
    // lease).
    let id = "hostile-remeasure";
    let pid = create(&t, id);
    let v = wait_vm(&t, id, state_is("running"), TO_ATTESTING);
    assert_eq!(v["leases"].as_array().map(Vec::len), Some(1), "{v}");
    bystander(&t);
    // The attack: a second measurements-done, i.e. a second measuring.
    std::fs::write(t.state_dir.join(format!("vms/{id}/go")), "").unwrap();
    let v = wait_vm(&t, id, ended, TO_END);
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(
        v["reason"],
        format!("{VIOLATION}a second measurements-done (measuring runs once per boot)"),
        "{v}"
    );
    assert_killed(&t, pid);
    // Nothing reached PCRs 16/23, and the bystander attests on.
    assert_eq!(leased_pcrs(&t), free(), "PCRs 16/23 changed");
    assert_eq!(t.vm("bystander")["state"], "attesting");
    assert!(
        logged(&t, id, "measurements-done", "VMM message refused"),
        "{}",
        t.log()
    );
    let rec = ending_record(&t, id).expect("the VM's end is audited");
    assert_eq!(rec["reason"], v["reason"], "{rec}");
}

#[test]
fn a_quote_without_a_tunnel_or_a_second_tunnel_destroys_the_vm_and_never_takes_the_lease() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let (_tpm, t) = tvpd();
    bystander(&t);
    for (id, kind, reason, answers) in [
        (
            "hostile-quote",
            "quote-request",
            "'quote-request' before the tunnel measurement",
            1,
        ),
        (
            "hostile-tunnel",
            "tunnel-established",
            "a second tunnel-established (the tunnel is measured once per boot)",
            2,
        ),
    ] {
        let pid = create(&t, id);
        let v = wait_vm(&t, id, ended, TO_END);
        assert_eq!(v["state"], "failed", "{v}");
        assert_eq!(v["reason"], format!("{VIOLATION}{reason}"), "{v}");
        assert_eq!(v["leases"], serde_json::json!([]), "no lease taken: {v}");
        // The VMM was started, then (the first tunnel acked) told why (code 2: out of
        // order) and killed at once (it may not have got to log the refusal): never
        // evidence.
        let r = replies(&t, id);
        assert_eq!(r[0]["type"], "start", "{r:?}");
        if answers == 2 && r.len() > 1 {
            assert_eq!(r[1]["type"], "ack", "the first tunnel: {r:?}");
        }
        assert!(
            r.iter()
                .skip(answers)
                .all(|m| m["type"] == "refused" && m["code"] == 2),
            "{r:?}"
        );
        assert!(r.iter().all(|m| m["type"] != "evidence"), "{r:?}");
        assert_killed(&t, pid);
        assert!(logged(&t, id, kind, "VMM message refused"), "{}", t.log());
        assert!(ending_record(&t, id).is_some(), "the VM's end is audited");
    }
    assert_eq!(leased_pcrs(&t), free(), "PCRs 16/23 changed");
    assert_eq!(t.vm("bystander")["state"], "attesting");
}

/// VM `id`'s quote `i` as its VMM received it (`tests/bin/test_vmm.rs`, Interleave).
fn interleaved_evidence(t: &Tvpd, id: &str, i: usize) -> Evidence {
    let path = t.state_dir.join(format!("vms/{id}/evidence-{i}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn quotes_of_vms_whose_tunnels_are_established_at_once_interleave_and_each_shows_only_its_own_pcrs()
{
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    const QUOTES: usize = 8;
    let (_tpm, t) = tvpd();
    let ids = [
        "hostile-interleave-a",
        "hostile-interleave-b",
        "hostile-interleave-c",
    ];
    for id in ids {
        create(&t, id);
    }
    // All three measured, started and their tunnels recorded; then they quote at once.
    for id in ids {
        wait_vm(
            &t,
            id,
            |v| {
                v["phases"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["phase"] == "attestation"))
            },
            TO_ATTESTING,
        );
    }
    assert_eq!(
        leased_pcrs(&t),
        free(),
        "tunnels recorded, no quote yet: no lease"
    );
    for id in ids {
        std::fs::write(t.state_dir.join(format!("vms/{id}/go")), "").unwrap();
    }
    let host = t.api_json("GET", "/v1/host", None);
    let ak = AkKey::from_pem(host["ak_public_pem"].as_str().unwrap()).unwrap();
    let mut leases: Vec<(u64, u64, &str)> = Vec::new();
    for id in ids {
        let v = wait_vm(&t, id, ended, TO_END);
        assert_eq!(v["reason"], "powered-off", "{v}");
        let pcr16 = tvp_abi::measure::extend(&[0; 32], &tvp_abi::measure::sha256(id.as_bytes()));
        let pcr23: [u8; 32] = hex::decode(v["pcr23"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        for i in 0..QUOTES {
            let ev = interleaved_evidence(&t, id, i);
            let nonce = tvp_abi::measure::sha256(format!("{id}-{i}").as_bytes())[..16].to_vec();
            // A genuine quote whose event log replays to its PCRs...
            let ok = verify(&ev, &VerifyOptions::new(nonce, ak.clone()))
                .unwrap_or_else(|e| panic!("{id} quote {i}: {e}"));
            // ...of this VM's tunnel and this VM's measurements only.
            assert_eq!(
                ok.pcrs[&16], pcr16,
                "{id} quote {i}: another tunnel in PCR 16"
            );
            assert_eq!(ok.pcrs[&23], pcr23, "{id} quote {i}: another VM in PCR 23");
            let leased: Vec<_> = ev
                .event_log
                .iter()
                .filter(|r| r.pcr == 16 || r.pcr == 23)
                .collect();
            assert_eq!(
                leased.len(),
                8,
                "7 PCR 23 records and the tunnel: {leased:?}"
            );
            for r in leased {
                let text = serde_json::to_string(&r.content).unwrap();
                assert!(text.contains(&format!("{id}: ")), "{id} quote {i}: {text}");
            }
        }
        let held = v["leases"].as_array().unwrap();
        assert_eq!(held.len(), QUOTES, "one lease per quote: {v}");
        for l in held {
            let at = l["granted_unix_us"].as_u64().unwrap();
            leases.push((at, at + l["held_us"].as_u64().unwrap(), id));
        }
    }
    // One holder at a time: no two leases overlap, and the three VMs' leases
    // interleaved (FIFO: a VM quoting again waits behind the others).
    leases.sort();
    for w in leases.windows(2) {
        assert!(w[0].1 <= w[1].0, "leases overlap: {w:?}");
    }
    let turns = leases.windows(2).filter(|w| w[0].2 != w[1].2).count();
    assert!(
        turns >= ids.len(),
        "the quotes did not interleave: {leases:?}"
    );
    t.assert_leased_pcrs_free();
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
