//! A tvpd restart does not kill tenants' running VMs (issue #16, gap 8): real swtpm,
//! real KVM, the real tvp-vmm. A VM that runs (handed over, no PCR lease) survives a
//! kill -9 of tvpd and is re-adopted by the next tvpd: the same VMM process, its TAP
//! device kept, `vm-adopted` in the tenant's extract, and DELETE stops it. An impostor
//! on the adoption socket without the VM's secret is refused and the real tvpd still
//! adopts; past the grace without tvpd the VMM stops the VM; a graceful stop with
//! `keep_vms_on_stop` leaves running VMs to the next tvpd; on a bridge, a re-adopted
//! VM's MAC and VIP stay refused to other VMs. (A VM killed during its
//! attestation is still failed `tvpd-restarted`: measured_vm.rs.)

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tvp_tests::guests::build_guest;
use tvp_tests::netboot::NetNs;
use tvp_tests::procfs::{net_device_exists, proc_state, vmm_alive};
use tvp_tests::vm::eventually;
use tvp_tests::{nonce_hex, require, state_is, wait_vm, Need, Swtpm, Tenant, Tvpd, VmSpec};
use tvp_vmm_channel::{read_frame, write_frame, HostMessage, VmmMessage};

/// How long a VM may take to attest and hand over.
const TO_RUNNING: Duration = Duration::from_secs(60);

/// tvpd whose VMs attest, hand over and then run on (the `stay` guest), with `extra`
/// flags; the VMs' adoption grace is 30 s unless `extra` says otherwise.
fn tvpd_with_running_guest(extra: &[&str]) -> (Swtpm, Tvpd, PathBuf) {
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = build_guest("stay", &tpm.scratch("guest"));
    let mut args = vec!["--firmware", fw.to_str().unwrap()];
    if !extra.contains(&"--vmm-adoption-grace-secs") {
        args.extend_from_slice(&["--vmm-adoption-grace-secs", "30"]);
    }
    args.extend_from_slice(extra);
    let t = Tvpd::start(&tpm, &dir, &args);
    (tpm, t, dir)
}

/// Create VM `id` and wait until it runs; its VMM's pid and its TAP device.
fn running_vm(t: &Tvpd, id: &str) -> (u32, String) {
    let r = t.create_vm(&VmSpec::measured(id).deadline_secs(60));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(t, id, state_is("running"), TO_RUNNING);
    let pid = v["pid"].as_u64().expect("a running VM has a pid") as u32;
    let tap = v["tap"].as_str().expect("and a TAP device").to_string();
    (pid, tap)
}

/// The VMM's own log (its stderr).
fn vmm_log(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("state/vms/{id}/vmm.log"))).unwrap_or_default()
}

/// A restricted operation `op` on VM `id` with the shared tenant's token.
fn operation(t: &Tvpd, id: &str, op: &str) -> tvpctl::client::HttpReply {
    let token = Tenant::shared().token(id, op, &[]);
    let body = serde_json::json!({"op": op, "params": {}}).to_string();
    t.api_token(
        "POST",
        &format!("/v1/vms/{id}/operations"),
        Some(&body),
        &token,
    )
}

