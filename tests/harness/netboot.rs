//! The measured network boot's moving parts for tests and benches: a network namespace
//! of the test's own (bridge for the VMs' TAPs, loopback forward to the test's swtpm),
//! the tenant's PKI and signed workload, the boot server process, a tvpd host with the
//! real firmware and its inventory entry, and one boot's outcome on every side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{bin, Swtpm, Tvpd};

/// The boot server's TLS name in these tests.
pub const NAME: &str = "boot.tenant.example";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A network namespace of this test: loopback up, bridge `br0` = 10.0.0.1/24 for the
/// VMs' TAPs. Deleted on drop (also when the test fails).
pub struct NetNs {
    /// The namespace's name (`ip netns`).
    pub name: String,
}

impl NetNs {
    /// Creates the namespace (None, with a message, if that is not possible).
    pub fn create(tag: &str) -> Option<NetNs> {
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

    /// Runs `cmd` (split on spaces) inside the namespace; panics if it fails.
    pub fn exec(&self, cmd: &str) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd.split(' '))
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    }

    /// Runs `f` on a thread that joined the namespace; returns its result.
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY (test code): setns on this short-lived thread only.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    }

    /// Binds a listener inside the namespace.
    pub fn listen(&self, addr: &str) -> TcpListener {
        let addr = addr.to_string();
        self.inside(move || TcpListener::bind(&addr).unwrap())
    }

    /// Connects to `addr` from inside the namespace.
    pub fn connect(&self, addr: &str) -> TcpStream {
        let addr = addr.to_string();
        self.inside(move || TcpStream::connect(&addr).unwrap())
    }

    /// Forwards 127.0.0.1:`port` inside the namespace to 127.0.0.1:`port` of the
    /// test's own namespace (loopback to loopback: tvpd in the namespace reaches the
    /// test's swtpm).
    pub fn forward_loopback(&self, port: u16) {
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

/// Copies `from` to `to` on a thread until EOF.
pub fn pump(mut from: TcpStream, mut to: TcpStream) {
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
pub fn script(args: &[&str]) -> String {
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
pub struct TenantFiles {
    /// Directory of the PKI files (`scripts/tenant-pki.sh`).
    pub dir: PathBuf,
    /// The signed test workload.
    pub workload: PathBuf,
}

/// Creates the tenant's PKI (`DIR/tag`) and signs the test workload.
pub fn tenant(dir: &Path, tag: &str, server_name: &str) -> TenantFiles {
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

/// Signs `kernel` (a bzImage) with `cmdline` and `initrd` as `t`'s Linux workload
/// (`tvp-boot-server sign-workload --kernel`); the error is the tool's message.
pub fn sign_linux(
    t: &TenantFiles,
    kernel: &Path,
    cmdline: &str,
    initrd: &[u8],
) -> Result<PathBuf, String> {
    let out = t.dir.join("linux.signed");
    let mut sign = Command::new(bin("tvp-boot-server"));
    sign.args(["sign-workload", "--kernel"])
        .arg(kernel)
        .args(["--cmdline", cmdline])
        .arg("--key")
        .arg(t.dir.join("workload.key"))
        .arg("--cert")
        .arg(t.dir.join("workload.pem"))
        .arg("--out")
        .arg(&out);
    if !initrd.is_empty() {
        let initrd_file = t.dir.join("initrd");
        std::fs::write(&initrd_file, initrd).map_err(|e| e.to_string())?;
        sign.arg("--initrd").arg(initrd_file);
    }
    let o = sign.output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(out)
}

/// The stand-in kernel in the bzImage format that [`tenant`] built.
pub fn test_bzimage(t: &TenantFiles) -> PathBuf {
    t.dir.join("wl").join("test-bzimage")
}

/// The boot server process in the namespace; killed (by pid) on drop.
pub struct BootServer {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl BootServer {
    #[allow(clippy::too_many_arguments)]
    /// Starts `tvp-boot-server serve` in `ns` with `t`'s certificate, expecting
    /// configuration pages that trust `ca_of`'s CA; waits for its `listening` line.
    pub fn start(
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
        // The management key and policy the tenant gives its VMs (tvpd measures them).
        let mgmt_key = t.dir.join("management.pem");
        let mgmt_policy = t.dir.join("management-policy.json");
        std::fs::write(&mgmt_key, crate::Tenant::shared().key_pem()).unwrap();
        std::fs::write(&mgmt_policy, crate::Tenant::shared().policy.to_string()).unwrap();
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
            .arg("--management-key")
            .arg(&mgmt_key)
            .arg("--policy")
            .arg(&mgmt_policy)
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

    /// [`BootServer::start`] for the common case: `t`'s own CA and [`NAME`], host `h`'s
    /// inventory and firmware.
    pub fn serve(
        ns: &NetNs,
        h: &Host,
        t: &TenantFiles,
        reservations: &Path,
        workload: &Path,
        connections: usize,
    ) -> BootServer {
        BootServer::start(
            ns,
            t,
            t,
            NAME,
            reservations,
            &h.inventory,
            &h.firmware,
            workload,
            connections,
        )
    }

    /// The next `n` report lines.
    pub fn report(&mut self, n: usize) -> Vec<Value> {
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

/// Polls tvpd until VM `id` failed or was destroyed; returns its view.
pub fn wait_final(t: &Tvpd, id: &str) -> Value {
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

/// A VM spec for the network boot (VIP 10.0.0.2/24, boot server 10.0.0.1:8443, 64 MiB).
pub fn spec(id: &str, u: &str, ca_pem: &str, name: &str) -> String {
    // The shared test tenant's management key and policy; the boot server expects
    // them in PCR 23.
    spec_managed_by(id, u, ca_pem, name, crate::Tenant::shared())
}

/// [`spec`] with the management key and policy of `tenant`.
pub fn spec_managed_by(
    id: &str,
    u: &str,
    ca_pem: &str,
    name: &str,
    tenant: &crate::Tenant,
) -> String {
    let mut s = json!({"id": id, "vip": "10.0.0.2/24", "gateway": "10.0.0.1", "mac": "02:00:00:00:00:01",
        "auth_code": u, "boot_server": "10.0.0.1:8443", "boot_server_name": name,
        "tenant_ca_pem": ca_pem, "memory_mib": 64, "attestation_deadline_secs": 120});
    tenant.add_to_spec(&mut s);
    s.to_string()
}

/// One host: swtpm, tvpd in `ns` with the real firmware, the inventory entry.
pub struct Host {
    /// tvpd, running inside the namespace.
    pub t: Tvpd,
    /// The firmware image tvpd boots (and the boot server's reference).
    pub firmware: PathBuf,
    /// The inventory file with this host's entry.
    pub inventory: PathBuf,
    _tpm: Swtpm,
}

/// Starts a host in `ns` with files under `dir`.
pub fn host(ns: &NetNs, dir: &Path) -> Host {
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
    let platform = dir.join("platform-pcrs.json");
    std::fs::write(&platform, expected).unwrap();
    let t = Tvpd::start_in_netns(&tpm, &tdir, &extra, &ns.name);
    // The inventory entry as an operator makes it: `tvpctl inventory`.
    let inventory = dir.join("inventory.json");
    let (rc, out, err) = t.tvpctl(&[
        "inventory",
        "--expect",
        platform.to_str().unwrap(),
        "-o",
        inventory.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let inv: Value = serde_json::from_slice(&std::fs::read(&inventory).unwrap()).unwrap();
    let h = t.api_json("GET", "/v1/host", None);
    assert_eq!(inv["hosts"][0]["host_id"], h["host_id"], "{inv}");
    assert_eq!(inv["hosts"][0]["ek_name"], h["ek_name"], "{inv}");
    Host {
        t,
        firmware,
        inventory,
        _tpm: tpm,
    }
}

/// VM `id`'s console log.
pub fn console(t: &Tvpd, id: &str) -> String {
    std::fs::read_to_string(t.state_dir.join("vms").join(id).join("console.log"))
        .unwrap_or_default()
}

/// What one boot produced on every side.
pub struct Outcome {
    /// tvpd's view of the VM at its end.
    pub vm: Value,
    /// The VM's console.
    pub console: String,
    /// The boot server's report line for this boot.
    pub report: Value,
    /// From VM creation to its end.
    pub elapsed: Duration,
}

impl Outcome {
    pub fn workload_ran(&self) -> bool {
        self.console
            .contains("tvp-workload: hello from the tenant workload")
    }

    /// Asserts a failed boot: no workload, the firmware's reason on the console and in
    /// tvpd's VM record (through the mailbox), the boot server's reason in its report.
    pub fn assert_refused(&self, firmware_reason: &str, code: u32, server_reason: &str) {
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
pub fn boot(h: &Host, server: &mut BootServer, id: &str, u: &str, ca_pem: &str) -> Outcome {
    boot_spec(h, server, id, &spec(id, u, ca_pem, "boot.tenant.example"))
}

/// Creates VM `id` from `spec`, waits for its end and reads the boot server's report
/// line for it.
pub fn boot_spec(h: &Host, server: &mut BootServer, id: &str, spec: &str) -> Outcome {
    let r = h.t.api("POST", "/v1/vms", Some(spec));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let t0 = Instant::now();
    let vm = wait_final(&h.t, id);
    let ended = t0.elapsed();
    let report = server.report(1).remove(0);
    eprintln!(
        "{id}: VM ended after {:.2} s, boot server report after {:.2} s: {} {}",
        ended.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        report["event"].as_str().unwrap_or("?"),
        report["reason"].as_str().unwrap_or_default()
    );
    Outcome {
        vm,
        console: console(&h.t, id),
        report,
        elapsed: ended,
    }
}

/// Issues a boot server certificate for `name` from the CA in `ca_dir` into `out`.
pub fn issue_server_cert(ca_dir: &Path, out: &Path, name: &str) -> TenantFiles {
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
