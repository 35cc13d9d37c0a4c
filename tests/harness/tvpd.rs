//! A private tvpd per test.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tvpctl::client::{self, HttpReply};

use crate::swtpm::Swtpm;
use crate::vm::VmSpec;
use crate::Tenant;

/// A running tvpd bound to one swtpm.
pub struct Tvpd {
    child: Option<Child>,
    /// API socket.
    pub socket: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Where stderr (the log) goes.
    pub log_path: PathBuf,
    tcti: String,
    extra: Vec<String>,
    /// The path the audit NV index is derived from (`dir/state`, also when the test
    /// gives its own `--state-dir`).
    nv_index_of: PathBuf,
    /// This tvpd's TAP prefix: unique, so parallel tests never touch each other's TAPs.
    pub tap_prefix: String,
    /// Network namespace tvpd (and so its VMs and TAPs) runs in, if not the test's own.
    netns: Option<String>,
    /// Environment variables set for the next starts ([`Tvpd::set_env`]).
    env: Vec<(String, String)>,
}

/// A TAP prefix unique to the test directory (the same for every tvpd run on it, so the
/// measured configuration does not change between runs).
fn tap_prefix_for(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("t{:05x}", h.finish() & 0xf_ffff)
}

impl Tvpd {
    /// Start tvpd on `tpm` with files under `dir` and extra flags.
    pub fn start(tpm: &Swtpm, dir: &Path, extra: &[&str]) -> Tvpd {
        let mut t = Tvpd::new(tpm, dir, extra, None);
        t.spawn();
        t
    }

    /// Start tvpd inside network namespace `netns` (its TAPs are created there; the
    /// TPM must be reachable from it, e.g. through `--tcti`).
    pub fn start_in_netns(tpm: &Swtpm, dir: &Path, extra: &[&str], netns: &str) -> Tvpd {
        let mut t = Tvpd::new(tpm, dir, extra, Some(netns));
        t.spawn();
        t
    }