/// `tvpctl audit extract` of VM `id` and the tenant's offline `tvpctl audit verify`
/// of it in the bound form; (exit code, stdout, stderr) of the verify.
fn verify_extract(t: &Tvpd, dir: &Path, id: &str) -> (i32, String, String) {
    let ak = t.write_ak_pem(dir);
    let tenant = Tenant::shared();
    let policy = dir.join("policy.json");
    std::fs::write(&policy, tenant.policy.to_string()).unwrap();
    let key = dir.join("tenant.pub.pem");
    std::fs::write(&key, tenant.key_pem()).unwrap();
    let nonce = nonce_hex(16);
    let x = dir.join(format!("{id}.extract.json"));
    let (rc, out, err) = t.tvpctl(&[
        "audit",
        "extract",
        "--vm",
        id,
        "--nonce",
        &nonce,
        "-o",
        x.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    tvp_tests::tvpctl(
        None,
        &[
            "audit",
            "verify",
            x.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--ak",
            ak.to_str().unwrap(),
            "--nonce",
            &nonce,
            "--management-key",
            key.to_str().unwrap(),
        ],
    )
}

/// The tenant's extract of VM `id` as JSON text.
fn extract_text(t: &Tvpd, id: &str) -> String {
    t.api_json("GET", &format!("/v1/vms/{id}/audit"), None)
        .to_string()
}

#[test]
fn a_running_vm_survives_kill_9_of_tvpd_and_an_impostor_cannot_adopt_it() {
    require!("swtpm", "gcc", "ld");
    let (_tpm, mut t, dir) = tvpd_with_running_guest(&[]);
    let (pid, tap) = running_vm(&t, "run-1");
    let socket = dir.join("state/vms/run-1/adopt.sock");
    let record = dir.join("state/vms/run-1/record.json");
    // The secret is in the record, which only root reads; never on the command line.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&record).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "record mode {mode:o}");
        let rec: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        let secret = rec["adoption"]["secret"].as_str().unwrap().to_string();
        assert_eq!(secret.len(), 64, "{rec}");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains(&secret));
        let smode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(smode & 0o777, 0o600, "socket mode {smode:o}");
    }

    t.crash();
    // The VM runs on without tvpd.
    std::thread::sleep(Duration::from_secs(1));
    assert!(vmm_alive(pid, "run-1"), "the VMM died with tvpd");
    assert!(net_device_exists(&tap));

    // An impostor with a wrong secret is answered with nothing; the VMM waits on.
    let mut impostor = UnixStream::connect(&socket).expect("the VMM listens for adoption");
    impostor
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write_frame(&mut impostor, &HostMessage::Adopt { secret: [0x5a; 32] }).unwrap();
    impostor.flush().unwrap();
    let answer = read_frame::<_, VmmMessage>(&mut impostor);
    assert!(answer.is_err(), "impostor adopted: {answer:?}");
    assert!(
        eventually(Duration::from_secs(5), Duration::from_millis(50), || {
            vmm_log(&dir, "run-1").contains("wrong adoption secret")
        }),
        "{}",
        vmm_log(&dir, "run-1")
    );
    assert!(vmm_alive(pid, "run-1"));

    // The real tvpd adopts it: same process, running, TAP kept, audited.
    t.start_again();
    let v = t.vm("run-1");
    assert_eq!(v["state"], "running", "{v}\n{}", t.log());
    assert_eq!(v["pid"].as_u64(), Some(u64::from(pid)), "{v}");
    assert_eq!(v["tap"].as_str(), Some(tap.as_str()), "{v}");
    assert!(net_device_exists(&tap), "the adopted VM's TAP was deleted");
    assert!(vmm_alive(pid, "run-1"));
    assert!(vmm_log(&dir, "run-1").contains("adopted by a restarted tvpd"));
    assert!(
        extract_text(&t, "run-1").contains("vm-adopted"),
        "{}",
        extract_text(&t, "run-1")
    );
    // The tenant's extract with the adoption verifies end to end (pinned AK, fresh
    // nonce, the tenant's key and policy).
    let (rc, out, err) = verify_extract(&t, &dir, "run-1");
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("matches the TPM-certified anchor"), "{out}");
    // The adopted VMM is not reported as unmanaged.
    t.assert_not_unmanaged(u64::from(pid));

    // Paused by its tenant, it survives a second crash paused: continued only for the
    // handshake, stopped again, still `paused`.
    let r = operation(&t, "run-1", "pause");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    t.crash();
    t.start_again();
    let v = t.vm("run-1");
    assert_eq!(v["state"], "running", "{v}\n{}", t.log());
    assert_eq!(v["paused"], true, "{v}");
    assert_eq!(v["pid"].as_u64(), Some(u64::from(pid)), "{v}");
    assert!(
        eventually(Duration::from_secs(5), Duration::from_millis(50), || {
            proc_state(pid) == 'T'
        }),
        "the paused VM's VMM runs"
    );
    assert_eq!(
        extract_text(&t, "run-1").matches("vm-adopted").count(),
        2,
        "{}",
        extract_text(&t, "run-1")
    );
    let r = operation(&t, "run-1", "resume");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_ne!(proc_state(pid), 'T');

    // DELETE stops it (with the tenant's token); its process and TAP are gone.
    let r = t.delete_vm("run-1", Tenant::shared());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(
        &t,
        "run-1",
        |v| v["pid"].is_null() && v["state"] == "destroyed",
        Duration::from_secs(20),
    );
    assert_eq!(v["state"], "destroyed", "{v}");
    assert!(
        eventually(Duration::from_secs(10), Duration::from_millis(50), || {
            !vmm_alive(pid, "run-1")
        }),
        "the adopted VMM still runs after DELETE"
    );
    assert!(!net_device_exists(&tap), "TAP {tap} left after DELETE");
    // The ended VM is forgotten on a second DELETE, as any other.
    assert_eq!(t.delete_vm("run-1", Tenant::shared()).status, 200);
    assert_eq!(t.api("GET", "/v1/vms/run-1", None).status, 404);
}

