//! The real guest firmware (pxe-firmware/firmware) in tvp-vmm: it boots through its
//! ring-0 stub into Rust at CPL 3, reads the configuration page, talks to the mailbox,
//! reports milestones and powers off; and the stub contains what the CPL-3 code must
//! not do. The images come from `scripts/build-firmware.sh` (cached by cargo).
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use tvp_vmm_channel::{ExitReason, VmmMessage};

/// Serializes the firmware builds of this test binary's threads.
static BUILD: Mutex<()> = Mutex::new(());

/// Builds the firmware (with `features`, "" for the measured image); returns its path.
fn firmware(features: &str) -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/build-firmware.sh"));
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    let out = cmd.output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "firmware build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("sha256 "))
        .expect("build script prints the digest");
    let mut f = line.split_whitespace().skip(1);
    let digest = f.next().unwrap().to_string();
    let path = PathBuf::from(f.next().unwrap());
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(hex::encode(tvp_abi::measure::sha256(&bytes)), digest);
    path
}

fn milestones(run: &Run) -> Vec<u8> {
    run.messages
        .iter()
        .filter_map(|m| match m {
            VmmMessage::Milestone { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

fn boot_failures(run: &Run) -> Vec<u32> {
    run.messages
        .iter()
        .filter_map(|m| match m {
            VmmMessage::BootFailed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn firmware_boots_standalone_prints_config_queries_mailbox_and_powers_off_without_nic() {
    let fw = firmware("");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), b"U-standalone");
    let console = dir.path().join("console.log");
    let out = Command::new(env!("CARGO_BIN_EXE_tvp-vmm"))
        .args(["--log", "info", "run", "--vm-id", "fw", "--standalone"])
        .arg("--firmware")
        .arg(&fw)
        .arg("--config-page")
        .arg(&cfg)
        .arg("--console-log")
        .arg(&console)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = std::fs::read_to_string(&console).unwrap();
    eprintln!("{stderr}\n--- console ---\n{console}");
    assert_eq!(out.status.code(), Some(0));
    assert!(console.contains("tvp-firmware 0.1.0: running at CPL 3, 16 MiB RAM"));
    assert!(console.contains("vip=10.0.0.2/24 gateway=10.0.0.1 boot-server=10.0.0.1:8443"));
    assert!(console.contains("name=boot.tenant.example"));
    assert!(console.contains("mailbox: ABI version 1"));
    assert!(console.contains("BOOT FAILED reason=no-link code=4"));
    for code in [0, 1, 2, 3, 255] {
        assert!(
            stderr.contains(&format!("milestone code={code} ")),
            "milestone {code}"
        );
    }
}

#[test]
fn firmware_reports_milestones_to_tvpd_and_powers_off() {
    let fw = firmware("");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), b"U-channel");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    // No NIC in this VM: the boot stops at the network with NoLink (4).
    assert_eq!(milestones(&run), vec![0, 1, 2, 3, 255]);
    assert_eq!(boot_failures(&run), vec![4]);
    assert!(matches!(
        run.exited(),
        Some(VmmMessage::Exited {
            reason: ExitReason::PoweredOff,
            ..
        })
    ));
    eprintln!("firmware boot to power-off: {:.3} s", run.secs);
}

#[test]
fn cpl3_firmware_writing_the_stubs_pages_faults_and_reports_boot_failed() {
    let fw = firmware("selftest");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), b"selftest:pt-write");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    assert!(run
        .console
        .contains("CPU exception vector=000000000000000e"));
    assert!(!run.console.contains("the write went through"));
    assert_eq!(boot_failures(&run), vec![0x10e]);
}

#[test]
fn cpl3_firmware_cannot_use_ports_outside_the_io_bitmap() {
    let fw = firmware("selftest");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), b"selftest:port");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    assert!(run
        .console
        .contains("CPU exception vector=000000000000000d"));
    assert!(!run.console.contains("the port write went through"));
    assert_eq!(boot_failures(&run), vec![0x10d]);
}

#[test]
fn handover_through_the_stub_runs_the_workload_at_cpl0() {
    let fw = firmware("selftest");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), b"selftest:handover");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    assert!(
        run.console
            .trim_end()
            .ends_with("workload at 0x800000\r\nOK"),
        "{}",
        run.console
    );
    assert!(boot_failures(&run).is_empty());
}

/// A network namespace with a TAP device `tap0` (10.0.0.1/24) created for one test and
/// deleted (with the TAP device) when dropped. Nothing outside it is touched.
struct NetNs {
    name: String,
}

impl NetNs {
    /// `None` when not root (creating namespaces needs it); the caller skips.
    fn create(tag: &str) -> Option<NetNs> {
        // SAFETY (test code): geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: network namespaces need root");
            return None;
        }
        let name = format!("tvpfw-{tag}-{}", std::process::id());
        let ns = NetNs { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ns.exec(&["ip", "addr", "add", "10.0.0.1/24", "dev", "tap0"]);
        ns.exec(&["ip", "link", "set", "tap0", "up"]);
        Some(ns)
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("iproute2");
        assert!(st.success(), "ip {args:?}");
    }

    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        self.ip(&all);
    }

    /// Binds a TCP listener inside the namespace (from a thread that joins it).
    fn listen(&self, addr: &str) -> std::net::TcpListener {
        let path = format!("/var/run/netns/{}", self.name);
        let addr = addr.to_string();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY (test code): setns on this short-lived thread only; the fd is a
            // network namespace file.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            std::net::TcpListener::bind(&addr).unwrap()
        })
        .join()
        .unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn firmware_opens_tcp_to_a_listener_in_a_network_namespace_over_virtio_net() {
    let Some(ns) = NetNs::create("tcp") else {
        return;
    };
    let fw = firmware("");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), b"U-net");
    let listener = ns.listen("10.0.0.1:8443");
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (mut c, peer) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&mut c)
            .read_line(&mut line)
            .unwrap();
        c.write_all(b"hello from the namespace\n").unwrap();
        (peer, line)
    });
    let console = dir.path().join("console.log");
    let t0 = std::time::Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(env!("CARGO_BIN_EXE_tvp-vmm"))
        .args(["--log", "info", "run", "--vm-id", "fw-net", "--standalone"])
        .args(["--tap", "tap0"])
        .arg("--firmware")
        .arg(&fw)
        .arg("--config-page")
        .arg(&cfg)
        .arg("--console-log")
        .arg(&console)
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = std::fs::read_to_string(&console).unwrap();
    eprintln!(
        "{stderr}\n--- console ---\n{console}\nboot to TCP exchange and power-off: {secs:.3} s"
    );
    assert_eq!(out.status.code(), Some(0));
    let (peer, line) = server.join().unwrap();
    assert_eq!(peer.ip().to_string(), "10.0.0.2");
    assert_eq!(line, "tvp-firmware 0.1.0 hello\n");
    assert!(console.contains("tcp: connected to 10.0.0.1:8443"));
    assert!(console.contains("tcp: received 25 bytes: hello from the namespace"));
    assert!(stderr.contains("milestone code=5 "));
}

#[test]
fn firmware_without_a_nic_reports_no_link() {
    let fw = firmware("");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), b"U-nolink");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    assert!(run.console.contains("net: no virtio-net device"));
    assert_eq!(boot_failures(&run), vec![4]);
}
