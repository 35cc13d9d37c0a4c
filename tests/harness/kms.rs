//! The tenant's key-management service (`tvp-kms`) for tests, and a tvpd with the
//! inventory entry such a service needs for its host.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::vm::eventually;
use crate::{bin, Swtpm, Tvpd};

/// A tenant's key-management service (`tvp-kms`), killed on drop.
pub struct Kms {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
}

/// A release policy that lets every VM (and verification) have every image's key:
/// the tests about the host's evidence, not about the VM.
pub const RELEASE_TO_ANY: &str = "[[image]]\nimage_digest = \"any\"\ntenant_ca_sha256 = [\"any\"]\nmanagement_keys = [\"any\"]\npolicy_digests = [\"any\"]\nfirmware_sha256 = [\"any\"]\nallow_verify = true\n";

impl Kms {
    pub fn start(dir: &Path, key: &Path, inventory: &Value, name: &str) -> Kms {
        Kms::start_with_policy(dir, key, inventory, RELEASE_TO_ANY, name)
    }

    pub fn start_with_policy(
        dir: &Path,
        key: &Path,
        inventory: &Value,
        release_policy: &str,
        name: &str,
    ) -> Kms {
        Kms::start_with_stderr(dir, key, inventory, release_policy, name, Stdio::null())
    }

    /// A service whose decision log (stderr) goes to `<name>.log` in `dir`.
    pub fn start_logged(dir: &Path, key: &Path, inventory: &Value, name: &str) -> (Kms, PathBuf) {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let kms = Kms::start_with_stderr(dir, key, inventory, RELEASE_TO_ANY, name, f.into());
        (kms, log)
    }

    fn start_with_stderr(
        dir: &Path,
        key: &Path,
        inventory: &Value,
        release_policy: &str,
        name: &str,
        stderr: Stdio,
    ) -> Kms {
        let inv = dir.join(format!("{name}.json"));
        std::fs::write(&inv, inventory.to_string()).unwrap();
        let policy = dir.join(format!("{name}.toml"));
        std::fs::write(&policy, release_policy).unwrap();
        let socket = dir.join(format!("{name}.sock"));
        let child = Command::new(bin("tvp-kms"))
            .arg("--key")
            .arg(key)
            .arg("--inventory")
            .arg(&inv)
            .arg("--release-policy")
            .arg(&policy)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        assert!(
            eventually(Duration::from_secs(10), Duration::from_millis(20), || {
                UnixStream::connect(&socket).is_ok()
            }),
            "tvp-kms did not start"
        );
        Kms { child, socket }
    }

    pub fn call(&self, req: &Value) -> Value {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    pub fn nonce(&self) -> String {
        self.call(&json!({"op": "nonce"}))["nonce"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Kms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tvpd on `tpm` started with `flags`, and a key-management inventory that expects
/// exactly this host and platform (its AK, EK and the platform PCR it will show).
pub fn tvpd_and_inventory(tpm: &Swtpm, dir: &Path, flags: &[&str]) -> (Tvpd, Value) {
    let (code, expected, err) =
        Tvpd::run_once(tpm, dir, &[flags, &["--print-expected-pcrs"]].concat());
    assert_eq!(code, 0, "{err}");
    let expected: Value = serde_json::from_str(&expected).unwrap();
    let t = Tvpd::start(tpm, dir, flags);
    let h = t.api_json("GET", "/v1/host", None);
    let inventory = json!({"hosts": [{"host_id": h["host_id"], "ak_public_pem": h["ak_public_pem"],
        "ek_name": h["ek_name"], "platform_pcrs": expected["pcrs"]["sha256"]}]});
    (t, inventory)
}

/// Asserts that creating VM `id` with `spec` is refused by the tenant's key service
/// naming release-policy check `check` (`422 release_refused`), that no such VM exists
/// and that no VMM ran for it (no console under tvpd's state directory `state_dir`).
pub fn assert_release_refused(
    t: &Tvpd,
    state_dir: &Path,
    id: &str,
    spec: &crate::VmSpec,
    check: &str,
) {
    let r = t.create_vm(spec);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 422, "{id}: {text}");
    assert!(
        text.contains("release_refused") && text.contains(check),
        "{id}: expected {check} in {text}"
    );
    assert_eq!(t.api("GET", &format!("/v1/vms/{id}"), None).status, 404);
    assert!(
        !state_dir.join(format!("vms/{id}/console.log")).exists(),
        "{id}: a VMM ran"
    );
}