#[test]
fn past_the_grace_without_tvpd_the_vmm_stops_the_vm() {
    require!("swtpm", "gcc", "ld");
    let (_tpm, mut t, dir) = tvpd_with_running_guest(&["--vmm-adoption-grace-secs", "2"]);
    let (pid, _tap) = running_vm(&t, "grace-1");
    t.crash();
    assert!(
        eventually(Duration::from_secs(15), Duration::from_millis(100), || {
            !vmm_alive(pid, "grace-1")
        }),
        "the VMM outlived its adoption grace"
    );
    assert!(
        vmm_log(&dir, "grace-1").contains("no tvpd adopted the VM within the grace"),
        "{}",
        vmm_log(&dir, "grace-1")
    );
    // The next tvpd finds nothing to adopt: the VM failed, as before adoption existed.
    t.start_again();
    let v = t.vm("grace-1");
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["reason"], "tvpd-restarted", "{v}");
    assert!(
        t.log().contains("cannot re-adopt the running VM"),
        "{}",
        t.log()
    );
}

#[test]
fn sigterm_with_keep_vms_on_stop_leaves_running_vms_to_the_next_tvpd() {
    require!("swtpm", "gcc", "ld");
    let (_tpm, mut t, dir) = tvpd_with_running_guest(&["--keep-vms-on-stop", "true"]);
    let (pid, tap) = running_vm(&t, "keep-1");
    assert_eq!(t.stop(), Some(0), "{}", t.log());
    assert!(vmm_alive(pid, "keep-1"), "{}", vmm_log(&dir, "keep-1"));
    t.start_again();
    let v = t.vm("keep-1");
    assert_eq!(v["state"], "running", "{v}\n{}", t.log());
    assert_eq!(v["pid"].as_u64(), Some(u64::from(pid)), "{v}");
    assert!(net_device_exists(&tap));
    let r = t.delete_vm("keep-1", Tenant::shared());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        eventually(Duration::from_secs(10), Duration::from_millis(50), || {
            !vmm_alive(pid, "keep-1")
        }),
        "the adopted VMM still runs after DELETE"
    );
}

#[test]
fn a_re_adopted_vms_mac_and_vip_stay_taken_on_the_bridge() {
    // The attack: after a tvpd restart, an API caller creates a VM with the MAC (the
    // bridge then delivers the tenant's frames to it) or the VIP (it answers ARP for
    // the tenant's address) of a tenant's VM that the new tvpd re-adopted. The record
    // keeps the running VM's addresses, so both are refused as before the restart.
    require!(Need::Netns, "swtpm", "gcc", "ld", "ip");
    let ns = NetNs::create("adoptaddr");
    let tpm = Swtpm::blank();
    ns.forward_loopback(tpm.port);
    ns.forward_loopback(tpm.port + 1);
    let dir = tpm.scratch("a");
    let fw = build_guest("stay", &tpm.scratch("guest"));
    let args = [
        "--firmware",
        fw.to_str().unwrap(),
        "--vmm-adoption-grace-secs",
        "30",
        "--vm-bridge",
        "br0",
    ];
    let mut t = Tvpd::start_in_netns(&tpm, &dir, &args, &ns.name);
    let (pid, _tap) = running_vm(&t, "tenant-vm");
    t.crash();
    t.start_again();
    let v = t.vm("tenant-vm");
    assert_eq!(v["state"], "running", "{v}\n{}", t.log());
    assert_eq!(v["pid"].as_u64(), Some(u64::from(pid)), "{v}");

    let same_mac = VmSpec::measured("thief-mac").vip("10.0.0.7/24");
    let r = t.create_vm(&same_mac);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 409, "{body}");
    assert!(
        body.contains("address_in_use") && body.contains("mac is in use by live VM 'tenant-vm'"),
        "{body}"
    );
    let same_vip = VmSpec::measured("thief-vip").mac("02:00:00:00:00:07");
    let r = t.create_vm(&same_vip);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 409, "{body}");
    assert!(
        body.contains("vip is in use by live VM 'tenant-vm'"),
        "{body}"
    );
    assert_eq!(t.api("GET", "/v1/vms/thief-mac", None).status, 404);

    // Once the tenant deletes it, its addresses are free again.
    let r = t.delete_vm("tenant-vm", Tenant::shared());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        eventually(Duration::from_secs(10), Duration::from_millis(50), || {
            !vmm_alive(pid, "tenant-vm")
        }),
        "the adopted VMM still runs after DELETE"
    );
    let r = t.create_vm(&VmSpec::measured("next").deadline_secs(60));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}
