//! API roles and the limits that keep the API available, end to end: real swtpm,
//! real tvpd, callers of other uids (docs/api.md, "Roles" and "Limits";
//! docs/audit.md, "Refused requests"). Each test runs the attack.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tvp_tests::{nonce_hex, require, skip_unless, Swtpm, Tvpd, VmSpec};

/// An unprivileged uid that no test configures: it has no role.
const STRANGER: u32 = 4343;
/// The uid the tests make an observer.
const OBSERVER: u32 = 65533;

/// Let other uids reach the socket (the SO_PEERCRED check, not file modes, decides).
fn open_dirs(tpm: &Swtpm, dir: &Path) {
    for d in [tpm.dir(), dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `curl` as `uid` (setpriv) with `args` after the socket; returns the status codes
/// (one line each: `-w %{http_code}`) and the bodies, which go to stdout before them.
fn curl_as(uid: u32, socket: &Path, args: &[&str]) -> String {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "curl",
            "-s",
            "--unix-socket",
        ])
        .arg(socket)
        .args(args)
        .output()
        .expect("setpriv curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One request as `uid`: (status, body).
fn request_as(
    uid: u32,
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let url = format!("http://tvp{path}");
    let mut args = vec!["-X", method, "-w", "\n%{http_code}"];
    if let Some(b) = body {
        args.extend(["-H", "content-type: application/json", "-d", b]);
    }
    args.push(&url);
    let text = curl_as(uid, socket, &args);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Connections opened as `uid` and left idle (nothing sent) until dropped. They are
/// opened by a thread of their own that changes only its own effective ids (raw
/// syscalls: glibc's wrappers would change every thread of the test process), so
/// SO_PEERCRED names `uid`.
struct IdleConnections {
    stop: mpsc::Sender<()>,
    opened: usize,
}

impl IdleConnections {
    fn open(uid: u32, socket: &Path, n: usize) -> IdleConnections {
        let socket = socket.to_path_buf();
        let (count_tx, count_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            // SAFETY: plain syscalls on this thread's own credentials.
            let ok = unsafe {
                libc::syscall(libc::SYS_setresgid, -1i64, uid as i64, -1i64) == 0
                    && libc::syscall(libc::SYS_setresuid, -1i64, uid as i64, -1i64) == 0
            };
            assert!(ok, "cannot take uid {uid} on this thread");
            let mut held = Vec::new();
            for _ in 0..n {
                // On a server that takes slots before checking the caller, the
                // listen backlog fills and connect blocks: report progress as we go.
                match UnixStream::connect(&socket) {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
                let _ = count_tx.send(held.len());
            }
            let _ = stop_rx.recv();
        });
        // Wait until all are open, or 5 s (a server that stalls them stalls us).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut opened = 0;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match count_rx.recv_timeout(left) {
                Ok(k) => {
                    opened = k;
                    if k == n {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        IdleConnections { stop, opened }
    }
}

impl Drop for IdleConnections {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// Root (a manager) asks for the host; returns how long the answer took.
fn manager_request_time(t: &Tvpd) -> Duration {
    let started = Instant::now();
    let r = t.api("GET", "/v1/host", None);
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    took
}

#[test]
fn an_observer_may_read_but_a_state_change_is_refused_naming_the_manager_role() {
    require!("swtpm", "curl", "setpriv");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    open_dirs(&tpm, &dir);
    let observer = OBSERVER.to_string();
    let t = Tvpd::start(
        &tpm,
        &dir,
        &["--socket-mode", "0666", "--observer-users", &observer],
    );
    let s = &t.socket;
    let nonce = format!("{{\"nonce\":\"{}\"}}", nonce_hex(16));
    // What an observer may do.
    for (method, path, body) in [
        ("GET", "/v1/host", None),
        ("GET", "/v1/vms", None),
        ("POST", "/v1/host/quote", Some(nonce.as_str())),
    ] {
        let (code, body) = request_as(OBSERVER, s, method, path, body);
        assert_eq!(code, 200, "{method} {path}: {body}");
    }
    let platform = format!("{{\"nonce\":\"{}\",\"pcrs\":[15]}}", nonce_hex(16));
    assert_eq!(
        request_as(OBSERVER, s, "POST", "/v1/host/quote", Some(&platform)).0,
        200
    );
    // What it may not: every state change, secrets, other PCRs, audit reads.
    let spec = VmSpec::measured("obs-1").to_json();
    let other_pcrs = format!("{{\"nonce\":\"{}\",\"pcrs\":[16,23]}}", nonce_hex(16));
    for (method, path, body) in [
        ("POST", "/v1/vms", Some(spec.as_str())),
        ("DELETE", "/v1/vms/obs-1", None),
        (
            "POST",
            "/v1/vms/obs-1/operations",
            Some(r#"{"op":"pause"}"#),
        ),
        ("POST", "/v1/host/quote", Some(other_pcrs.as_str())),
        ("POST", "/v1/host/binding-key", Some(nonce.as_str())),
        ("GET", "/v1/host/event-log", None),
        ("GET", "/v1/vms/obs-1/audit", None),
    ] {
        let (code, body) = request_as(OBSERVER, s, method, path, body);
        assert_eq!(code, 403, "{method} {path}: {body}");
        let e: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(
            e["error"]["code"], "role_required",
            "{method} {path}: {body}"
        );
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("needs the manager role") && msg.contains("observer role"),
            "{method} {path}: {msg}"
        );
    }
    // The VM was not created; a manager (root) still reaches the VM layer.
    assert!(t
        .api_json("GET", "/v1/vms", None)
        .as_array()
        .unwrap()
        .is_empty());
    let r = t.create_vm(&VmSpec::measured("BAD ID"));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let log = t.log();
    assert!(
        log.lines()
            .any(|l| l.contains("request refused") && l.contains("role_required")),
        "{log}"
    );
}

#[test]
fn idle_connections_from_a_uid_without_a_role_do_not_delay_a_manager() {
    require!("swtpm", "curl", "setpriv");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    open_dirs(&tpm, &dir);
    let t = Tvpd::start(&tpm, &dir, &["--socket-mode", "0666"]);
    let base = manager_request_time(&t);
    // 200 idle connections from a uid without a role: refused at accept (403) and
    // closed at once, without taking a slot.
    let stranger = IdleConnections::open(STRANGER, &t.socket, 200);
    let took = manager_request_time(&t);
    println!(
        "manager request with {} idle connections of a uid without a role: {took:?} (alone: {base:?})",
        stranger.opened
    );
    assert!(took < Duration::from_secs(5), "manager delayed {took:?}");
    // A refused caller is answered at once, with the reason.
    let (code, body) = request_as(STRANGER, &t.socket, "GET", "/v1/host", None);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("uid 4343") && body.contains("observer_users"),
        "{body}"
    );
    drop(stranger);
}

#[test]
fn idle_connections_from_an_observer_do_not_delay_a_manager() {
    require!("swtpm", "curl", "setpriv");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    open_dirs(&tpm, &dir);
    let observer = OBSERVER.to_string();
    let t = Tvpd::start(
        &tpm,
        &dir,
        &["--socket-mode", "0666", "--observer-users", &observer],
    );
    // 200 idle connections from an observer: it gets max_connections_per_uid (16),
    // the others are answered 503 and closed; managers keep their reserved slots.
    let observers = IdleConnections::open(OBSERVER, &t.socket, 200);
    let took = manager_request_time(&t);
    println!(
        "manager request with {} idle connections of an observer: {took:?}",
        observers.opened
    );
    assert!(took < Duration::from_secs(5), "manager delayed {took:?}");
    let (code, body) = request_as(OBSERVER, &t.socket, "GET", "/v1/host", None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("max_connections_per_uid"), "{body}");
    drop(observers);
    // Its slots are free again once it closes them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while request_as(OBSERVER, &t.socket, "GET", "/v1/host", None).0 != 200 {
        assert!(Instant::now() < deadline, "observer slots not released");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `denied-requests` records after `from` and the refusals they count.
fn denial_records(recs: &[Value]) -> (usize, u64) {
    let mut n = 0;
    let mut refused = 0;
    for r in recs.iter().filter(|r| r["op"] == "denied-requests") {
        n += 1;
        assert_eq!(r["decision"], "deny", "{r}");
        let reason = r["reason"].as_str().unwrap_or_default();
        refused += reason
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (n, refused)
}

#[test]
fn a_thousand_refused_requests_cost_far_fewer_than_a_thousand_nv_writes() {
    require!("swtpm", "curl", "setpriv");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    open_dirs(&tpm, &dir);
    let t = Tvpd::start(&tpm, &dir, &["--socket-mode", "0666"]);
    // Every audit record is one fsync and one extend of the TPM NV anchor.
    let before = t.audit_records().len();
    let started = Instant::now();
    let codes = curl_as(
        STRANGER,
        &t.socket,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            "http://tvp/v1/host?n=[1-1000]",
        ],
    );
    let took = started.elapsed();
    let refused = codes.lines().filter(|c| *c == "403").count();
    assert_eq!(refused, 1000, "{codes}");
    let recs = t.audit_records();
    let added = recs.len() - before;
    let (n, counted) = denial_records(&recs[before..]);
    println!("1000 refused requests in {took:?}: {added} audit records (NV writes), {n} aggregated denial record(s)");
    // The records: the first GET /v1/audit, and one or two aggregated denial records.
    assert!(added <= 4, "{added} audit records for 1000 refusals");
    assert_eq!(counted, 1000, "{:#?}", &recs[before..]);
    let r = recs[before..]
        .iter()
        .find(|r| r["op"] == "denied-requests")
        .unwrap();
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("uid 4343") && reason.contains("403 forbidden"),
        "{reason}"
    );
}

#[test]
fn kms_socket_outside_its_directory_is_refused_and_never_connected() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let images = tpm.scratch("images");
    // kms_socket_dir: the harness's default, the test's scratch root (tpm.dir()).
    let kms_dir = tpm.dir().to_path_buf();
    let t = Tvpd::start(&tpm, &dir, &["--image-dir", images.to_str().unwrap()]);
    // An encrypted image, so that tvpd would ask the key-management service.
    tvp_tests::encrypted_image(&images, &vec![7u8; 8192]);
    let p = |n: &str| images.join(n).to_str().unwrap().to_string();
    // Some other service's socket on the host, outside kms_socket_dir.
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("service.sock");
    let listener = UnixListener::bind(&outside).unwrap();
    listener.set_nonblocking(true).unwrap();
    let up = elsewhere.path().file_name().unwrap().to_str().unwrap();
    let escape = format!("{}/../{up}/service.sock", kms_dir.display());
    for (path, why) in [
        (outside.to_str().unwrap(), "outside kms_socket_dir"),
        ("service.sock", "not an absolute path"),
        (escape.as_str(), "'..'"),
    ] {
        let body = format!(
            "{{\"image\":\"{}\",\"kms_socket\":\"{path}\"}}",
            p("img.enc")
        );
        let r = t.api("POST", "/v1/images/verify", Some(&body));
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "verify {path}: {text}");
        assert!(
            text.contains("kms_socket") && text.contains(why),
            "verify {path}: {text}"
        );
        let spec = VmSpec::measured("kms-1").image("img.enc", Path::new(path));
        let r = t.create_vm(&spec);
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "create {path}: {text}");
        assert!(
            text.contains("image.kms_socket") && text.contains(why),
            "create {path}: {text}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        listener.accept().is_err(),
        "tvpd connected to a socket outside kms_socket_dir"
    );
}

/// Send a request head of `headers` header lines of `each` bytes at once; returns
/// the answer (status line first).
fn send_big_head(socket: &Path, headers: usize, each: usize) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut head = String::from("GET /v1/host HTTP/1.1\r\nhost: tvp\r\n");
    for i in 0..headers {
        head.push_str(&format!("x-h{i}: {}\r\n", "b".repeat(each)));
    }
    head.push_str("connection: close\r\n\r\n");
    println!("head of {} bytes in {headers} headers", head.len());
    // The server may answer and close before it has read everything.
    let _ = s.write_all(head.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_request_head_over_64_kib_is_refused() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    // 109 KB in 80 headers got through the HTTP layer's own buffer limit (which
    // stopped one 112 KiB header, and heads of 115 KB); both are refused.
    for (headers, each) in [(80, 1356), (1, 112 * 1024)] {
        let answer = send_big_head(&t.socket, headers, each);
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{headers} headers: {answer}"
        );
        if headers > 1 {
            // tvpd's own check, with the reason (the HTTP layer answers without one).
            assert!(
                answer.contains("head_too_large") && answer.contains("at most 65536"),
                "{answer}"
            );
        }
    }
    // Requests within the limit still work.
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
}

/// A group created for one test, removed when dropped.
struct TempGroup(String);

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.0).status();
    }
}

