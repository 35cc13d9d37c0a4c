//! A measured VM's own TPM (`"vtpm": true` in `POST /v1/vms`, issue #20) through tvpd
//! on real KVM: tvpd starts a swtpm for the VM as the VMM's user (state in
//! `vms/<id>/vtpm`, mode 0700, reached without rights on the directories above it),
//! hands its socket to tvp-vmm, which serves it as a TPM CRB device; the stand-in guest
//! (`guests/tpmvm.S`) starts the TPM, extends PCR 16 and reads it back before its
//! attested boot. The page's TPM flag puts the TPM2 table into the measured ACPI
//! tables. swtpm ends with the VM; the state goes with the VM's delete. A VM without
//! `vtpm` has no TPM: the guest reads no device there.
//!
//! Measured boot inside: the real firmware, network-booted through tvpd and the boot
//! server, extends the firmware, ACPI tables, configuration page, boot region and
//! workload into the VM's own TPM and leaves a TCG event log; the workload
//! (`pxe-firmware/test-workload/tpmread.S`) reads PCRs 0, 1, 4 and the log, which this
//! test replays against them and against the digests the host measured.

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tvp_tests::netboot::{boot_spec, tenant, vm_spec, BootServer, NetNs, TenantFiles, NAME};
use tvp_tests::{ended, require, state_is, wait_vm, Need, Swtpm, Tenant, Tvpd, VmSpec};

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

/// A tvpd whose VMs run test guest `guest` as their firmware, the VMMs (and so swtpm)
/// as nobody, as on a host: swtpm must reach its state without any right on the
/// directories above it. Returns it and the guest.
fn host(tpm: &Swtpm, dir: &std::path::Path, guest: &str) -> (Tvpd, std::path::PathBuf) {
    let fw = tvp_tests::guests::build_guest(guest, &tpm.scratch("guest"));
    let t = Tvpd::start(
        tpm,
        dir,
        &[
            "--firmware",
            fw.to_str().unwrap(),
            "--vmm-user",
            "65534:65534",
        ],
    );
    (t, fw)
}

#[test]
fn a_vm_with_vtpm_gets_its_own_swtpm_for_its_life_and_the_tables_say_so() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let (t, _fw) = host(&tpm, &dir, "tpmvm");
    let spec = |id: &str| VmSpec::measured(id).deadline_secs(60);

    let r = t.create_vm(&spec("t1").set("vtpm", json!(true)));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "t1", ended, TO_END);
    assert_eq!(v["reason"], "powered-off", "{v}");
    assert_eq!(v["vtpm"], true, "{v}");
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
    assert_eq!(v["vtpm"], false, "{v}");
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

/// What the guest prints when its TPM started, extended and read PCR 16.
const TPM_OK: &str = "T s=00000000 x=00000000 r=00000000";

/// Starts a swtpm of the test's own on the state directory `state` (no key) and sends
/// TPM2_Startup(CLEAR); returns its answer (empty if it did not answer).
fn startup_without_the_key(state: &std::path::Path) -> Vec<u8> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new("swtpm");
    cmd.args(["chardev", "--tpm2", "--fd", "3", "--flags", "not-need-init"])
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY (test code): dup2 only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(theirs);
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut s = &ours;
    let _ = s.write_all(&[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0]);
    let mut answer = vec![0u8; 64];
    let n = s.read(&mut answer).unwrap_or(0);
    answer.truncate(n);
    drop(ours);
    let _ = child.kill();
    let _ = child.wait();
    answer
}

