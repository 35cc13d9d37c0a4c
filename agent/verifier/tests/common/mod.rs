//! A private swtpm driven by tpm2-tools, for the integration tests of this crate.
// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private temp dir and the swtpm started in it; both removed/killed on drop, even
/// when the test fails.
pub struct Swtpm {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // this child only, by its pid
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

impl Swtpm {
    pub fn start() -> Swtpm {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("tvp-verifier-swtpm-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let mut tpm = Swtpm {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            let port = free_port_pair();
            let child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpmstate")
                .arg(format!("dir={}", tpm.dir.display()))
                .arg("--tpm2")
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            tpm.child = Some(child);
            tpm.port = port;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return tpm;
                }
                if let Some(Ok(Some(_))) = tpm.child.as_mut().map(|c| c.try_wait()) {
                    break; // exited (port taken?): retry
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(mut c) = tpm.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        panic!("swtpm did not start");
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    /// Run a tpm2-tools command against this swtpm in its dir; panics on failure. Then
    /// flush transient objects and sessions (there is no resource manager).
    pub fn tool(&self, args: &[&str]) {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(&self.dir)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for f in ["-t", "-s"] {
            let _ = Command::new("tpm2_flushcontext")
                .arg(f)
                .current_dir(&self.dir)
                .env("TPM2TOOLS_TCTI", self.tcti())
                .output();
        }
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
