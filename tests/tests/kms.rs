//! Key release: the reference key-management service releases an image key only to a
//! host whose evidence and binding key check out, for a VM its release policy allows
//! and the host's quote commits to, and refuses each attack with the check that failed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tvp_tests::kms::{assert_release_refused, tvpd_and_inventory, Kms, RELEASE_TO_ANY};
use tvp_tests::vm::expected_pcr23;
use tvp_tests::{bin, ended, nonce_hex, require, wait_vm, Swtpm, Tenant, Tvpd, VmSpec};

/// What a host sends for `nonce` (evidence over PCR 15, certified binding key).
fn host_material(t: &Tvpd, quote_nonce: &str, certify_nonce: &str) -> (Value, Value) {
    let ev = t.api_json(
        "POST",
        "/v1/host/quote",
        Some(&format!("{{\"nonce\":\"{quote_nonce}\",\"pcrs\":[15]}}")),
    );
    let bk = t.api_json(
        "POST",
        "/v1/host/binding-key",
        Some(&format!("{{\"nonce\":\"{certify_nonce}\"}}")),
    );
    (ev, bk)
}

fn release(
    nonce: &str,
    host_id: &str,
    key_use: &Value,
    ev: &Value,
    bk: &Value,
    header: &str,
) -> Value {
    json!({"op": "release", "nonce": nonce, "host_id": host_id, "key_use": key_use,
        "evidence": ev, "binding_public": bk["public"],
        "binding_certify_attest": bk["certify_attest"],
        "binding_certify_signature": bk["certify_signature"], "image_header": header})
}

/// The key use of `POST /v1/images/verify`: no VM.
fn verify_use() -> Value {
    json!({"purpose": "verify"})
}

/// The qualifying data a host quotes with to commit to `key_use` for `nonce`, hex.
fn bound(nonce: &str, key_use: &Value) -> String {
    let u: tvp_kms::KeyUse = serde_json::from_value(key_use.clone()).unwrap();
    let d = u.parse().unwrap().digest();
    let n = hex::decode(nonce).unwrap();
    hex::encode(tvp_verifier::verify::bound::bound_qualifying_data(&n, &d))
}

/// Two minimal DER certificates (SEQUENCE { INTEGER n }) for configuration pages.
const TENANT_CA: [u8; 5] = [0x30, 3, 2, 1, 1];
const ATTACKER_CA: [u8; 5] = [0x30, 3, 2, 1, 2];

/// The key use of a VM booting firmware with SHA-256 `fw` from a page naming `ca` (DER)
/// and loading no image, managed by the shared tenant.
fn vm_use(ca: &[u8], fw: [u8; 32]) -> Value {
    let page = tvp_abi::config::Config {
        vip: [10, 0, 0, 2],
        prefix_len: 24,
        gateway: [10, 0, 0, 1],
        mac: [2, 0, 0, 0, 0, 1],
        boot_server_ip: [10, 0, 0, 1],
        boot_server_port: 8443,
        vcpus: 1,
        mem_size_mib: 64,
        time_unix_secs: 1,
        entropy_seed: [7; 32],
        auth_code: b"U-vm",
        server_name: "boot.tenant.example",
        ca_cert_der: ca,
        image: None,
        disk: None,
        tpm: None,
    }
    .encode()
    .unwrap();
    let policy = serde_json::from_value(Tenant::shared().policy.clone()).unwrap();
    serde_json::to_value(
        tvp_kms::KeyUse::vm(&page, fw, &Tenant::shared().key_pem(), &policy).unwrap(),
    )
    .unwrap()
}

fn refused(r: &Value, check: &str) {
    assert_eq!(r["result"], "refused", "{r}");
    assert_eq!(r["check"], check, "{r}");
}