#[test]
fn a_vm_s_tpm_state_is_encrypted_and_opens_again_only_through_the_host_tpm() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let (t, fw) = host(&tpm, &dir, "tpmstay");
    let tenant = Tenant::new(&["reboot", "delete"], "power-off");
    let spec = VmSpec::measured("s1")
        .no_gateway()
        .managed_by(&tenant)
        .set("vtpm", json!(true));
    let r = t.create_vm(&spec);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    wait_vm(&t, "s1", state_is("running"), TO_END);
    let vm_dir = dir.join("state/vms/s1");
    let console = || std::fs::read_to_string(vm_dir.join("console.log")).unwrap_or_default();
    assert_eq!(console().matches(TPM_OK).count(), 1, "{}", console());

    // The state key exists on disk only wrapped to the host's binding key (an
    // RSA-2048 OAEP block, 0600), never in the clear.
    use std::os::unix::fs::PermissionsExt;
    let wrapped = vm_dir.join("vtpm.key");
    let meta = std::fs::metadata(&wrapped).unwrap();
    assert_eq!(meta.len(), 256);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // The state is encrypted: a copy (another host's swtpm, without the key) does
    // not start from it.
    let copy = tpm.scratch("stolen");
    for e in std::fs::read_dir(vm_dir.join("vtpm")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let ok = [0x80u8, 0x01, 0, 0, 0, 10, 0, 0, 0, 0];
    let answer = startup_without_the_key(&copy);
    assert_ne!(
        answer, ok,
        "a swtpm without the key started the VM's TPM from its stolen state"
    );

    // A reboot starts the VM's TPM again from its state: the TPM unwraps the key
    // (same host, same platform) and the second boot's guest uses its TPM.
    let body = json!({"op": "reboot", "params": {}}).to_string();
    let r = t.api_token(
        "POST",
        "/v1/vms/s1/operations",
        Some(&body),
        &tenant.token("s1", "reboot", &[]),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The second boot's console replaces the first's: wait for the second "running".
    let twice = |v: &serde_json::Value| {
        v["history"]
            .as_array()
            .is_some_and(|h| h.iter().filter(|e| e[1] == "running").count() == 2)
    };
    let v = wait_vm(&t, "s1", twice, TO_END);
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(console().matches(TPM_OK).count(), 1, "{}", console());
    assert!(
        !t.log().contains("will not unwrap this VM's state key"),
        "{}",
        t.log()
    );
    // An administrator moves the VM's TPM (its state and wrapped key) to another host:
    // that host's TPM will not unwrap the key, so the VM is not created there.
    let other = Swtpm::blank();
    let dir2 = other.scratch("b");
    let t2 = Tvpd::start(&other, &dir2, &["--firmware", fw.to_str().unwrap()]);
    let moved = dir2.join("state/vms/s1");
    std::fs::create_dir_all(moved.join("vtpm")).unwrap();
    std::fs::copy(&wrapped, moved.join("vtpm.key")).unwrap();
    for e in std::fs::read_dir(vm_dir.join("vtpm")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), moved.join("vtpm").join(e.file_name())).unwrap();
    }
    let r = t2.create_vm(&spec);
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 500, "{body}");
    assert!(
        body.contains("will not unwrap this VM's state key"),
        "{body}"
    );
    assert!(
        !std::fs::read_to_string(moved.join("console.log"))
            .unwrap_or_default()
            .contains("T s="),
        "the moved TPM ran"
    );

    // Deleting the live VM destroys it; deleting it once ended forgets it, and its
    // TPM's state and key go with its directory.
    let r = t.delete_vm("s1", &tenant);
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    wait_vm(&t, "s1", ended, TO_END);
    let r = t.delete_vm("s1", &tenant);
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    assert!(!wrapped.exists() && !vm_dir.join("vtpm").exists());
}

/// The `<prefix> ` line of the console as bytes (hex groups), cut to the TPM
/// response's own size field.
fn tpm_response(console: &str, prefix: &str) -> Vec<u8> {
    let hex_text: String = console
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line: {console}"))
        .split_whitespace()
        .collect();
    let mut bytes = hex::decode(hex_text).unwrap();
    let size = u32::from_be_bytes(bytes[2..6].try_into().unwrap()) as usize;
    bytes.truncate(size);
    bytes
}

/// TPM2_Quote's response → (TPMS_ATTEST, TPMT_SIGNATURE).
fn quote_parts(r: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(&r[6..10], &[0, 0, 0, 0], "quote failed: {}", hex::encode(r));
    let params = u32::from_be_bytes(r[10..14].try_into().unwrap()) as usize;
    let body = &r[14..14 + params];
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    (body[2..2 + n].to_vec(), body[2 + n..].to_vec())
}

