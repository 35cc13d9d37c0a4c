//! The real guest firmware (pxe-firmware/firmware) in tvp-vmm: it boots through its
//! ring-0 stub into Rust at CPL 3, reads the configuration page, talks to the mailbox,
//! reports milestones and powers off; and the stub contains what the CPL-3 code must
//! not do. The images come from `scripts/build-firmware.sh` (cached by cargo).
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use tvp_vmm_channel::{ExitReason, VmmMessage};

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

/// The tenant side of one network boot: PKI, reservations, the boot server inside the
/// namespace (in a thread), and the configuration page trusting the tenant CA.
struct Tenant {
    dir: tempfile::TempDir,
    ca_der: &'static [u8],
}

impl Tenant {
    fn new(server_name: &str) -> Tenant {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let st = Command::new("bash")
            .arg(root.join("scripts/tenant-pki.sh"))
            .arg(dir.path())
            .arg(server_name)
            .status()
            .unwrap();
        assert!(st.success(), "tenant-pki.sh");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(dir.path().join("ca.pem"))
            .output()
            .unwrap()
            .stdout;
        Tenant {
            dir,
            ca_der: Box::leak(der.into_boxed_slice()),
        }
    }

    /// Starts the boot server in `ns` for `connections` connections; returns its
    /// JSON-lines report when it is done. Without tvpd there is no TPM: the test peer's
    /// evidence is refused, so these boots end at the attestation check.
    fn serve(
        &self,
        ns: &NetNs,
        reservations: &str,
        connections: usize,
    ) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
        use tvp_boot_server::{
            reservations::Reservations, server::BootServer, server::Tenant, tls,
        };
        let config = tls::server_config(
            &self.dir.path().join("server.pem"),
            &self.dir.path().join("server.key"),
        )
        .unwrap();
        // Lines "I U"; these boots check no expectation beyond U, I, CA and name.
        let lines: String = reservations
            .lines()
            .map(|l| format!("{l} memory=any vcpus=any image=any disk=any management=any\n"))
            .collect();
        let res = Reservations::parse(&lines).unwrap();
        let listener = ns.listen("10.0.0.1:8443");
        let tenant = Tenant {
            inventory: Default::default(),
            firmware: std::fs::read(firmware("")).unwrap(),
            ca_der: self.ca_der.to_vec(),
            server_name: "boot.tenant.example".into(),
            workload: Vec::new(),
            // No tvpd here, so no management event: these boots end at the evidence.
            management: tvp_boot_server::expect::TenantManagement {
                digest: [0; 32],
                key_id: String::new(),
            },
        };
        std::thread::spawn(move || {
            let report = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
            struct Sink(std::sync::Arc<Mutex<Vec<u8>>>);
            impl std::io::Write for Sink {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            BootServer::new(config, res, tenant, Box::new(Sink(report.clone())))
                .with_client_timeout(std::time::Duration::from_secs(3))
                .serve(&listener, Some(connections));
            let text = String::from_utf8(report.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|v| v["event"] != "listening")
                .collect()
        })
    }
}

/// Boots the firmware in `ns` with `cfg`, tvpd played by the test peer.
fn boot_in(ns: &NetNs, fw: &Path, cfg: tvp_abi::config::Config<'_>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("config.page");
    std::fs::write(&page, cfg.encode().unwrap()).unwrap();
    VmRun::new(dir.path(), fw, &page)
        .in_netns(&ns.name)
        .args(&["--tap", "tap0"])
        .run()
}