#[test]
fn group_membership_is_resolved_at_start_and_refreshed_on_sighup() {
    require!("swtpm", "curl", "setpriv", "groupadd", "gpasswd", "groupdel");
    skip_unless!(
        nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .is_some(),
        "no user 'nobody'"
    );
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    open_dirs(&tpm, &dir);
    let name = format!("tvpt{}", std::process::id() % 100_000);
    assert!(Command::new("groupadd")
        .arg(&name)
        .status()
        .unwrap()
        .success());
    let group = TempGroup(name);
    let t = Tvpd::start(
        &tpm,
        &dir,
        &["--socket-mode", "0666", "--allowed-groups", &group.0],
    );
    let nobody = 65534;
    assert_eq!(
        request_as(nobody, &t.socket, "GET", "/v1/host", None).0,
        403
    );
    // Added to the group: nothing changes until tvpd is told (no per-request lookup).
    assert!(Command::new("gpasswd")
        .args(["-a", "nobody", &group.0])
        .output()
        .unwrap()
        .status
        .success());
    assert_eq!(
        request_as(nobody, &t.socket, "GET", "/v1/host", None).0,
        403
    );
    let pid = nix::unistd::Pid::from_raw(t.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = request_as(nobody, &t.socket, "GET", "/v1/host", None);
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after SIGHUP: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(t
        .log()
        .contains("API roles and group memberships resolved again"));
}