/// A VM's TPM is made for it and certified by the host: its EK and AK are named in
/// the VM's measured page, their certificates chain to the host's vTPM CA, which the
/// host's AK certifies for the tenant's nonce; the guest re-creates the AK from its
/// template and its quote verifies against that chain; the EK certificate is in the
/// VM's TPM. Another VM's certificate, a replayed nonce, or a quote by another VM's
/// TPM are refused.
#[test]
fn a_vm_s_tpm_is_certified_by_the_host_and_its_quotes_verify_against_the_chain() {
    require!(Need::Kvm, "swtpm", "gcc", "ld", "openssl");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let (t, _fw) = host(&tpm, &dir, "tpmquote");
    let spec = |id: &str| {
        VmSpec::measured(id)
            .deadline_secs(60)
            .set("vtpm", json!(true))
    };
    for id in ["c1", "c2"] {
        let r = t.create_vm(&spec(id));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let host_ak = tvp_verifier::verify::AkKey::from_pem(
        t.api_json("GET", "/v1/host", None)["ak_public_pem"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let nonce = [0x11u8; 32];
    let identity = |id: &str, nonce: &[u8]| -> tvp_verifier::vtpm::VtpmIdentity {
        let body = json!({ "nonce": hex::encode(nonce) }).to_string();
        let v = t.api_json("POST", &format!("/v1/vms/{id}/vtpm/identity"), Some(&body));
        serde_json::from_value(v).unwrap()
    };
    let host_id = t.api_json("GET", "/v1/host", None)["host_id"]
        .as_str()
        .unwrap()
        .to_string();
    let expect = |vm: &'static str| tvp_verifier::vtpm::VtpmExpect {
        host_id: Some(host_id.as_str()),
        vm_id: vm,
    };
    let mut verified = Vec::new();
    for id in ["c1", "c2"] {
        let v = wait_vm(&t, id, ended, TO_END);
        assert_eq!(v["reason"], "powered-off", "{v}");
        let ident = identity(id, &nonce);
        let ok = tvp_verifier::vtpm::verify_identity(&ident, &host_ak, &nonce, &expect(id))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        // The measured page names exactly these keys.
        let vm_dir = dir.join(format!("state/vms/{id}"));
        let page = std::fs::read(vm_dir.join("config.page")).unwrap();
        let measured = v["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["event_type"] == "config-page")
            .unwrap_or_else(|| panic!("{v}"))["digest"]
            .clone();
        assert_eq!(measured, json!(hex::encode(Sha256::digest(&page))));
        // The VM's view names the same keys.
        assert_eq!(
            v["vtpm_keys"]["ak_name"],
            json!(format!(
                "000b{}",
                hex::encode(Sha256::digest(&ok.ak_public))
            ))
        );
        assert_eq!(
            v["vtpm_keys"]["ek_name"],
            json!(format!(
                "000b{}",
                hex::encode(Sha256::digest(&ok.ek_public))
            ))
        );
        let tref = tvp_abi::config::decode(&page).unwrap().tpm.unwrap();
        assert_eq!(
            tref.ek_public_digest,
            <[u8; 32]>::from(Sha256::digest(&ok.ek_public))
        );
        assert_eq!(
            tref.ak_public_digest,
            <[u8; 32]>::from(Sha256::digest(&ok.ak_public))
        );
        // The guest's TPM answered, and its EK certificate is in NV 0x01c0000a.
        let console = std::fs::read_to_string(vm_dir.join("console.log")).unwrap();
        assert!(
            console.contains("T s=00000000 c=00000000 q=00000000"),
            "{console}"
        );
        assert!(console.contains("T n=00000000"), "{console}");
        let nv = tpm_response(&console, "N ");
        let ek_der = tvp_verifier::vtpm::parse::pem_to_der(&ident.ek_certificate_pem).unwrap();
        assert_eq!(&nv[14..16], &[0, 64]);
        assert_eq!(&nv[16..80], &ek_der[..64], "NV holds another certificate");
        let (attest, sig) = quote_parts(&tpm_response(&console, "Q "));
        tvp_verifier::vtpm::verify_vtpm_quote(&ok, &attest, &sig, &[0x5a; 32])
            .unwrap_or_else(|e| panic!("{id}'s guest quote: {e}"));
        verified.push((ident, ok, attest, sig));
    }
    let (c1, c1_ok, attest1, sig1) = &verified[0];
    let (c2, c2_ok, _, _) = &verified[1];
    assert_ne!(c1_ok.ek_public, c2_ok.ek_public, "two VMs, one TPM");
    // c2's quote is not c1's TPM's: refused with c1's chain.
    assert!(tvp_verifier::vtpm::verify_vtpm_quote(c2_ok, attest1, sig1, &[0x5a; 32]).is_err());
    // An administrator hands out c2's certificates as c1's: refused.
    let mut swapped = c1.clone();
    swapped.ek_certificate_pem = c2.ek_certificate_pem.clone();
    swapped.ak_certificate_pem = c2.ak_certificate_pem.clone();
    let e =
        tvp_verifier::vtpm::verify_identity(&swapped, &host_ak, &nonce, &expect("c1")).unwrap_err();
    assert!(e.to_string().contains("c2"), "{e}");
    // An old certification replayed for a new nonce: refused.
    let e =
        tvp_verifier::vtpm::verify_identity(c1, &host_ak, &[0x22; 32], &expect("c1")).unwrap_err();
    assert!(e.code().contains("nonce"), "{e}");
    // A fresh nonce gets a fresh certification of the same CA.
    let again = identity("c1", &[0x22; 32]);
    tvp_verifier::vtpm::verify_identity(&again, &host_ak, &[0x22; 32], &expect("c1")).unwrap();
    assert_eq!(again.ca_public, c1.ca_public);
    // tvpctl fetches, verifies against the pinned host AK and exports the chain;
    // openssl, which nobody here wrote, checks the certificates chain to the CA.
    let out = tpm.scratch("export");
    let ak_pem = t.write_ak_pem(&tpm.scratch("ak"));
    let out_s = out.to_str().unwrap();
    let (code, stdout, stderr) = t.tvpctl(&[
        "vm",
        "vtpm-identity",
        "c1",
        "--out",
        out_s,
        "--ak",
        ak_pem.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let o = std::process::Command::new("openssl")
        .current_dir(&out)
        .args(["verify", "-CAfile", "ca.pem", "ek.pem", "ak.pem"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("ek.pem")).unwrap(),
        c1.ek_certificate_pem
    );
    // A VM without its own TPM has no identity.
    let r = t.create_vm(&VmSpec::measured("c3").deadline_secs(60));
    assert_eq!(r.status, 201);
    let r = t.api(
        "POST",
        "/v1/vms/c3/vtpm/identity",
        Some(&json!({ "nonce": "00" }).to_string()),
    );
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
}

/// The keys tvpd makes in a VM's TPM are the ones a tenant's own tools make from the
/// documented templates: `tpm2_createek -G ecc` and `tpm2_createprimary` with the AK's
/// options give the same names as tvpd's templates on the same TPM.
#[test]
fn tpm2_tools_recreate_the_vm_tpm_s_ek_and_ak_from_their_templates() {
    require!(
        "swtpm",
        "tpm2_createprimary",
        "tpm2_createek",
        "tpm2_readpublic"
    );
    use tss_esapi::interface_types::resource_handles::Hierarchy;
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::traits::UnMarshall;
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("t");
    let tcti = tpm.tcti();
    let tool = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", &tcti)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    tool(&["tpm2_createek", "-G", "ecc", "-c", &p("ek.ctx")]);
    tool(&["tpm2_readpublic", "-c", &p("ek.ctx"), "-n", &p("ek.name")]);
    tool(&["tpm2_flushcontext", "-t"]);
    tool(&[
        "tpm2_createprimary",
        "-C",
        "e",
        "-g",
        "sha256",
        "-G",
        "ecc256:ecdsa-sha256:null",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
        "-c",
        &p("ak.ctx"),
    ]);
    tool(&["tpm2_readpublic", "-c", &p("ak.ctx"), "-n", &p("ak.name")]);
    tool(&["tpm2_flushcontext", "-t"]);
    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(&tcti).unwrap())
            .unwrap();
    use std::str::FromStr;
    for (template, name_file) in [
        (
            tvp_agent::vm::vtpm::provision::ek_template().unwrap(),
            "ek.name",
        ),
        (
            tvp_agent::vm::vtpm::provision::ak_template().unwrap(),
            "ak.name",
        ),
    ] {
        let public = tss_esapi::structures::Public::unmarshall(&template).unwrap();
        let r = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Endorsement, public, None, None, None, None)
            })
            .unwrap();
        let (_, name, _) = ctx.read_public(r.key_handle).unwrap();
        ctx.flush_context(r.key_handle.into()).unwrap();
        assert_eq!(
            hex::encode(name.value()),
            hex::encode(std::fs::read(dir.join(name_file)).unwrap()),
            "{name_file}: tvpd's template is not what tpm2-tools makes"
        );
    }
}

/// The VM's TPM identity, fetched for `nonce`.
fn vtpm_identity(t: &Tvpd, id: &str, nonce: &[u8]) -> tvp_verifier::vtpm::VtpmIdentity {
    let body = json!({ "nonce": hex::encode(nonce) }).to_string();
    let v = t.api_json("POST", &format!("/v1/vms/{id}/vtpm/identity"), Some(&body));
    serde_json::from_value(v).unwrap()
}

/// Only the tenant changes its VM's TPM: `vtpm-clear` (TPM2_Clear, the EK stays) and
/// `vtpm-reset` (a new TPM: new EK and AK, named in the new page) need its token and
/// reboot the VM onto the changed TPM; `vtpm-export` is authorized and refused; the
/// administrator without a token is refused and the TPM stays as it was; every step
/// is in the audit trail.
#[test]
fn only_the_tenant_clears_or_remakes_its_vm_s_tpm_and_each_step_is_audited() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let (t, _fw) = host(&tpm, &dir, "tpmstay");
    let tenant = Tenant::new(&["vtpm-clear", "vtpm-reset", "vtpm-export"], "power-off");
    let spec = VmSpec::measured("r1")
        .no_gateway()
        .managed_by(&tenant)
        .set("vtpm", json!(true));
    let r = t.create_vm(&spec);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    wait_vm(&t, "r1", state_is("running"), TO_END);
    let first = vtpm_identity(&t, "r1", &[1; 16]);
    let vm_dir = dir.join("state/vms/r1");
    let page_tpm = || {
        tvp_abi::config::decode(&std::fs::read(vm_dir.join("config.page")).unwrap())
            .unwrap()
            .tpm
            .unwrap()
    };
    let op = |name: &str, token: Option<String>| {
        let body = json!({"op": name, "params": {}}).to_string();
        match token {
            Some(tok) => t.api_token("POST", "/v1/vms/r1/operations", Some(&body), &tok),
            None => t.api("POST", "/v1/vms/r1/operations", Some(&body)),
        }
    };
    let runs = |n: usize| {
        move |v: &serde_json::Value| {
            v["history"]
                .as_array()
                .is_some_and(|h| h.iter().filter(|e| e[1] == "running").count() == n)
        }
    };
    // The administrator, without the tenant's token: refused; nothing changes.
    let r = op("vtpm-reset", None);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(!vm_dir.join("vtpm.renew").exists());
    assert_eq!(
        vtpm_identity(&t, "r1", &[2; 16]).ek_certificate_pem,
        first.ek_certificate_pem
    );
    // Export: authorized, then refused; nothing changes.
    let r = op("vtpm-export", Some(tenant.token("r1", "vtpm-export", &[])));
    assert_eq!(r.status, 501, "{}", String::from_utf8_lossy(&r.body));
    // Clear: the VM reboots onto its cleared TPM; its EK and AK stay.
    let r = op("vtpm-clear", Some(tenant.token("r1", "vtpm-clear", &[])));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "r1", runs(2), TO_END);
    assert_eq!(v["state"], "running", "{v}");
    assert!(
        t.log().contains("vTPM: cleared the VM's TPM"),
        "{}",
        t.log()
    );
    let cleared = vtpm_identity(&t, "r1", &[3; 16]);
    assert_eq!(cleared.ek_certificate_pem, first.ek_certificate_pem);
    let before = page_tpm();
    // Reset: a new TPM, named in the new page; the old certificates are gone.
    let r = op("vtpm-reset", Some(tenant.token("r1", "vtpm-reset", &[])));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "r1", runs(3), TO_END);
    assert_eq!(v["state"], "running", "{v}");
    let reset = vtpm_identity(&t, "r1", &[4; 16]);
    assert_ne!(reset.ek_certificate_pem, first.ek_certificate_pem);
    assert_ne!(reset.ak_certificate_pem, first.ak_certificate_pem);
    let after = page_tpm();
    assert_ne!(after.ek_public_digest, before.ek_public_digest);
    let ok = tvp_verifier::vtpm::verify_identity(
        &reset,
        &tvp_verifier::verify::AkKey::from_pem(
            t.api_json("GET", "/v1/host", None)["ak_public_pem"]
                .as_str()
                .unwrap(),
        )
        .unwrap(),
        &[4; 16],
        &tvp_verifier::vtpm::VtpmExpect {
            host_id: None,
            vm_id: "r1",
        },
    )
    .unwrap();
    assert_eq!(
        after.ek_public_digest,
        <[u8; 32]>::from(Sha256::digest(&ok.ek_public))
    );
    assert_eq!(
        v["vtpm_keys"]["ek_name"],
        json!(format!("000b{}", hex::encode(after.ek_public_digest)))
    );
    // The trail: the refusal and each authorized operation, decision and result.
    let recs = t.audit_records();
    for (name, decision) in [
        ("vtpm-reset", "deny"),
        ("vtpm-export", "allow"),
        ("vtpm-clear", "allow"),
        ("vtpm-reset", "allow"),
    ] {
        assert!(
            recs.iter().any(|r| r["vm"] == "r1"
                && r["op"] == name
                && r["stage"] == "decision"
                && r["decision"] == decision),
            "no {decision} record for {name}: {recs:?}"
        );
    }
}