#[test]
fn image_key_released_only_to_an_attested_unchanged_host() {
    require!("swtpm");
    use base64::Engine;
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let (code, expected, err) = Tvpd::run_once(&tpm, &dir, &["--print-expected-pcrs"]);
    assert_eq!(code, 0, "{err}");
    let expected: Value = serde_json::from_str(&expected).unwrap();
    let t = Tvpd::start(&tpm, &dir, &[]);
    let h = t.api_json("GET", "/v1/host", None);
    let host_id = h["host_id"].as_str().unwrap().to_string();
    let inventory = json!({"hosts": [{"host_id": host_id, "ak_public_pem": h["ak_public_pem"],
        "ek_name": h["ek_name"], "platform_pcrs": expected["pcrs"]["sha256"]}]});

    // The tenant: key-management key pair and an encrypted image.
    let k = dir.join("kms");
    let tvpctl = |args: &[&str]| {
        let o = Command::new(bin("tvpctl")).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    tvpctl(&["image", "keygen", k.to_str().unwrap()]);
    tvpctl(&["image", "keygen", dir.join("other").to_str().unwrap()]);
    std::fs::write(dir.join("img"), vec![7u8; 10_000]).unwrap();
    tvpctl(&[
        "image",
        "encrypt",
        dir.join("img").to_str().unwrap(),
        dir.join("img.enc").to_str().unwrap(),
        "--kms-pub",
        dir.join("kms.pub").to_str().unwrap(),
    ]);
    tvpctl(&[
        "image",
        "encrypt",
        dir.join("img").to_str().unwrap(),
        dir.join("img.other").to_str().unwrap(),
        "--kms-pub",
        dir.join("other.pub").to_str().unwrap(),
    ]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let header = b64.encode(&std::fs::read(dir.join("img.enc")).unwrap()[..1024]);
    let other_header = b64.encode(&std::fs::read(dir.join("img.other")).unwrap()[..1024]);
    let kms = Kms::start(&dir, &dir.join("kms.key"), &inventory, "inv");

    // Happy path (verification: the key stays in tvpd).
    let v = verify_use();
    let n = kms.nonce();
    let (ev, bk) = host_material(&t, &bound(&n, &v), &n);
    let r = kms.call(&release(&n, &host_id, &v, &ev, &bk, &header));
    assert_eq!(r["result"], "released", "{r}");
    assert_eq!(
        b64.decode(r["wrapped_key"].as_str().unwrap())
            .unwrap()
            .len(),
        256
    );

    // Replayed nonce.
    refused(
        &kms.call(&release(&n, &host_id, &v, &ev, &bk, &header)),
        "nonce",
    );
    // A nonce the service never issued.
    let forged = nonce_hex(32);
    let (ev2, bk2) = host_material(&t, &bound(&forged, &v), &forged);
    refused(
        &kms.call(&release(&forged, &host_id, &v, &ev2, &bk2, &header)),
        "nonce",
    );
    // Evidence with a stale nonce: its quote commits to something else.
    let n = kms.nonce();
    let (ev_stale, bk_fresh) = host_material(&t, &bound(&nonce_hex(32), &v), &n);
    refused(
        &kms.call(&release(&n, &host_id, &v, &ev_stale, &bk_fresh, &header)),
        "vm-binding",
    );
    // A quote over the bare nonce commits to no VM.
    let n = kms.nonce();
    let (ev_bare, bk_bare) = host_material(&t, &n, &n);
    refused(
        &kms.call(&release(&n, &host_id, &v, &ev_bare, &bk_bare, &header)),
        "vm-binding",
    );
    // The quote commits to one VM, the request describes another (its tenant CA, or
    // its firmware, swapped): refused before any policy is looked at.
    let fw = [0x11; 32];
    let quoted_for = vm_use(&TENANT_CA, fw);
    for other in [
        vm_use(&ATTACKER_CA, fw),
        vm_use(&TENANT_CA, [0x22; 32]),
        v.clone(),
    ] {
        let n = kms.nonce();
        let (ev_vm, bk_vm) = host_material(&t, &bound(&n, &quoted_for), &n);
        let r = kms.call(&release(&n, &host_id, &other, &ev_vm, &bk_vm, &header));
        refused(&r, "vm-binding");
        assert!(r["reason"].as_str().unwrap().contains("another VM"), "{r}");
    }
    // Bound correctly, but the described VM's page does not load this image.
    let n = kms.nonce();
    let (ev_vm, bk_vm) = host_material(&t, &bound(&n, &quoted_for), &n);
    refused(
        &kms.call(&release(&n, &host_id, &quoted_for, &ev_vm, &bk_vm, &header)),
        "vm-description",
    );
    // A malformed description names its field.
    let n = kms.nonce();
    let mut bad = quoted_for.clone();
    bad["firmware_sha256"] = json!("zz");
    let (ev_b, bk_b) = host_material(&t, &n, &n);
    let r = kms.call(&release(&n, &host_id, &bad, &ev_b, &bk_b, &header));
    refused(&r, "vm-description");
    assert!(
        r["reason"].as_str().unwrap().contains("firmware_sha256"),
        "{r}"
    );
    // Binding key certified for another nonce.
    let n = kms.nonce();
    let (ev_fresh, bk_stale) = host_material(&t, &bound(&n, &v), &nonce_hex(32));
    refused(
        &kms.call(&release(&n, &host_id, &v, &ev_fresh, &bk_stale, &header)),
        "binding-key",
    );
    // Binding key certified by another host's AK.
    let other = Swtpm::blank();
    let t2 = Tvpd::start(&other, &other.scratch("b"), &[]);
    let n = kms.nonce();
    let (ev_ok, _) = host_material(&t, &bound(&n, &v), &n);
    let (_, bk_other) = host_material(&t2, &nonce_hex(8), &n);
    let r = kms.call(&release(&n, &host_id, &v, &ev_ok, &bk_other, &header));
    refused(&r, "binding-key");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("not signed by the trusted AK"),
        "{r}"
    );
    // A host not in the inventory.
    let n = kms.nonce();
    let (ev3, bk3) = host_material(&t2, &bound(&n, &v), &n);
    let other_id = t2.api_json("GET", "/v1/host", None)["host_id"]
        .as_str()
        .unwrap()
        .to_string();
    refused(
        &kms.call(&release(&n, &other_id, &v, &ev3, &bk3, &header)),
        "inventory",
    );
    // An image wrapped to another key-management key.
    let n = kms.nonce();
    let (ev4, bk4) = host_material(&t, &bound(&n, &v), &n);
    refused(
        &kms.call(&release(&n, &host_id, &v, &ev4, &bk4, &other_header)),
        "image",
    );
    // The inventory expects another platform: evidence refused before the key is touched.
    let mut inv2 = inventory.clone();
    inv2["hosts"][0]["platform_pcrs"]["15"] = json!("ab".repeat(32));
    let kms2 = Kms::start(&dir, &dir.join("kms.key"), &inv2, "inv2");
    let n = kms2.nonce();
    let (ev5, bk5) = host_material(&t, &bound(&n, &v), &n);
    refused(
        &kms2.call(&release(&n, &host_id, &v, &ev5, &bk5, &header)),
        "evidence:expected-pcrs",
    );
    // A release policy without allow_verify does not release for verification.
    let strict = RELEASE_TO_ANY.replace("allow_verify = true", "allow_verify = false");
    let kms3 = Kms::start_with_policy(&dir, &dir.join("kms.key"), &inventory, &strict, "inv3");
    let n = kms3.nonce();
    let (ev6, bk6) = host_material(&t, &bound(&n, &v), &n);
    refused(
        &kms3.call(&release(&n, &host_id, &v, &ev6, &bk6, &header)),
        "vm-policy:verify",
    );
    // Malformed requests get a refusal, not a crash.
    let mut s = UnixStream::connect(&kms.socket).unwrap();
    s.write_all(b"{not json\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.contains("malformed request"), "{line}");
    assert_eq!(kms.call(&json!({"op": "nonce"}))["result"], "nonce");
}

fn grep_dir(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(grep_dir(&p, needle));
        } else if let Ok(b) = std::fs::read(&p) {
            if b.windows(needle.len()).any(|w| w == needle) {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn tvpd_obtains_the_key_through_its_tpm_and_authenticates_the_image_in_memory() {
    require!("swtpm", "sha256sum");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let tenant = tpm.scratch("tenant");
    let (t, inventory) = tvpd_and_inventory(&tpm, &dir, &["--image-dir", tenant.to_str().unwrap()]);
    let run = |args: &[&str]| {
        let o = Command::new(bin("tvpctl")).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let p = |n: &str| tenant.join(n).to_str().unwrap().to_string();
    run(&["image", "keygen", &p("kms")]);
    let marker = b"TVP-SECRET-PLAINTEXT-MARKER ";
    let plain: Vec<u8> = marker.iter().copied().cycle().take(300_000).collect();
    std::fs::write(p("img"), &plain).unwrap();
    run(&[
        "image",
        "encrypt",
        &p("img"),
        &p("img.enc"),
        "--kms-pub",
        &p("kms.pub"),
        "--chunk-size",
        "65536",
    ]);
    std::fs::remove_file(p("img")).unwrap();
    let kms = Kms::start(&tenant, &tenant.join("kms.key"), &inventory, "inv");
    let body = |img: &str, sock: &Path| {
        format!(
            "{{\"image\":\"{img}\",\"kms_socket\":\"{}\"}}",
            sock.display()
        )
    };

    let r = t.api_json(
        "POST",
        "/v1/images/verify",
        Some(&body(&p("img.enc"), &kms.socket)),
    );
    assert_eq!(r["key_released"], true);
    assert_eq!(r["image_verified"], true);
    assert_eq!(r["plaintext_len"], 300_000);
    let digest = {
        let o = Command::new("sha256sum")
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut o = o;
        o.stdin.take().unwrap().write_all(&plain).unwrap();
        String::from_utf8(o.wait_with_output().unwrap().stdout).unwrap()
    };
    assert!(digest.starts_with(r["image_digest"].as_str().unwrap()));

    // A tampered chunk: refused where it is.
    let mut enc = std::fs::read(p("img.enc")).unwrap();
    let n = enc.len();
    enc[n - 20_000] ^= 1;
    std::fs::write(p("bad.enc"), &enc).unwrap();
    let r = t.api(
        "POST",
        "/v1/images/verify",
        Some(&body(&p("bad.enc"), &kms.socket)),
    );
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 422, "{text}");
    assert!(
        text.contains("image_rejected") && text.contains("chunk 4 of 5"),
        "{text}"
    );
    // A plaintext image is refused.
    std::fs::write(p("plain.img"), b"\x7fELF plain").unwrap();
    let r = t.api(
        "POST",
        "/v1/images/verify",
        Some(&body(&p("plain.img"), &kms.socket)),
    );
    assert!(String::from_utf8_lossy(&r.body).contains("not an encrypted tvp image"));
    // A service whose inventory expects another platform refuses the release.
    let mut inv2 = inventory.clone();
    inv2["hosts"][0]["platform_pcrs"]["15"] = json!("cd".repeat(32));
    let kms2 = Kms::start(&tenant, &tenant.join("kms.key"), &inv2, "inv2");
    let r = t.api(
        "POST",
        "/v1/images/verify",
        Some(&body(&p("img.enc"), &kms2.socket)),
    );
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 422, "{text}");
    assert!(
        text.contains("release_refused") && text.contains("evidence:expected-pcrs"),
        "{text}"
    );
    // No plaintext on the host's disk or in its log.
    assert!(
        grep_dir(&dir, marker).is_empty(),
        "plaintext found under {}",
        dir.display()
    );
    assert!(!t.log().contains("TVP-SECRET"), "plaintext in the log");
    // Images are opened only inside image_dir.
    let r = t.api(
        "POST",
        "/v1/images/verify",
        Some(&body("/etc/passwd", &kms.socket)),
    );
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 400, "{text}");
    assert!(text.contains("outside image_dir"), "{text}");
}

/// How long a VM may take to end.
const TO_END: Duration = Duration::from_secs(60);

#[test]
fn an_encrypted_image_is_decrypted_into_the_vm_and_every_refusal_stops_it_before_the_guest_runs() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let tenant = tpm.scratch("tenant");
    let fw = tvp_tests::guests::build_guest("image", &tpm.scratch("guest"));
    let flags = [
        "--image-dir",
        tenant.to_str().unwrap(),
        "--firmware",
        fw.to_str().unwrap(),
    ];
    let (t, inventory) = tvpd_and_inventory(&tpm, &dir, &flags);
    let run = |args: &[&str]| {
        let o = Command::new(bin("tvpctl")).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let p = |n: &str| tenant.join(n).to_str().unwrap().to_string();
    run(&["image", "keygen", &p("kms")]);
    // What the guest prints (its first 32 bytes), then a secret that must never reach
    // the host's disk or logs.
    let head = b"HELLO-FROM-THE-ENCRYPTED-IMAGE!!";
    let marker = b"TVP-SECRET-PLAINTEXT-MARKER ";
    let mut plain = head.to_vec();
    plain.extend(marker.iter().copied().cycle().take(300_000));
    std::fs::write(tpm.scratch("plain").join("img"), &plain).unwrap();
    run(&[
        "image",
        "encrypt",
        tpm.scratch("plain").join("img").to_str().unwrap(),
        &p("img.enc"),
        "--kms-pub",
        &p("kms.pub"),
        "--chunk-size",
        "65536",
    ]);
    let kms = Kms::start(&tenant, &tenant.join("kms.key"), &inventory, "inv");
    // The tenant's management key and policy, with this test's image settings.
    let spec = |id: &str, image: &str, policy: Value| {
        VmSpec::measured(id)
            .memory_mib(64)
            .deadline_secs(60)
            .image(image, &kms.socket)
            .policy_with(policy)
    };
    let console = |id: &str| {
        std::fs::read_to_string(dir.join(format!("state/vms/{id}/console.log"))).unwrap_or_default()
    };

    // Happy path: released through the TPM, decrypted into guest memory, run by the guest.
    let r = t.create_vm(&spec("enc", "img.enc", json!({})));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "enc", ended, TO_END);
    assert_eq!(v["reason"], "powered-off", "{v}");
    assert!(
        console("enc").contains("IMG:HELLO-FROM-THE-ENCRYPTED-IMAGE!!"),
        "{}",
        console("enc")
    );
    // The image is measured through the configuration page's descriptor: PCR 23 as
    // measured equals what tvpctl computes from the firmware and that page.
    let page = dir.join("state/vms/enc/config.page");
    assert_eq!(v["pcr23"], expected_pcr23(&t, &fw, &page, Tenant::shared()));
    let vmm_log = std::fs::read_to_string(dir.join("state/vms/enc/vmm.log")).unwrap();
    assert!(vmm_log.contains("decrypted"), "{vmm_log}");

    // Refusals before anything starts.
    std::fs::write(p("plain.img"), &plain).unwrap();
    let r = t.create_vm(&spec("p1", "plain.img", json!({})));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 422, "{text}");
    assert!(text.contains("allow_plaintext_images"), "{text}");
    assert_eq!(t.api("GET", "/v1/vms/p1", None).status, 404);
    let r = t.create_vm(&spec("p2", "../a/state/vms/enc/config.page", json!({})));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let mut inv2 = inventory.clone();
    inv2["hosts"][0]["platform_pcrs"]["15"] = json!("cd".repeat(32));
    let kms2 = Kms::start(&tenant, &tenant.join("kms.key"), &inv2, "inv2");
    let s2 = spec("p3", "img.enc", json!({})).image("img.enc", &kms2.socket);
    let r = t.create_vm(&s2);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 422, "{text}");
    assert!(text.contains("release_refused"), "{text}");

    // A plaintext image the policy allows.
    let r = t.create_vm(&spec(
        "p4",
        "plain.img",
        json!({"allow_plaintext_images": true}),
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(wait_vm(&t, "p4", ended, TO_END)["reason"], "powered-off");
    assert!(console("p4").contains("IMG:HELLO-FROM-THE-ENCRYPTED-IMAGE!!"));
    std::fs::remove_file(p("plain.img")).unwrap();

    // Tampered chunk, truncated image, altered header: the key is released, but the VMM
    // refuses the image while loading it, and the guest never runs.
    let enc = std::fs::read(p("img.enc")).unwrap();
    let mut tampered = enc.clone();
    let n = tampered.len();
    tampered[n - 20_000] ^= 1;
    let mut header = enc.clone();
    header[40] ^= 1; // inside the image digest
    for (id, bytes, why) in [
        ("t1", tampered, "chunk 4 of 5 fails authentication"),
        ("t2", enc[..n - 1].to_vec(), "truncated inside chunk 4"),
        ("t3", header, ""),
    ] {
        std::fs::write(p(&format!("{id}.enc")), &bytes).unwrap();
        let r = t.create_vm(&spec(id, &format!("{id}.enc"), json!({})));
        let text = String::from_utf8_lossy(&r.body).to_string();
        if r.status == 201 {
            let v = wait_vm(&t, id, ended, TO_END);
            assert_eq!(v["state"], "failed", "{v}");
            let reason = v["reason"].as_str().unwrap();
            assert!(
                reason.contains("image") && reason.contains(why),
                "{id}: {v}"
            );
            assert!(!console(id).contains("IMG:"), "{id}: the guest ran");
            assert!(v["pcr23"].is_null(), "{id}: measured although refused: {v}");
        } else {
            // An altered header may already be refused at release (its digest is what
            // the service sees): that also keeps the guest from running.
            assert_eq!(id, "t3", "{id}: {text}");
            assert_eq!(r.status, 422, "{text}");
        }
    }

    // Neither the plaintext nor the key material reached the host's disk or logs.
    let hits = grep_dir(&dir, marker);
    assert!(hits.is_empty(), "plaintext found in {hits:?}");
    assert!(!t.log().contains("TVP-SECRET"), "plaintext in the log");
}

/// Issue #15, attack 1: an allowed API caller creates a VM with the tenant's encrypted
/// image and key-management socket but its own tenant CA (hence boot server), its own
/// management key, or a weaker management policy; or the host runs a firmware the
/// tenant did not allow. Each create fails naming the release policy's check, before
/// any VMM starts, so no plaintext reaches a VM; the tenant's own VM still boots with
/// the decrypted image.
#[test]
fn an_image_key_goes_only_to_a_vm_the_tenant_s_release_policy_allows() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let tenant = tpm.scratch("tenant");
    let fw = tvp_tests::guests::build_guest("image", &tpm.scratch("guest"));
    let flags = [
        "--image-dir",
        tenant.to_str().unwrap(),
        "--firmware",
        fw.to_str().unwrap(),
    ];
    let (t, inventory) = tvpd_and_inventory(&tpm, &dir, &flags);
    let run = |cmd: &str, args: &[&str]| {
        let o = Command::new(bin(cmd)).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let p = |n: &str| tenant.join(n).to_str().unwrap().to_string();
    run("tvpctl", &["image", "keygen", &p("kms")]);
    let head = b"HELLO-FROM-THE-ENCRYPTED-IMAGE!!";
    let marker = b"TVP-SECRET-PLAINTEXT-MARKER ";
    let mut plain = head.to_vec();
    plain.extend(marker.iter().copied().cycle().take(100_000));
    let plain_path = tpm.scratch("plain").join("img");
    std::fs::write(&plain_path, &plain).unwrap();
    run(
        "tvpctl",
        &[
            "image",
            "encrypt",
            plain_path.to_str().unwrap(),
            &p("img.enc"),
            "--kms-pub",
            &p("kms.pub"),
        ],
    );

    // The tenant's release policy, from its own CA, management key and policy, and
    // the firmware it trusts (digests printed by tvp-kms itself).
    let tenant_ca = tvp_tests::vm::DUMMY_CA_PEM;
    std::fs::write(p("ca.pem"), tenant_ca).unwrap();
    std::fs::write(p("mgmt.pem"), Tenant::shared().key_pem()).unwrap();
    std::fs::write(p("policy.json"), Tenant::shared().policy.to_string()).unwrap();
    let inspect: Value = serde_json::from_str(&run(
        "tvpctl",
        &["--json", "image", "inspect", &p("img.enc")],
    ))
    .unwrap();
    let policy_for = |firmware: &str| {
        format!(
            "[[image]]\nimage_digest = \"{}\"\ntenant_ca_sha256 = [\"{}\"]\nmanagement_keys = [\"{}\"]\npolicy_digests = [\"{}\"]\nfirmware_sha256 = [\"{firmware}\"]\n",
            inspect["image_digest"].as_str().unwrap(),
            run("tvp-kms", &["--ca-digest", &p("ca.pem")]),
            run("tvp-kms", &["--key-id", &p("mgmt.pem")]),
            run("tvp-kms", &["--policy-digest", &p("policy.json")]),
        )
    };
    let fw_digest = hex::encode(tvp_abi::measure::sha256(&std::fs::read(&fw).unwrap()));
    let kms = Kms::start_with_policy(
        &tenant,
        &tenant.join("kms.key"),
        &inventory,
        &policy_for(&fw_digest),
        "tenant",
    );
    let spec = |id: &str, socket: &Path| {
        VmSpec::measured(id)
            .memory_mib(64)
            .deadline_secs(60)
            .image("img.enc", socket)
    };
    let console = |id: &str| dir.join(format!("state/vms/{id}/console.log"));

    // The attacks: the tenant's image and service, another VM.
    let attacker = Tenant::new(
        &["pause", "resume", "power-off", "reboot", "delete"],
        "alert",
    );
    let attacker_ca = "-----BEGIN CERTIFICATE-----\nMAMCAQI=\n-----END CERTIFICATE-----\n";
    let kms_other_fw = Kms::start_with_policy(
        &tenant,
        &tenant.join("kms.key"),
        &inventory,
        &policy_for(&"00".repeat(32)),
        "other-fw",
    );
    for (id, s, check) in [
        (
            "ca",
            spec("ca", &kms.socket).tenant_ca_pem(attacker_ca),
            "vm-policy:tenant-ca",
        ),
        (
            "key",
            spec("key", &kms.socket).managed_by(&attacker),
            "vm-policy:management-key",
        ),
        (
            "pol",
            spec("pol", &kms.socket).policy_with(json!({"on_tampering": "alert"})),
            "vm-policy:policy",
        ),
        ("fw", spec("fw", &kms_other_fw.socket), "vm-policy:firmware"),
    ] {
        assert_release_refused(&t, &dir.join("state"), id, &s, check);
    }

    // The tenant's own VM gets the key and runs the decrypted image.
    let r = t.create_vm(&spec("ok", &kms.socket));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "ok", ended, TO_END);
    assert_eq!(v["reason"], "powered-off", "{v}");
    let out = std::fs::read_to_string(console("ok")).unwrap_or_default();
    assert!(
        out.contains("IMG:HELLO-FROM-THE-ENCRYPTED-IMAGE!!"),
        "{out}"
    );
    let page = dir.join("state/vms/ok/config.page");
    assert_eq!(v["pcr23"], expected_pcr23(&t, &fw, &page, Tenant::shared()));
    let hits = grep_dir(&dir, marker);
    assert!(hits.is_empty(), "plaintext found in {hits:?}");
}