    /// Not started yet: the test's own files under `dir`.
    fn new(tpm: &Swtpm, dir: &Path, extra: &[&str], netns: Option<&str>) -> Tvpd {
        // The test's own --state-dir, if it gives one.
        let state_dir = extra
            .windows(2)
            .find(|w| w[0] == "--state-dir")
            .map_or_else(|| dir.join("state"), |w| PathBuf::from(w[1]));
        Tvpd {
            child: None,
            socket: dir.join("tvpd.sock"),
            state_dir,
            nv_index_of: dir.join("state"),
            log_path: dir.join("tvpd.log"),
            tcti: tpm.tcti(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tap_prefix: tap_prefix_for(dir),
            netns: netns.map(str::to_string),
            env: Vec::new(),
        }
    }

    /// The command line: the test's own files, unless the test overrides a flag.
    fn command(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(crate::bin("tvpd"));
                c
            }
            None => Command::new(crate::bin("tvpd")),
        };
        let nv_index = audit_nv_index(&self.nv_index_of);
        // The test's scratch root: tenants' KMS sockets live beside tvpd's directory.
        let kms_dir = self
            .socket
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        let defaults: [(&str, &std::ffi::OsStr); 8] = [
            ("--kms-socket-dir", kms_dir.as_os_str()),
            ("--config", "/dev/null".as_ref()),
            ("--tap-prefix", self.tap_prefix.as_ref()),
            ("--tcti", self.tcti.as_ref()),
            ("--state-dir", self.state_dir.as_os_str()),
            ("--socket", self.socket.as_os_str()),
            ("--log-level", "debug".as_ref()),
            ("--audit-nv-index", nv_index.as_ref()),
        ];
        for (flag, value) in defaults {
            if !self.extra.iter().any(|e| e == flag) {
                c.arg(flag).arg(value);
            }
        }
        c.args(&self.extra);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Set (or with `None` remove) an environment variable for the next starts.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.into(), v.into()));
        }
    }

    /// Start again (after a stop or crash) and say whether tvpd refused to start:
    /// `Some(exit code)` if it exited before serving, `None` if it serves.
    pub fn try_start_again(&mut self) -> Option<i32> {
        assert!(self.child.is_none(), "tvpd still running");
        let served_before = self.serving_lines();
        self.spawn_child();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status.code().unwrap_or(-1));
                }
            }
            if self.serving_lines() > served_before {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "tvpd neither served nor exited within 60 s; log:\n{}",
            self.log()
        );
    }

    /// Wait up to `within` for tvpd to exit on its own; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return status.code();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn spawn(&mut self) {
        self.spawn_child();
        self.wait_ready();
    }

    fn spawn_child(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tvpd");
        self.child = Some(child);
    }

    /// How many times tvpd's log says it began serving. A connection alone does not
    /// say it serves: the socket is bound before the recovery of earlier VMs, which may
    /// still refuse the start (the connection then closes unanswered); a probe request
    /// would itself be audited.
    fn serving_lines(&self) -> usize {
        self.log().matches("serving the API").count()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("tvpd exited early with {status}; log:\n{}", self.log());
                }
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("tvpd did not come up within 60 s; log:\n{}", self.log());
    }

    /// Run tvpd with these flags to completion (e.g. `--check-config`) and return
    /// (exit code, stdout, stderr).
    pub fn run_once(tpm: &Swtpm, dir: &Path, args: &[&str]) -> (i32, String, String) {
        let t = Tvpd::new(tpm, dir, args, None);
        let out = t.command().output().expect("run tvpd");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The pid of the running tvpd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop with SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok().and_then(|s| s.code())
    }

    /// Kill with SIGKILL (a crash) and wait.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again with the same settings.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Start again after a crash.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "tvpd still running");
        self.spawn();
    }

    /// One API call.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> HttpReply {
        client::request(&self.socket, method, path, body.map(|b| b.as_bytes()))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.log()))
    }

    /// One API call with a tenant authorization token (`X-Tvp-Authorization`).
    pub fn api_token(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: &str,
    ) -> HttpReply {
        client::request_with_token(
            &self.socket,
            method,
            path,
            body.map(|b| b.as_bytes()),
            Some(token),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.log()))
    }

    /// One API call expecting 200 and JSON.
    pub fn api_json(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let r = self.api(method, path, body);
        assert_eq!(
            r.status,
            200,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        serde_json::from_slice(&r.body).expect("JSON reply")
    }

    /// Asserts that the leased PCRs 16 and 23 read zero (no lease holds them), through
    /// a quote of the API.
    pub fn assert_leased_pcrs_free(&self) {
        let body = format!("{{\"nonce\":\"{}\",\"pcrs\":[16,23]}}", crate::nonce_hex(8));
        let ev = self.api_json("POST", "/v1/host/quote", Some(&body));
        for p in ["16", "23"] {
            assert_eq!(
                ev["pcrs"]["sha256"][p],
                "00".repeat(32),
                "PCR {p} not reset"
            );
        }
    }

    /// `POST /v1/vms` with `spec` (the test asserts the status it expects).
    pub fn create_vm(&self, spec: &VmSpec) -> HttpReply {
        self.create_vm_json(&spec.to_json())
    }

    /// `POST /v1/vms` with a spec as JSON text. A created VM is remembered for its
    /// tenant's tokens ([`crate::tenant::remember_vm`]).
    pub fn create_vm_json(&self, spec: &str) -> HttpReply {
        let r = self.api("POST", "/v1/vms", Some(spec));
        if r.status == 201 {
            let v: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
            if let (Some(key), Some(id)) = (v["management_public_key"].as_str(), v["id"].as_str()) {
                crate::tenant::remember_vm(key, id, &self.state_dir, self.ak_name());
            }
        }
        r
    }

    /// VM `vm` on this tvpd as a token names it: this host's AK name and the
    /// incarnation (configuration page digest) the VM runs now.
    pub fn target(&self, vm: &str) -> tvp_audit::token::Target {
        tvp_audit::token::Target {
            host: self.ak_name(),
            vm: vm.to_string(),
            incarnation: crate::tenant::incarnation(&self.state_dir, vm),
        }
    }

    /// This host's AK name (`ak_name` of `GET /v1/host`): what tokens are bound to.
    pub fn ak_name(&self) -> Vec<u8> {
        let h = self.api_json("GET", "/v1/host", None);
        hex::decode(h["ak_name"].as_str().unwrap_or_default()).expect("ak_name is hex")
    }

    /// `DELETE /v1/vms/<id>` with a fresh delete token signed by `tenant` (the test
    /// asserts the status it expects).
    pub fn delete_vm(&self, id: &str, tenant: &Tenant) -> HttpReply {
        let token = tenant.token(id, "delete", &[]);
        self.api_token("DELETE", &format!("/v1/vms/{id}"), None, &token)
    }

    /// VM `id`'s view (`GET /v1/vms/<id>`, expecting 200).
    pub fn vm(&self, id: &str) -> serde_json::Value {
        self.api_json("GET", &format!("/v1/vms/{id}"), None)
    }

    /// The whole audit trail's records (`GET /v1/audit`).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        self.api_json("GET", "/v1/audit", None)["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Run tvpctl against this tvpd; returns (exit code, stdout, stderr).
    pub fn tvpctl(&self, args: &[&str]) -> (i32, String, String) {
        crate::tvpctl(Some(&self.socket), args)
    }

    /// Asserts that `pid` is not in `GET /v1/host/unmanaged-vms`: tvpd counts the VMM
    /// as its own (or it is gone), not as a stranger's process on the host.
    pub fn assert_not_unmanaged(&self, pid: u64) {
        let unmanaged = self.api_json("GET", "/v1/host/unmanaged-vms", None);
        assert!(
            unmanaged
                .as_array()
                .expect("unmanaged-vms is an array")
                .iter()
                .all(|u| u["pid"].as_u64() != Some(pid)),
            "{unmanaged}"
        );
    }

    /// Writes this host's AK public key (PEM, from `GET /v1/host`) to `dir/ak.pem`, the
    /// key a tenant pins to verify quotes and audit anchors; returns its path.
    pub fn write_ak_pem(&self, dir: &Path) -> PathBuf {
        let host = self.api_json("GET", "/v1/host", None);
        let pem = host["ak_public_pem"]
            .as_str()
            .expect("GET /v1/host has ak_public_pem");
        let path = dir.join("ak.pem");
        std::fs::write(&path, pem).expect("write ak.pem");
        path
    }

    /// `tvpctl audit anchor --nonce NONCE -o PATH` against this tvpd (the AK-certified
    /// chain head a tenant verifies a log with), asserting success.
    pub fn write_audit_anchor(&self, nonce: &str, path: &Path) {
        let (rc, _, err) = self.tvpctl(&[
            "audit",
            "anchor",
            "--nonce",
            nonce,
            "-o",
            path.to_str().expect("UTF-8 path"),
        ]);
        assert_eq!(rc, 0, "tvpctl audit anchor: {err}");
    }

    /// `tvpctl audit verify LOG --anchor ANCHOR --ak AK --nonce NONCE`: the tenant-side
    /// check of an audit log against an AK-certified anchor (`tvpctl audit anchor`)
    /// for `nonce`; returns (exit code, stdout, stderr).
    pub fn verify_audit_log(
        &self,
        log: &Path,
        anchor: &Path,
        ak: &Path,
        nonce: &str,
    ) -> (i32, String, String) {
        let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
        let (log, anchor, ak) = (path(log), path(anchor), path(ak));
        self.tvpctl(&[
            "audit", "verify", &log, "--anchor", &anchor, "--ak", &ak, "--nonce", nonce,
        ])
    }
}

impl Drop for Tvpd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The audit anchor's NV index for a state directory: the anchor belongs to one audit
/// log, so two tvpds with different state directories on one swtpm (as some tests
/// run them, one after the other) each get their own index; a restart on the same
/// directory finds its own.
fn audit_nv_index(state_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state_dir.hash(&mut h);
    format!("{:#010x}", 0x0150_0000 + (h.finish() % 0x1000) as u32)
}