/// Signs the ELF `elf` as `ten`'s workload (`tvp-boot-server sign-workload --elf`) into
/// `ten`'s directory as `name`.
fn sign_elf(ten: &TenantFiles, elf: &std::path::Path, name: &str) -> std::path::PathBuf {
    let out = ten.dir.join(name);
    let st = std::process::Command::new(tvp_tests::bin("tvp-boot-server"))
        .args(["sign-workload", "--elf"])
        .arg(elf)
        .arg("--key")
        .arg(ten.dir.join("workload.key"))
        .arg("--cert")
        .arg(ten.dir.join("workload.pem"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

/// One `TCG_PCR_EVENT2` of the log (SHA-256 only).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogEvent {
    pcr: u32,
    event_type: u32,
    digest: [u8; 32],
    data: Vec<u8>,
}

/// Parses a TCG2 crypto-agile event log as a tenant's tools would (the PC Client
/// PFP's layout, written out here independently of `tvp_abi::tcg_log`): the Spec ID
/// header, then events until the zero fill.
fn parse_log(b: &[u8]) -> Vec<LogEvent> {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    assert_eq!(
        (u32_at(0), u32_at(4)),
        (0, 3),
        "header: PCR 0, EV_NO_ACTION"
    );
    assert!(
        b[8..28].iter().all(|x| *x == 0),
        "header digest: 20 zero bytes"
    );
    let spec_len = u32_at(28) as usize;
    let spec = &b[32..32 + spec_len];
    assert_eq!(&spec[..16], b"Spec ID Event03\0");
    assert_eq!(spec[21], 2, "spec version 2");
    assert_eq!(
        u32::from_le_bytes(spec[24..28].try_into().unwrap()),
        1,
        "one algorithm"
    );
    assert_eq!(&spec[28..32], &[0x0b, 0, 32, 0], "SHA-256, 32 bytes");
    let mut at = 32 + spec_len;
    let mut events = Vec::new();
    while at + 50 <= b.len() && !(u32_at(at) == 0 && u32_at(at + 4) == 0) {
        assert_eq!(u32_at(at + 8), 1, "one digest per event");
        assert_eq!(u16_at(at + 12), 0x0b, "SHA-256");
        let size = u32_at(at + 46) as usize;
        events.push(LogEvent {
            pcr: u32_at(at),
            event_type: u32_at(at + 4),
            digest: b[at + 14..at + 46].try_into().unwrap(),
            data: b[at + 50..at + 50 + size].to_vec(),
        });
        at += 50 + size;
    }
    events
}

/// What the `tpmread` workload reported: PCRs 0, 1 and 4, `TPM_PT_STARTUP_CLEAR`, and
/// the event log's events.
struct TpmReport {
    pcrs: [[u8; 32]; 3],
    startup_clear: u32,
    log: Vec<LogEvent>,
}

fn tpm_report(console: &str) -> TpmReport {
    let line = |p: &str| -> Vec<u8> {
        let h = console
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no {p:?} line: {console}"));
        hex::decode(h.trim()).unwrap()
    };
    let r = line("R ");
    assert_eq!(&r[6..10], &[0; 4], "TPM2_PCR_Read succeeded: {r:02x?}");
    assert_eq!(&r[24..28], &[0, 0, 0, 3], "three digests");
    let digest = |o: usize| -> [u8; 32] {
        assert_eq!(&r[o - 2..o], &[0, 32]);
        r[o..o + 32].try_into().unwrap()
    };
    let c = line("C ");
    assert_eq!(&c[6..10], &[0; 4], "TPM2_GetCapability succeeded: {c:02x?}");
    TpmReport {
        pcrs: [digest(30), digest(64), digest(98)],
        startup_clear: u32::from_be_bytes(c[23..27].try_into().unwrap()),
        log: parse_log(&line("L ")),
    }
}

/// A SHA-256 PCR extend: `SHA-256(old || d)`.
fn extend(old: &[u8; 32], d: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update(old)
        .chain_update(d)
        .finalize()
        .into()
}

/// `digests` extended from zeros.
fn replay<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    digests
        .into_iter()
        .fold([0u8; 32], |pcr, d| extend(&pcr, d))
}

/// The digest of `vm`'s PCR 23 event `name` as tvpd recorded it.
fn measured(vm: &serde_json::Value, name: &str) -> [u8; 32] {
    let d = vm["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["event_type"] == name)
        .unwrap_or_else(|| panic!("no {name}: {vm}"))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    hex::decode(d).unwrap().try_into().unwrap()
}

#[test]
fn the_firmware_measures_the_boot_into_the_vms_own_tpm_and_its_event_log_replays_to_the_pcrs() {
    require!(
        Need::Kvm,
        Need::Netns,
        "swtpm",
        "swtpm_setup",
        "ip",
        "openssl",
        "gcc"
    );
    let ns = NetNs::create("vtpmmb");
    let dir = tempfile::tempdir().unwrap();
    let h = tvp_tests::netboot::host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    let elf = ten.dir.join("wl").join("tpmread.elf");
    let reservation = |u: &str| {
        format!("10.0.0.2 {u} memory=any vcpus=any image=any disk=any management=tenant tpm=yes\n")
    };
    let boot_with = |signed: &std::path::Path, id: &str| {
        let u = format!("U-{id}");
        let mut server = BootServer::builder(&ns, &h, &ten)
            .reservations(&reservation(&u))
            .workload(signed)
            .start();
        let o = boot_spec(
            &h,
            &mut server,
            id,
            &vm_spec(id, &u, &ca).set("vtpm", json!(true)),
        );
        assert_eq!(
            o.report["event"], "delivered",
            "{}\n{}",
            o.report, o.console
        );
        let quoted = o
            .console
            .lines()
            .find(|l| l.contains("tpm: quoted PCRs 0 and 1 with the AK for this session"));
        assert!(quoted.is_some(), "{}", o.console);
        eprintln!("{id}: {}", quoted.unwrap_or_default().trim());
        assert!(
            o.console.contains("tvp-tpm-workload: done"),
            "{}",
            o.console
        );
        assert!(
            o.console.contains(
                "tpm: measured the workload into PCR 4 and separators into PCRs 0-7, platform hierarchy disabled"
            ),
            "{}",
            o.console
        );
        o
    };

    let o = boot_with(&sign_elf(&ten, &elf, "tpmread.signed"), "mb-1");
    let rep = tpm_report(&o.console);
    // The log replays to the PCRs the workload read from the TPM.
    let mut pcrs = [[0u8; 32]; 24];
    for e in &rep.log {
        pcrs[e.pcr as usize] = extend(&pcrs[e.pcr as usize], &e.digest);
    }
    assert_eq!(
        [pcrs[0], pcrs[1], pcrs[4]],
        rep.pcrs,
        "event log: {:#?}",
        rep.log
    );
    // Its events are exactly the plan, with the digests the host knows: the firmware
    // file (tvpd's PCR 23 event and the file itself), the ACPI tables, the page and
    // the boot region as tvpd measured them, and the workload as it was handed over.
    let firmware = Sha256::digest(std::fs::read(&h.firmware).unwrap()).into();
    assert_eq!(measured(&o.vm, "firmware-image"), firmware);
    let workload: [u8; 32] = Sha256::digest(std::fs::read(&elf).unwrap()).into();
    assert_eq!(o.vm["handover_digest"], hex::encode(workload), "{}", o.vm);
    assert_eq!(o.report["workload_digest"], hex::encode(workload));
    let sep: [u8; 32] = Sha256::digest([0u8; 4]).into();
    let ev = |pcr, event_type, digest, data: &[u8]| LogEvent {
        pcr,
        event_type,
        digest,
        data: data.to_vec(),
    };
    let mut expected = vec![
        ev(0, 0x1, firmware, b"tvp-firmware"),
        ev(0, 0x1, measured(&o.vm, "acpi-tables"), b"ACPI DATA"),
        ev(1, 0xa, measured(&o.vm, "config-page"), b"tvp-config-page"),
        ev(1, 0xa, measured(&o.vm, "boot-region"), b"tvp-boot-region"),
        ev(4, 0xd, workload, b"tvp-workload"),
    ];
    expected.extend((0..8).map(|p| ev(p, 0x4, sep, &[0; 4])));
    assert_eq!(rep.log, expected);
    assert_eq!(
        measured(&o.vm, "acpi-tables"),
        tvp_abi::measure::acpi_tables_digest(1, true).unwrap()
    );
    // The same values as tvp_abi's plan computes them (what docs/pcr-plan.md states).
    let plan = tvp_abi::tcg_log::expected_pcrs(
        firmware,
        measured(&o.vm, "acpi-tables"),
        measured(&o.vm, "config-page"),
        measured(&o.vm, "boot-region"),
        workload,
    );
    assert_eq!([plan[0], plan[1], plan[4]], rep.pcrs);
    // Deep evidence: the boot server verified the VM's TPM's quote of PCRs 0 and 1 at
    // step 4 (before the workload, so before the separators) together with the host's
    // evidence, and the values it reports are the plan's before their separator.
    assert_eq!(o.report["vtpm_quote"], "verified", "{}", o.report);
    let start = tvp_abi::tcg_log::start_pcrs(
        firmware,
        measured(&o.vm, "acpi-tables"),
        measured(&o.vm, "config-page"),
        measured(&o.vm, "boot-region"),
    );
    assert_eq!(o.report["vtpm_pcr0"], hex::encode(start[0]), "{}", o.report);
    assert_eq!(o.report["vtpm_pcr1"], hex::encode(start[1]), "{}", o.report);
    assert_eq!(
        [extend(&start[0], &sep), extend(&start[1], &sep)],
        [plan[0], plan[1]]
    );
    // The platform hierarchy is off (phEnable, bit 0), the owner and endorsement
    // hierarchies on.
    assert_eq!(rep.startup_clear & 0b111, 0b110, "{:#x}", rep.startup_clear);

    // Another workload (one byte more): another PCR 4, the same firmware PCR.
    let mut other = std::fs::read(&elf).unwrap();
    other.push(0);
    let other_elf = ten.dir.join("tpmread-other.elf");
    std::fs::write(&other_elf, &other).unwrap();
    let o2 = boot_with(&sign_elf(&ten, &other_elf, "other.signed"), "mb-2");
    let rep2 = tpm_report(&o2.console);
    let other_digest: [u8; 32] = Sha256::digest(&other).into();
    assert_ne!(rep2.pcrs[2], rep.pcrs[2]);
    assert_eq!(rep2.pcrs[2], replay([&other_digest, &sep]));
    assert_eq!(rep2.pcrs[0], rep.pcrs[0], "same firmware and ACPI tables");
    assert_eq!(o2.vm["handover_digest"], hex::encode(other_digest));
}