/// A test configuration with the current time (the certificates are fresh).
fn tls_config(auth: &'static [u8]) -> tvp_abi::config::Config<'static> {
    let mut cfg = config(auth);
    cfg.time_unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    cfg
}

fn tunnel_measurements(run: &Run) -> Vec<String> {
    run.messages
        .iter()
        .filter_map(|m| match m {
            VmmMessage::TunnelEstablished { measurement, .. } => Some(hex::encode(measurement)),
            _ => None,
        })
        .collect()
}

#[test]
fn firmware_boots_over_tls_both_ends_agree_on_the_tunnel_measurement_a_failed_attestation_does_not_spend_the_reservation_and_evidence_without_a_tpm_is_rejected(
) {
    require!(Need::Netns, "openssl");
    let ns = NetNs::create("tls");
    let fw = firmware("");
    let tenant = Tenant::new("boot.tenant.example");
    let server = tenant.serve(&ns, "10.0.0.2 U-tls-1\n10.0.0.9 U-tls-2\n", 4);
    let mut cfg = tls_config(b"U-tls-1");
    cfg.ca_cert_der = tenant.ca_der;
    let run = boot_in(&ns, &fw, cfg);
    assert!(run
        .console
        .contains("tls: established with boot.tenant.example"));
    assert!(
        run.console
            .contains("boot server: reservation accepted, attestation requested"),
        "{}",
        run.console
    );
    // The test peer is no TPM: its evidence is refused, no workload is sent.
    assert!(run
        .console
        .contains("boot server: REFUSED attestation-rejected:evidence:format"));
    assert_eq!(boot_failures(&run), vec![10]);
    // The same U again: the failed attestation did not spend the reservation (only a
    // delivery does), so the retry reaches attestation again, its failure counted.
    let again = boot_in(&ns, &fw, cfg);
    let mut others = Vec::new();
    for (u, reason) in [
        (&b"U-unknown"[..], "unknown-auth-code"),
        (&b"U-tls-2"[..], "wrong-address"),
    ] {
        let mut cfg = tls_config(u);
        cfg.ca_cert_der = tenant.ca_der;
        others.push((boot_in(&ns, &fw, cfg), reason));
    }
    let report = server.join().unwrap();
    eprintln!("boot server report: {report:?}");
    assert_eq!(report[0]["event"], "refused");
    assert_eq!(report[0]["check"], "evidence:format");
    let server_m = report[0]["tunnel_measurement"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(run
        .console
        .contains(&format!("tunnel measurement: {server_m}")));
    assert_eq!(tunnel_measurements(&run), vec![server_m]);
    assert!(milestones(&run).contains(&7));

    assert!(again
        .console
        .contains("boot server: REFUSED attestation-rejected:evidence:format"));
    assert_eq!(boot_failures(&again), vec![10]);
    assert_eq!(report[1]["reason"], "attestation-rejected:evidence:format");
    assert_eq!(
        (&report[0]["failures"], &report[0]["spent"]),
        (&serde_json::json!(1), &serde_json::json!(false))
    );
    assert_eq!(report[1]["failures_before"], 1);
    assert_eq!(report[1]["failures"], 2);
    // An unknown U, and a U reserved for another address.
    for (i, (r, reason)) in others.iter().enumerate() {
        assert!(r
            .console
            .contains(&format!("boot server: REFUSED {reason}")));
        assert_eq!(boot_failures(r), vec![8]);
        assert!(tunnel_measurements(r).is_empty());
        assert_eq!(report[2 + i]["reason"], *reason);
    }
    for l in run.stderr.lines().filter(|l| l.contains("milestone")) {
        eprintln!("{l}");
    }
}

#[test]
fn firmware_rejects_a_boot_server_certificate_from_another_ca_or_name() {
    require!(Need::Netns, "openssl");
    let ns = NetNs::create("ca");
    let fw = firmware("");
    let tenant = Tenant::new("boot.tenant.example");
    let other = Tenant::new("boot.tenant.example");
    let wrong_name = Tenant::new("evil.example");
    let server = tenant.serve(&ns, "10.0.0.2 U-ca-1\n", 1);
    let mut cfg = tls_config(b"U-ca-1");
    cfg.ca_cert_der = other.ca_der;
    let run = boot_in(&ns, &fw, cfg);
    assert!(
        run.console.contains("certificate rejected"),
        "{}",
        run.console
    );
    assert_eq!(boot_failures(&run), vec![6]);
    assert!(tunnel_measurements(&run).is_empty());
    let report = server.join().unwrap();
    assert_eq!(report[0]["reason"], "tls-failed");

    let server = wrong_name.serve(&ns, "10.0.0.2 U-ca-1\n", 1);
    let mut cfg = tls_config(b"U-ca-1");
    cfg.ca_cert_der = wrong_name.ca_der;
    let run = boot_in(&ns, &fw, cfg);
    assert!(
        run.console.contains("certificate rejected"),
        "{}",
        run.console
    );
    assert_eq!(boot_failures(&run), vec![6]);
    server.join().unwrap();
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

/// A hostile boot server (right certificate, wrong protocol): after the boot request it
/// sends `reply`, then waits for the firmware to give up. Returns the thread.
fn hostile_server(tenant: &Tenant, ns: &NetNs, reply: Vec<u8>) -> std::thread::JoinHandle<()> {
    let config = tvp_boot_server::tls::server_config(
        &tenant.dir.path().join("server.pem"),
        &tenant.dir.path().join("server.key"),
    )
    .unwrap();
    let listener = ns.listen("10.0.0.1:8443");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut h = [0u8; 5];
        tls.read_exact(&mut h).unwrap();
        let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let mut req = vec![0u8; len];
        tls.read_exact(&mut req).unwrap();
        tls.write_all(&reply).unwrap();
        tls.flush().unwrap();
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest);
    })
}

#[test]
fn firmware_fails_closed_on_a_hostile_boot_server_oversized_frame_or_bad_nonce() {
    require!(Need::Netns, "openssl");
    let ns = NetNs::create("hostile");
    let fw = firmware("");
    let tenant = Tenant::new("boot.tenant.example");
    for (reply, code, what) in [
        // A 4 GiB workload frame instead of the attestation request.
        (vec![4u8, 0xff, 0xff, 0xff, 0xff], 18, "oversized frame"),
        // A 1 GiB workload frame (the protocol's maximum) instead of the attestation
        // request: refused on its header, never buffered on the heap (which would run
        // out of memory, failure 13, or wait for the deadline).
        (vec![4u8, 0, 0, 0, 0x40], 18, "workload out of turn"),
        // An unknown frame type.
        (vec![0x7f, 0, 0, 0, 0], 18, "unknown frame type"),
        // A 4-byte nonce: the mailbox refuses it, no quote, no evidence.
        (vec![2u8, 4, 0, 0, 0, 1, 2, 3, 4], 16, "short nonce"),
    ] {
        let server = hostile_server(&tenant, &ns, reply);
        let mut cfg = tls_config(b"U-hostile");
        cfg.ca_cert_der = tenant.ca_der;
        let run = boot_in(&ns, &fw, cfg);
        assert_eq!(boot_failures(&run), vec![code], "{what}: {}", run.console);
        assert!(!run.console.contains("handing over"), "{what}");
        server.join().unwrap();
    }
}
