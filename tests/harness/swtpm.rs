//! A private swtpm per test.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running swtpm with its own state directory and TCP ports.
pub struct Swtpm {
    /// Data port; the control port is `port + 1`.
    pub port: u16,
    child: Child,
    dir: TempDir,
}

/// swtpm's log of the bytes it exchanged, next to its state.
const BUS_LOG: &str = "bus.log";

fn pick_ports() -> u16 {
    loop {
        let p: u16 = 20_000 + (rand::random::<u16>() % 40_000);
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
}

impl Swtpm {
    /// tvpd's TPM service (thread, provisioning at tvpd's default handles) on this
    /// swtpm, for tests and benchmarks that use tvpd's parts in process.
    pub fn service(&self) -> tvp_agent::tpm::service::TpmService {
        tvp_agent::tpm::service::TpmService::start(
            self.tcti(),
            tvp_agent::tpm::ProvisionConfig {
                ek_handle: 0x8101_0001,
                ak_handle: 0x8101_0002,
                ak_algorithm: Default::default(),
            },
        )
        .expect("TPM service on swtpm")
    }

    /// A TPM with an EK certificate made by `swtpm_setup` (as a manufacturer would).
    pub fn with_ek_cert() -> Swtpm {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--tpmstate"])
            .arg(&state)
            .args([
                "--createek",
                "--create-ek-cert",
                "--create-platform-cert",
                "--lock-nvram",
                "--pcr-banks",
                "sha256",
                "--overwrite",
            ])
            .output()
            .expect("run swtpm_setup");
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::start_in(dir)
    }

    /// A blank TPM (no EK certificate).
    pub fn blank() -> Swtpm {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("state")).expect("state dir");
        Self::start_in(dir)
    }

    /// A blank TPM that logs every command and response it exchanges (swtpm log level
    /// 20): what an observer on the TPM bus sees, read back with [`Swtpm::bus`].
    pub fn blank_logged() -> Swtpm {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("state")).expect("state dir");
        Self::start_logging(dir, true)
    }

    /// Every command (`true`) and response (`false`) on the bus so far, in order, as
    /// swtpm logged them (only for a TPM from [`Swtpm::blank_logged`]).
    pub fn bus(&self) -> Vec<(bool, Vec<u8>)> {
        let log = std::fs::read_to_string(self.dir.path().join(BUS_LOG)).unwrap_or_default();
        let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut current: Option<(bool, Vec<u8>)> = None;
        for line in log.lines() {
            let l = line.trim();
            let dir = if l.starts_with("SWTPM_IO_Read:") {
                Some(true)
            } else if l.starts_with("SWTPM_IO_Write:") {
                Some(false)
            } else {
                None
            };
            if let Some(d) = dir {
                out.extend(current.take());
                current = Some((d, Vec::new()));
                continue;
            }
            let bytes: Option<Vec<u8>> = l
                .split_whitespace()
                .map(|t| u8::from_str_radix(t, 16).ok().filter(|_| t.len() == 2))
                .collect();
            match (bytes, current.as_mut()) {
                (Some(b), Some((_, buf))) if !b.is_empty() => buf.extend(b),
                _ => out.extend(current.take()),
            }
        }
        out.extend(current);
        out
    }

    fn start_in(dir: TempDir) -> Swtpm {
        Self::start_logging(dir, false)
    }

    fn start_logging(dir: TempDir, log_bus: bool) -> Swtpm {
        for _ in 0..10 {
            let port = pick_ports();
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", dir.path().join("state").display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .args(if log_bus {
                    vec![
                        "--log".to_string(),
                        format!("file={},level=20", dir.path().join(BUS_LOG).display()),
                    ]
                } else {
                    Vec::new()
                })
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn swtpm");
            if wait_listening(&mut child, port) {
                return Swtpm { port, child, dir };
            }
            // Lost a race for the port: kill our own child and try another pair.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start swtpm on a free port");
    }

    /// The TCTI string for tss-esapi / tvpd.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TCTI string for tpm2-tools (`TPM2TOOLS_TCTI`).
    pub fn tools_tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A scratch directory next to the TPM's state, removed with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh subdirectory for a test's files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// The process id (for tests that must see it alive).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn wait_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