/// Issue #15: the key service judges the host's runtime integrity as the boot server
/// does. An inventory that requires IMA refuses this IMA-less host (`ima:no-list`), so a
/// host whose root could reset PCRs unseen gets no image key; with `"none"` the key is
/// released and the service logs that runtime integrity was not checked.
#[test]
fn a_host_without_the_ima_list_its_inventory_requires_gets_no_image_key() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let tenant = tpm.scratch("tenant");
    let (t, inventory) = tvpd_and_inventory(&tpm, &dir, &["--image-dir", tenant.to_str().unwrap()]);
    assert!(
        !Path::new("/sys/kernel/security/ima/binary_runtime_measurements").exists(),
        "this test needs a host kernel without IMA (the swtpm host)"
    );
    tvp_tests::encrypted_image(&tenant, &vec![0x5au8; 10_000]);
    let p = |n: &str| tenant.join(n).to_str().unwrap().to_string();
    let body = |sock: &Path| {
        format!(
            "{{\"image\":\"{}\",\"kms_socket\":\"{}\"}}",
            p("img.enc"),
            sock.display()
        )
    };

    // The inventory requires IMA (an allowlist, here allowing tvpd itself): refused.
    let mut ima = inventory.clone();
    ima["hosts"][0]["runtime_integrity"] = json!({"ima": {"entries": [
        {"digest": format!("sha256:{}", "ab".repeat(32)), "path": "/usr/local/bin/tvpd"}]}});
    let kms_ima = Kms::start(&tenant, &tenant.join("kms.key"), &ima, "ima");
    let r = t.api("POST", "/v1/images/verify", Some(&body(&kms_ima.socket)));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 422, "{text}");
    assert!(
        text.contains("release_refused") && text.contains("at check ima:no-list"),
        "{text}"
    );
    assert!(text.contains("no IMA measurement list"), "{text}");

    // "none": released, and the service's log says runtime integrity was not checked.
    let mut none = inventory.clone();
    none["hosts"][0]["runtime_integrity"] = json!("none");
    let (kms_none, log) = Kms::start_logged(&tenant, &tenant.join("kms.key"), &none, "none");
    let r = t.api("POST", "/v1/images/verify", Some(&body(&kms_none.socket)));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 200, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["key_released"], true, "{r}");
    assert_eq!(r["image_verified"], true, "{r}");
    drop(kms_none);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("\"runtime_integrity\":\"not-checked\"")
            && logged.contains("runtime integrity was not checked"),
        "{logged}"
    );

    // `tvpctl inventory --ima-allowlist FILE --pin-boot-pcrs` records this host's PCRs
    // 0-9 (from a quote checked against its AK) in the IMA entry, which the service
    // (like every verifier) then holds the host to.
    let expect = tenant.join("expected.json");
    std::fs::write(
        &expect,
        json!({"pcrs": {"sha256": inventory["hosts"][0]["platform_pcrs"]}}).to_string(),
    )
    .unwrap();
    let allow = tenant.join("allow.json");
    std::fs::write(
        &allow,
        ima["hosts"][0]["runtime_integrity"]["ima"].to_string(),
    )
    .unwrap();
    let (e, a) = (expect.to_str().unwrap(), allow.to_str().unwrap());
    let (code, out, err) = t.tvpctl(&[
        "inventory",
        "--expect",
        e,
        "--ima-allowlist",
        a,
        "--pin-boot-pcrs",
    ]);
    assert_eq!(code, 0, "{err}");
    let pinned: Value = serde_json::from_str(&out).unwrap();
    let boot = &pinned["hosts"][0]["runtime_integrity"]["ima"]["boot_pcrs"];
    let now = t.api_json(
        "POST",
        "/v1/host/quote",
        Some(&format!(
            r#"{{"nonce":"{}","pcrs":[0,1,2,3,4,5,6,7,8,9]}}"#,
            "11".repeat(16)
        )),
    );
    for i in 0..10 {
        let k = i.to_string();
        assert_eq!(boot[&k], now["pcrs"]["sha256"][&k], "PCR {i}: {pinned}");
    }
    assert!(boot["10"].is_null(), "{pinned}");
    // Without an allowlist there is no IMA entry to pin them in: a usage error.
    let (code, _, err) = t.tvpctl(&["inventory", "--expect", e, "--pin-boot-pcrs"]);
    assert_eq!(code, 2, "{err}");
}
