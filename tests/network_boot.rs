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

#[test]
fn measured_vm_network_boots_a_signed_workload_after_the_boot_server_attests_its_tunnel() {
    require_tools!("swtpm", "swtpm_setup", "ip", "openssl", "gcc");
    let Some(ns) = NetNs::create("ok") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let name = "boot.tenant.example";
    let ten = tenant(dir.path(), "tenant", name);
    let res = dir.path().join("reservations");
    std::fs::write(&res, "10.0.0.2 U-nb-1\n").unwrap();
    let mut server = BootServer::start(
        &ns,
        &ten,
        &ten,
        name,
        &res,
        &h.inventory,
        &h.firmware,
        &ten.workload,
        1,
    );
    let ca_pem = std::fs::read_to_string(ten.dir.join("ca.pem")).unwrap();
    let t0 = Instant::now();
    let r = h.t.api(
        "POST",
        "/v1/vms",
        Some(&spec("nb-1", "U-nb-1", &ca_pem, name)),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_final(&h.t, "nb-1");
    let total = t0.elapsed();
    let report = server.report(1);
    let con = console(&h.t, "nb-1");
    eprintln!("--- console ---\n{con}\n--- boot server ---\n{report:?}\n--- vm ---\n{v}");
    let rep = &report[0];
    assert_eq!(rep["event"], "delivered", "{rep}");
    // The workload ran after the handover.
    assert!(
        con.contains("tvp-workload: hello from the tenant workload"),
        "{con}"
    );
    // Both ends computed the same exporter value.
    let m = rep["tunnel_measurement"].as_str().unwrap();
    assert!(con.contains(&format!("tunnel measurement: {m}")));
    // tvpd saw the handover with the workload's digest.
    assert_eq!(v["handover_digest"], rep["workload_digest"], "{v}");
    eprintln!(
        "network boot: VM create -> workload done {:.2} s; TLS handshake (server side) {} ms; \
         boot server session {} ms",
        total.as_secs_f64(),
        rep["handshake_millis"],
        rep["millis"]
    );
    let _ = h.t.api("DELETE", "/v1/vms/nb-1", None);
}
