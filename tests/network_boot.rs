//! The measured network boot end to end, on real KVM, a real swtpm, a real TAP and
//! rustls on both ends: tvpd (in a network namespace this test creates) starts the real
//! firmware, which opens TLS 1.3 to the tenant's boot server over the VM's TAP; the
//! boot server attests the tunnel with tvpd's quote (tvp-verifier) and delivers a
//! signed workload, which runs after the handover and prints on the console.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tvp_tests::{bin, require_tools, Swtpm, Tvpd};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A network namespace of this test: loopback up, bridge `br0` = 10.0.0.1/24 for the
/// VMs' TAPs. Deleted on drop (also when the test fails).
struct NetNs {
    name: String,
}

impl NetNs {
    fn create(tag: &str) -> Option<NetNs> {
        let name = format!(
            "tvp-nb-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u16>()
        );
        if !Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .ok()?
            .success()
        {
            eprintln!("skipped: cannot create a network namespace");
            return None;
        }
        let ns = NetNs { name };
        for cmd in [
            "ip link set lo up",
            "ip link add br0 type bridge",
            "ip addr add 10.0.0.1/24 dev br0",
            "ip link set br0 up",
        ] {
            ns.exec(cmd);
        }
        Some(ns)
    }

    fn exec(&self, cmd: &str) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd.split(' '))
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    }

    /// Binds a listener inside the namespace.
    fn listen(&self, addr: &str) -> TcpListener {
        let path = format!("/var/run/netns/{}", self.name);
        let addr = addr.to_string();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY (test code): setns on this short-lived thread only.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            TcpListener::bind(&addr).unwrap()
        })
        .join()
        .unwrap()
    }

    /// Forwards 127.0.0.1:`port` inside the namespace to 127.0.0.1:`port` of the
    /// test's own namespace (loopback to loopback: tvpd in the namespace reaches the
    /// test's swtpm).
    fn forward_loopback(&self, port: u16) {
        let l = self.listen(&format!("127.0.0.1:{port}"));
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(inner) = c else { return };
                let Ok(outer) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                pump(inner.try_clone().unwrap(), outer.try_clone().unwrap());
                pump(outer, inner);
            }
        });
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut b = [0u8; 8192];
        while let Ok(n) = from.read(&mut b) {
            if n == 0 || to.write_all(&b[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a script of the repository; returns the last line of its stdout.
fn script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(root().join("scripts").join(args[0]))
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The tenant's material: PKI, signed workload.
struct TenantFiles {
    dir: PathBuf,
    workload: PathBuf,
}

fn tenant(dir: &Path, tag: &str, server_name: &str) -> TenantFiles {
    let d = dir.join(tag);
    script(&["tenant-pki.sh", d.to_str().unwrap(), server_name]);
    let elf = script(&["build-test-workload.sh", d.join("wl").to_str().unwrap()]);
    let workload = d.join("hello.signed");
    let st = Command::new(bin("tvp-boot-server"))
        .args(["sign-workload", "--elf", &elf])
        .arg("--key")
        .arg(d.join("workload.key"))
        .arg("--cert")
        .arg(d.join("workload.pem"))
        .arg("--out")
        .arg(&workload)
        .status()
        .unwrap();
    assert!(st.success());
    TenantFiles { dir: d, workload }
}

/// The boot server process in the namespace; killed (by pid) on drop.
struct BootServer {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl BootServer {
    #[allow(clippy::too_many_arguments)]
    fn start(
        ns: &NetNs,
        t: &TenantFiles,
        ca_of: &TenantFiles,
        name: &str,
        reservations: &Path,
        inventory: &Path,
        firmware: &Path,
        workload: &Path,
        connections: usize,
    ) -> BootServer {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bin("tvp-boot-server"))
            .args(["serve", "--listen", "10.0.0.1:8443"])
            .arg("--cert")
            .arg(t.dir.join("server.pem"))
            .arg("--key")
            .arg(t.dir.join("server.key"))
            .arg("--ca")
            .arg(ca_of.dir.join("ca.pem"))
            .args(["--server-name", name])
            .arg("--reservations")
            .arg(reservations)
            .arg("--inventory")
            .arg(inventory)
            .arg("--firmware")
            .arg(firmware)
            .arg("--workload")
            .arg(workload)
            .args(["--max-connections", &connections.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut server = BootServer { child, out };
        let first = server.report(1);
        assert_eq!(first[0]["event"], "listening", "{first:?}");
        server
    }

    /// The next `n` report lines.
    fn report(&mut self, n: usize) -> Vec<Value> {
        let mut lines = Vec::new();
        for _ in 0..n {
            let mut l = String::new();
            self.out.read_line(&mut l).unwrap();
            lines.push(serde_json::from_str(&l).unwrap());
        }
        lines
    }
}

impl Drop for BootServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_final(t: &Tvpd, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = t.api_json("GET", &format!("/v1/vms/{id}"), None);
        if matches!(v["state"].as_str(), Some("failed" | "destroyed")) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "VM {id} did not finish: {v}\n{}",
            t.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spec(id: &str, u: &str, ca_pem: &str, name: &str) -> String {
    json!({"id": id, "vip": "10.0.0.2/24", "gateway": "10.0.0.1", "mac": "02:00:00:00:00:01",
        "auth_code": u, "boot_server": "10.0.0.1:8443", "boot_server_name": name,
        "tenant_ca_pem": ca_pem, "memory_mib": 64, "attestation_deadline_secs": 120})
    .to_string()
}

/// One host: swtpm, tvpd in `ns` with the real firmware, the inventory entry.
struct Host {
    t: Tvpd,
    firmware: PathBuf,
    inventory: PathBuf,
    _tpm: Swtpm,
}

fn host(ns: &NetNs, dir: &Path) -> Host {
    let tpm = Swtpm::with_ek_cert();
    ns.forward_loopback(tpm.port);
    ns.forward_loopback(tpm.port + 1);
    let fw_line = script(&["build-firmware.sh"]);
    let firmware = PathBuf::from(fw_line.split_whitespace().nth(2).unwrap());
    let tdir = dir.join("tvpd");
    std::fs::create_dir_all(&tdir).unwrap();
    let extra = [
        "--firmware",
        firmware.to_str().unwrap(),
        "--vm-bridge",
        "br0",
    ];
    let mut once = extra.to_vec();
    once.push("--print-expected-pcrs");
    let (code, expected, err) = Tvpd::run_once(&tpm, &tdir, &once);
    assert_eq!(code, 0, "{err}");
    let expected: Value = serde_json::from_str(&expected).unwrap();
    let t = Tvpd::start_in_netns(&tpm, &tdir, &extra, &ns.name);
    let h = t.api_json("GET", "/v1/host", None);
    let inv = json!({"hosts": [{"host_id": h["host_id"], "ak_public_pem": h["ak_public_pem"],
        "ek_name": h["ek_name"], "platform_pcrs": expected["pcrs"]["sha256"]}]});
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, inv.to_string()).unwrap();
    Host {
        t,
        firmware,
        inventory,
        _tpm: tpm,
    }
}

fn console(t: &Tvpd, id: &str) -> String {
    std::fs::read_to_string(t.state_dir.join("vms").join(id).join("console.log"))
        .unwrap_or_default()
}

/// What one boot produced on every side.
struct Outcome {
    vm: Value,
    console: String,
    report: Value,
}

impl Outcome {
    fn workload_ran(&self) -> bool {
        self.console
            .contains("tvp-workload: hello from the tenant workload")
    }

    /// Asserts a failed boot: no workload, the firmware's reason on the console and in
    /// tvpd's VM record (through the mailbox), the boot server's reason in its report.
    fn assert_refused(&self, firmware_reason: &str, code: u32, server_reason: &str) {
        let ctx = format!(
            "console:\n{}\nreport: {}\nvm: {}",
            self.console, self.report, self.vm
        );
        assert!(!self.workload_ran(), "{ctx}");
        assert!(
            self.console
                .contains(&format!("BOOT FAILED reason={firmware_reason} code={code}")),
            "{ctx}"
        );
        assert_eq!(self.vm["state"], "failed", "{ctx}");
        assert_eq!(
            self.vm["reason"],
            format!("boot-failed: firmware reason {code}"),
            "{ctx}"
        );
        assert!(self.vm["handover_digest"].is_null(), "{ctx}");
        assert_eq!(self.report["event"], "refused", "{ctx}");
        assert_eq!(self.report["reason"], server_reason, "{ctx}");
    }
}

/// Creates VM `id` with auth code `u` trusting `ca_pem`, waits for its end and reads
/// the boot server's report line for it.
fn boot(h: &Host, server: &mut BootServer, id: &str, u: &str, ca_pem: &str) -> Outcome {
    let r = h.t.api(
        "POST",
        "/v1/vms",
        Some(&spec(id, u, ca_pem, "boot.tenant.example")),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let t0 = Instant::now();
    let vm = wait_final(&h.t, id);
    let ended = t0.elapsed();
    let report = server.report(1).remove(0);
    eprintln!(
        "{id}: VM ended after {:.2} s, boot server report after {:.2} s: {}",
        ended.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        report["reason"]
    );
    Outcome {
        vm,
        console: console(&h.t, id),
        report,
    }
}

/// Issues a boot server certificate for `name` from the CA in `ca_dir` into `out`.
fn issue_server_cert(ca_dir: &Path, out: &Path, name: &str) -> TenantFiles {
    std::fs::create_dir_all(out).unwrap();
    let sh = format!(
        "set -e; cd {out}; openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout server.key -out s.csr -subj /CN={name} 2>/dev/null; \
         printf 'subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\n' > s.ext; \
         openssl x509 -req -in s.csr -CA {ca}/ca.pem -CAkey {ca}/ca.key -CAcreateserial \
         -out server.pem -days 30 -extfile s.ext 2>/dev/null",
        out = out.display(),
        ca = ca_dir.display()
    );
    assert!(Command::new("bash")
        .args(["-c", &sh])
        .status()
        .unwrap()
        .success());
    TenantFiles {
        dir: out.to_path_buf(),
        workload: PathBuf::new(),
    }
}

const NAME: &str = "boot.tenant.example";

#[test]
fn measured_vm_network_boots_a_signed_workload_after_the_boot_server_attests_its_tunnel() {
    require_tools!("swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let Some(ns) = NetNs::create("ok") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let res = dir.path().join("reservations");
    std::fs::write(&res, "10.0.0.2 U-nb-1\n").unwrap();
    let mut server = BootServer::start(
        &ns,
        &ten,
        &ten,
        NAME,
        &res,
        &h.inventory,
        &h.firmware,
        &ten.workload,
        1,
    );
    let ca_pem = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    let t0 = Instant::now();
    let o = boot(&h, &mut server, "nb-1", "U-nb-1", &ca_pem);
    let total = t0.elapsed();
    eprintln!(
        "--- console ---\n{}\n--- boot server ---\n{}\n--- vm ---\n{}",
        o.console, o.report, o.vm
    );
    let rep = &o.report;
    assert_eq!(rep["event"], "delivered", "{rep}");
    // The workload ran after the handover.
    assert!(o.workload_ran(), "{}", o.console);
    // Both ends computed the same exporter value, and the quoted PCR 16 is its extend.
    let m = rep["tunnel_measurement"].as_str().unwrap();
    assert!(o.console.contains(&format!("tunnel measurement: {m}")));
    let mut ext = vec![0u8; 32];
    ext.extend(hex::decode(m).unwrap());
    assert_eq!(
        rep["quoted_pcr16"],
        hex::encode(tvp_abi::measure::sha256(&ext))
    );
    assert_eq!(rep["quoted_pcr23"], o.vm["pcr23"]);
    // tvpd saw the handover with the workload's digest.
    assert_eq!(o.vm["handover_digest"], rep["workload_digest"], "{}", o.vm);
    eprintln!(
        "network boot: VM create -> workload done {:.2} s; TLS handshake (server side) {} ms; \
         boot server session {} ms",
        total.as_secs_f64(),
        rep["handshake_millis"],
        rep["millis"]
    );
}

#[test]
fn reservations_are_single_use_and_bound_to_the_vip_unknown_reused_and_wrong_address_are_refused() {
    require_tools!("swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let Some(ns) = NetNs::create("res") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let res = dir.path().join("reservations");
    std::fs::write(&res, "10.0.0.2 U-a\n10.0.0.9 U-b\n").unwrap();
    let mut server = BootServer::start(
        &ns,
        &ten,
        &ten,
        NAME,
        &res,
        &h.inventory,
        &h.firmware,
        &ten.workload,
        4,
    );
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    let first = boot(&h, &mut server, "r-1", "U-a", &ca);
    assert!(first.workload_ran(), "{}", first.console);
    boot(&h, &mut server, "r-2", "U-a", &ca).assert_refused(
        "reservation-refused",
        8,
        "reused-auth-code",
    );
    boot(&h, &mut server, "r-3", "U-unknown", &ca).assert_refused(
        "reservation-refused",
        8,
        "unknown-auth-code",
    );
    boot(&h, &mut server, "r-4", "U-b", &ca).assert_refused(
        "reservation-refused",
        8,
        "wrong-address",
    );
}

#[test]
fn firmware_refuses_a_boot_server_from_another_ca_or_with_another_name() {
    require_tools!("swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let Some(ns) = NetNs::create("cert") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let other = tenant(dir.path(), "other", NAME);
    let res = dir.path().join("reservations");
    std::fs::write(&res, "10.0.0.2 U-c\n").unwrap();
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    // A server whose certificate (right name) comes from another CA.
    let mut server = BootServer::start(
        &ns,
        &other,
        &ten,
        NAME,
        &res,
        &h.inventory,
        &h.firmware,
        &ten.workload,
        1,
    );
    boot(&h, &mut server, "c-1", "U-c", &ca).assert_refused(
        "certificate-rejected",
        6,
        "tls-failed",
    );
    drop(server);
    // The tenant CA, but a certificate for another name.
    let evil = issue_server_cert(&ten.dir, &dir.path().join("evil"), "evil.example");
    let mut server = BootServer::start(
        &ns,
        &evil,
        &ten,
        NAME,
        &res,
        &h.inventory,
        &h.firmware,
        &ten.workload,
        1,
    );
    boot(&h, &mut server, "c-2", "U-c", &ca).assert_refused(
        "certificate-rejected",
        6,
        "tls-failed",
    );
}

#[test]
fn firmware_refuses_a_tampered_workload_and_tells_the_boot_server() {
    require_tools!("swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let Some(ns) = NetNs::create("tamper") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let mut w = std::fs::read(&ten.workload).unwrap();
    let n = w.len();
    w[n - 100] ^= 1; // a payload byte, not the signature
    let tampered = dir.path().join("tampered.signed");
    std::fs::write(&tampered, w).unwrap();
    let res = dir.path().join("reservations");
    std::fs::write(&res, "10.0.0.2 U-t\n").unwrap();
    let mut server = BootServer::start(
        &ns,
        &ten,
        &ten,
        NAME,
        &res,
        &h.inventory,
        &h.firmware,
        &tampered,
        1,
    );
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    boot(&h, &mut server, "t-1", "U-t", &ca).assert_refused(
        "bad-signature",
        11,
        "firmware-failed:bad-signature",
    );
}

#[test]
fn boot_server_rejects_evidence_for_another_firmware_platform_or_ak_and_sends_no_workload() {
    require_tools!("swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let Some(ns) = NetNs::create("ev") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    let inv: Value = serde_json::from_slice(&std::fs::read(&h.inventory).unwrap()).unwrap();

    // The tenant expects another firmware image: PCR 23 differs.
    let mut fw = std::fs::read(&h.firmware).unwrap();
    fw.push(0);
    let other_fw = dir.path().join("other-firmware.elf");
    std::fs::write(&other_fw, fw).unwrap();
    // The inventory expects another platform.
    let mut platform = inv.clone();
    let pcrs = platform["hosts"][0]["platform_pcrs"]
        .as_object_mut()
        .unwrap();
    for v in pcrs.values_mut() {
        *v = json!("11".repeat(32));
    }
    let platform_inv = dir.path().join("inventory-platform.json");
    std::fs::write(&platform_inv, platform.to_string()).unwrap();
    // The inventory holds another AK for this host.
    let key = dir.path().join("other-ak.pem");
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null \
             | openssl pkey -pubout > {}",
            key.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let mut ak = inv.clone();
    ak["hosts"][0]["ak_public_pem"] = json!(std::fs::read_to_string(&key).unwrap());
    let ak_inv = dir.path().join("inventory-ak.json");
    std::fs::write(&ak_inv, ak.to_string()).unwrap();

    for (i, (inventory, firmware, check)) in [
        (&h.inventory, &other_fw, "pcr23"),
        (&platform_inv, &h.firmware, "evidence:expected-pcrs"),
        (&ak_inv, &h.firmware, "evidence:ak-mismatch"),
    ]
    .into_iter()
    .enumerate()
    {
        let res = dir.path().join(format!("reservations-{i}"));
        let u = format!("U-e{i}");
        std::fs::write(&res, format!("10.0.0.2 {u}\n")).unwrap();
        let mut server = BootServer::start(
            &ns,
            &ten,
            &ten,
            NAME,
            &res,
            inventory,
            firmware,
            &ten.workload,
            1,
        );
        let o = boot(&h, &mut server, &format!("e-{i}"), &u, &ca);
        o.assert_refused(
            "attestation-rejected",
            10,
            &format!("attestation-rejected:{check}"),
        );
        assert_eq!(o.report["check"], check);
        assert!(o.console.contains(&format!(
            "boot server: REFUSED attestation-rejected:{check}"
        )));
    }
}
