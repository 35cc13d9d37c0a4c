//! tvpd's host API end to end: real swtpm, real tvpd process, real clients
//! (curl, tpm2-tools, openssl, raw sockets).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use tvp_tests::{nonce_hex, require, Swtpm, Tvpd};

fn curl(t: &Tvpd, args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&t.socket)
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Replay CEL-JSON records from zeros (independently of tvpd's own code).
fn replay(recs: &[serde_json::Value]) -> String {
    let mut pcr = [0u8; 32];
    for r in recs {
        let d: [u8; 32] = hex::decode(r["digests"][0]["digest"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        pcr = tvp_verifier::eventlog::extend_sha256(&pcr, &d);
    }
    hex::encode(pcr)
}

/// Send raw bytes, read the reply until the server closes (or 5 s pass).
fn raw(t: &Tvpd, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(&t.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).expect("write");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn host_identity_over_curl_with_ek_certificate_chaining_to_swtpm_ca() {
    require!("swtpm", "swtpm_setup", "curl", "openssl");
    let tpm = Swtpm::with_ek_cert();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    let (rc, body) = curl(&t, &["http://tvp/v1/host"]);
    assert_eq!(rc, 0);
    let h: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let host_id = h["host_id"].as_str().unwrap();
    assert_eq!(host_id.len(), 64);
    assert!(h["ak_public_pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN PUBLIC KEY"));
    let ek_pem = h["ek_public_pem"].as_str().unwrap();
    assert!(ek_pem.contains("BEGIN PUBLIC KEY"));
    assert_eq!(h["platform_pcr"], 15);
    let cert = h["ek_certificate_pem"]
        .as_str()
        .expect("EK certificate present");

    // host_id is SHA-256 of the EK's DER SubjectPublicKeyInfo: recompute with openssl.
    let dir = tpm.scratch("files");
    std::fs::write(dir.join("ek.pem"), ek_pem).unwrap();
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(dir.join("ek.pem"))
        .output()
        .unwrap();
    assert!(der.status.success());
    use sha2_hex::digest_hex;
    assert_eq!(digest_hex(&der.stdout), host_id);

    // The certificate certifies this EK and chains to swtpm's local CA.
    std::fs::write(dir.join("ek-cert.pem"), cert).unwrap();
    let cert_key = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(dir.join("ek-cert.pem"))
        .output()
        .unwrap();
    assert!(cert_key.status.success());
    assert_eq!(
        String::from_utf8_lossy(&cert_key.stdout).trim(),
        ek_pem.trim()
    );
    let ca = std::path::Path::new("/var/lib/swtpm-localca");
    let v = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca.join("swtpm-localca-rootca-cert.pem"))
        .arg("-untrusted")
        .arg(ca.join("issuercert.pem"))
        .arg(dir.join("ek-cert.pem"))
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "EK certificate does not chain to swtpm's local CA: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
}

mod sha2_hex {
    pub fn digest_hex(b: &[u8]) -> String {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

#[test]
fn restart_keeps_the_ak_and_continues_the_event_log() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let mut t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    let h1 = t.api_json("GET", "/v1/host", None);
    let log1 = t.api_json("GET", "/v1/host/event-log", None);
    assert_eq!(
        log1.as_array().unwrap().len(),
        5,
        "start marker, tvpd, config, tvp-vmm, firmware"
    );
    assert_eq!(t.stop(), Some(0), "SIGTERM must exit 0");
    assert!(!t.socket.exists(), "socket removed on shutdown");
    t.restart();
    let h2 = t.api_json("GET", "/v1/host", None);
    assert_eq!(h1["ak_public_pem"], h2["ak_public_pem"]);
    assert_eq!(h1["host_id"], h2["host_id"]);
    let log2 = t.api_json("GET", "/v1/host/event-log", None);
    let recs = log2.as_array().unwrap();
    assert_eq!(
        recs.len(),
        10,
        "second start appends to the same boot cycle's log"
    );
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["recnum"], i as u64);
        assert_eq!(r["pcr"], 15);
        assert_eq!(r["content_type"], "tvp");
    }
    // The log replays to the quoted platform PCR.
    let ev = t.api_json(
        "POST",
        "/v1/host/quote",
        Some(&format!("{{\"nonce\":\"{}\"}}", nonce_hex(16))),
    );
    assert_eq!(ev["pcrs"]["sha256"]["15"], replay(recs));
}

#[test]
fn crash_and_restart_recovers_with_a_replaying_log() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let mut t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    t.crash();
    assert!(t.socket.exists(), "a killed tvpd leaves its socket behind");
    t.start_again();
    let ev = t.api_json(
        "POST",
        "/v1/host/quote",
        Some(&format!("{{\"nonce\":\"{}\",\"pcrs\":[15]}}", nonce_hex(8))),
    );
    let recs = ev["event_log"].as_array().unwrap();
    assert_eq!(recs.len(), 10);
    assert_eq!(ev["pcrs"]["sha256"]["15"], replay(recs));
    // A second tvpd on the same socket must refuse to steal it.
    let (code, _, _) = Tvpd::run_once(
        &tpm,
        &tpm.scratch("a"),
        &["--state-dir", tpm.scratch("b").to_str().unwrap()],
    );
    assert_eq!(code, 73, "second instance must exit with EX_CANTCREAT");
}

#[test]
fn unauthorized_uid_gets_403_and_a_log_entry_while_allowed_uid_is_served() {
    require!("swtpm", "setpriv", "curl");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    // World-writable socket so that the SO_PEERCRED check (not file permissions) decides.
    let t = Tvpd::start(
        &tpm,
        &dir,
        &["--socket-mode", "0666", "--allowed-users", "65533"],
    );
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (status, denied) = tvp_tests::curl_as(65534, &t.socket, "http://tvp/v1/host");
    assert_eq!(status, 403, "{denied}");
    assert!(denied.contains("\"forbidden\""), "{denied}");
    assert!(denied.contains("uid 65534"), "{denied}");
    let (status, allowed) = tvp_tests::curl_as(65533, &t.socket, "http://tvp/v1/host");
    assert_eq!(status, 200, "{allowed}");
    let log = t.log();
    assert!(
        log.lines().any(|l| l.contains("request refused")
            && l.contains("uid=65534")
            && l.contains("status=403")),
        "no log entry for the refused caller:\n{log}"
    );
}

#[test]
fn socket_is_created_with_restrictive_mode() {
    require!("swtpm");
    use std::os::unix::fs::PermissionsExt;
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    let mode = std::fs::metadata(&t.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn malformed_requests_get_specific_errors_and_the_daemon_keeps_serving() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &["--max-body-bytes", "4096"]);
    let post = |body: &str| {
        let r = t.api("POST", "/v1/host/quote", Some(body));
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    };
    let long_nonce = format!("{{\"nonce\":\"{}\"}}", "ab".repeat(33));
    let cases: Vec<(&str, u16, &str)> = vec![
        ("{\"nonce\": ", 400, "invalid_json"),
        ("[1,2]", 400, "invalid_json"),
        (
            "{\"nonce\":\"00\",\"color\":\"red\"}",
            400,
            "unknown field `color`",
        ),
        ("{\"nonce\":42}", 400, "invalid type"),
        ("{\"nonce\":\"00\",\"pcrs\":\"15\"}", 400, "invalid type"),
        ("{\"nonce\":\"\"}", 400, "nonce is empty"),
        ("{\"nonce\":\"xyz\"}", 400, "not hex"),
        (&long_nonce, 400, "at most 32"),
        ("{\"nonce\":\"00\",\"pcrs\":[99]}", 400, "PCR 99"),
    ];
    for (body, status, needle) in cases {
        let (s, b) = post(body);
        assert_eq!(s, status, "{body} -> {b}");
        assert!(b.contains(needle), "{body} -> {b}");
        let v: serde_json::Value = serde_json::from_str(&b).expect("error is JSON");
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string());
    }
    // Oversized body: 413 from the declared length, before reading it.
    let big = format!("{{\"nonce\":\"{}\"}}", "0".repeat(10_000));
    let (s, b) = post(&big);
    assert_eq!(s, 413, "{b}");
    assert!(b.contains("body_too_large"));
    // Unknown path, wrong method.
    let r = t.api("GET", "/v1/nothing", None);
    assert_eq!(r.status, 404);
    let r = t.api("DELETE", "/v1/host/quote", None);
    assert_eq!(r.status, 405);
    assert!(String::from_utf8_lossy(&r.body).contains("use POST"));
    // Not JSON content type.
    let reply = raw(
        &t,
        b"POST /v1/host/quote HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert!(reply.starts_with("HTTP/1.1 415"), "{reply}");
    // Not HTTP at all.
    let reply = raw(&t, b"\x00\x01garbage\r\n\r\n");
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    // Chunked body over the limit.
    let mut chunked =
        b"POST /v1/host/quote HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"800\r\n");
        chunked.extend_from_slice(&[b' '; 0x800]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(&t, &chunked);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // Still serving, still the same process.
    t.api_json("GET", "/v1/host", None);
}

#[test]
fn stuck_and_slow_clients_time_out_without_blocking_others() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &["--request-timeout-ms", "2000"]);
    // A client that connects and sends nothing, and one that stops mid-body.
    let mut idle = UnixStream::connect(&t.socket).unwrap();
    let mut slow = UnixStream::connect(&t.socket).unwrap();
    slow.write_all(b"POST /v1/host/quote HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"no")
        .unwrap();
    // Others are served while both are still pending: the slow one has no answer yet.
    t.api_json("GET", "/v1/host", None);
    slow.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    assert!(
        matches!(slow.read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the slow client was answered before the other request was served"
    );
    slow.set_nonblocking(false).unwrap();
    // Then the slow one gets 408 and the idle one is closed by the server.
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = idle
        .read(&mut buf)
        .expect("server must close the idle connection, not leave it open");
    assert_eq!(n, 0, "idle connection must be closed");
}

#[test]
fn activate_credential_recovers_a_secret_made_by_tpm2_makecredential() {
    require!("swtpm", "tpm2_makecredential");
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    let h = t.api_json("GET", "/v1/host", None);
    let dir = tpm.scratch("cred");
    std::fs::write(dir.join("ek.pem"), h["ek_public_pem"].as_str().unwrap()).unwrap();
    let secret: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    std::fs::write(dir.join("secret.bin"), &secret).unwrap();
    let make = |name: &str, out: &str| {
        let o = Command::new("tpm2_makecredential")
            .args(["-T", "none", "-G", "rsa", "-u"])
            .arg(dir.join("ek.pem"))
            .arg("-s")
            .arg(dir.join("secret.bin"))
            .args(["-n", name, "-o"])
            .arg(dir.join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    make(h["ak_name"].as_str().unwrap(), "good.out");
    let (code, out, err) = t.tvpctl(&[
        "activate-credential",
        "--mkcred",
        dir.join("good.out").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), hex::encode(&secret));
    // Bound to another key's name: the TPM refuses to release it.
    let other_name = format!("000b{}", "11".repeat(32));
    make(&other_name, "other.out");
    let (code, _, err) = t.tvpctl(&[
        "activate-credential",
        "--mkcred",
        dir.join("other.out").to_str().unwrap(),
    ]);
    // The caller's blob was refused by the TPM: a 400 naming the refusal, not a 502.
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("400 invalid_argument"), "{err}");
    assert!(err.contains("the TPM refused the credential"), "{err}");
    // Repeated activations do not leak sessions.
    for _ in 0..5 {
        let (code, _, err) = t.tvpctl(&[
            "activate-credential",
            "--mkcred",
            dir.join("good.out").to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    }
}

#[test]
fn config_file_keys_and_flags() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let cfg = dir.join("tvpd.toml");
    std::fs::write(&cfg, "platform_pcr = 14\nlog_format = \"json\"\n").unwrap();
    let (code, out, err) = Tvpd::run_once(
        &tpm,
        &dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--platform-pcr",
            "13",
            "--print-config",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("platform_pcr = 13"), "flag must win: {out}");
    assert!(out.contains("log_format = \"json\""), "{out}");
    std::fs::write(&cfg, "platform_pcr = 23\n").unwrap();
    let (code, _, err) = Tvpd::run_once(
        &tpm,
        &dir,
        &["--config", cfg.to_str().unwrap(), "--check-config"],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("platform_pcr"), "{err}");
    std::fs::write(&cfg, "soket = \"/x\"\n").unwrap();
    let (code, _, err) = Tvpd::run_once(
        &tpm,
        &dir,
        &["--config", cfg.to_str().unwrap(), "--check-config"],
    );
    assert_eq!(code, 78);
    assert!(err.contains("soket"), "{err}");
}

#[test]
fn binding_key_is_certified_by_the_ak_with_the_callers_nonce() {
    require!("swtpm");
    use base64::Engine;
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    let h = t.api_json("GET", "/v1/host", None);
    let nonce = nonce_hex(16);
    let r = t.api_json(
        "POST",
        "/v1/host/binding-key",
        Some(&format!("{{\"nonce\":\"{nonce}\"}}")),
    );
    assert_eq!(r["policy_pcrs"], serde_json::json!([15]));
    assert!(r["public_pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN PUBLIC KEY"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let attest = b64.decode(r["certify_attest"].as_str().unwrap()).unwrap();
    let sig = b64
        .decode(r["certify_signature"].as_str().unwrap())
        .unwrap();
    let public = b64.decode(r["public"].as_str().unwrap()).unwrap();
    let ak = tvp_verifier::AkKey::from_pem(h["ak_public_pem"].as_str().unwrap()).unwrap();
    ak.verify(&attest, &tvp_verifier::tpm::Signature::parse(&sig).unwrap())
        .expect("certification signed by the AK");
    let name = tvp_verifier::tpm::Public::parse_tpm2b(&public)
        .unwrap()
        .name()
        .unwrap();
    assert!(
        attest.windows(name.len()).any(|w| w == name.as_slice()),
        "certifies another key"
    );
    let n = hex::decode(&nonce).unwrap();
    assert!(
        attest.windows(n.len()).any(|w| w == n.as_slice()),
        "nonce not bound"
    );
    // The tenant-side check: certified by this AK with our nonce, policy = PolicyPCR
    // over the platform PCR value we expect (here: the quoted one).
    use tvp_verifier::verify::binding::{pcr_policy_digest, verify_binding_key, BindingError};
    let ev = t.api_json(
        "POST",
        "/v1/host/quote",
        Some(&format!("{{\"nonce\":\"{}\",\"pcrs\":[15]}}", nonce_hex(8))),
    );
    let pcr15: [u8; 32] = hex::decode(ev["pcrs"]["sha256"]["15"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let policy = pcr_policy_digest(&std::collections::BTreeMap::from([(15, pcr15)]));
    let key =
        verify_binding_key(&public, &attest, &sig, &ak, &n, &policy).expect("binding key verifies");
    let pem_key =
        rsa::pkcs8::DecodePublicKey::from_public_key_pem(r["public_pem"].as_str().unwrap())
            .unwrap();
    assert_eq!(key, pem_key, "public_pem is the certified key");
    assert!(matches!(
        verify_binding_key(&public, &attest, &sig, &ak, b"other nonce", &policy),
        Err(BindingError::Nonce { .. })
    ));
    let other_policy = pcr_policy_digest(&std::collections::BTreeMap::from([(15, [7u8; 32])]));
    assert!(matches!(
        verify_binding_key(&public, &attest, &sig, &ak, &n, &other_policy),
        Err(BindingError::Policy { .. })
    ));
    let other = Swtpm::blank();
    let t2 = Tvpd::start(&other, &other.scratch("b"), &[]);
    let other_ak = tvp_verifier::AkKey::from_pem(
        t2.api_json("GET", "/v1/host", None)["ak_public_pem"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        verify_binding_key(&public, &attest, &sig, &other_ak, &n, &policy).err(),
        Some(BindingError::Signature)
    );
    // There is no endpoint that unwraps with it.
    for path in ["/v1/host/binding-key/unwrap", "/v1/host/unwrap"] {
        assert_eq!(t.api("POST", path, Some("{}")).status, 404);
    }
}

#[test]
fn a_sigterm_as_soon_as_the_socket_answers_stops_tvpd_cleanly() {
    // The socket accepts connections before tvpd serves (the VM manager and the
    // recovery of earlier VMs come in between): a SIGTERM in that window used to kill
    // tvpd by the signal's default action (no exit code, socket left behind) because
    // its handler was registered only when serving began.
    // The test-only hook TVP_FAULT_START_DELAY_MS holds tvpd in that window.
    require!("swtpm");
    let tpm = Swtpm::blank();
    let mut t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    t.set_env("TVP_FAULT_START_DELAY_MS", Some("300"));
    for round in 0..3 {
        assert_eq!(t.stop(), Some(0), "round {round}: {}", t.log());
        assert!(!t.socket.exists(), "round {round}: socket removed");
        t.start_again();
        assert!(t.log().contains("holding the start"), "{}", t.log());
    }
    assert_eq!(t.stop(), Some(0), "{}", t.log());
}
