//! The measured network boot's moving parts for tests and benches: a network namespace
//! of the test's own (bridge for the VMs' TAPs, loopback forward to the test's swtpm),
//! the tenant's PKI and signed workload, the boot server process, a tvpd host with the
//! real firmware and its inventory entry, and one boot's outcome on every side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::vm::{ended, wait_vm, VmSpec};
use crate::{bin, Swtpm, Tvpd};

/// The boot server's TLS name in these tests.
pub const NAME: &str = "boot.tenant.example";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A network namespace of this test: loopback up, bridge `br0` = 10.0.0.1/24 (its own
/// MAC address, as an operator sets it) for the
/// VMs' TAPs. Deleted on drop (also when the test fails).
pub struct NetNs {
    /// The namespace's name (`ip netns`).
    pub name: String,
}

impl NetNs {
    /// Creates the namespace; panics if that fails (the test states
    /// `require!(Need::Netns)` first, so it can).
    pub fn create(tag: &str) -> NetNs {
        let name = format!(
            "tvp-nb-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name}: {st}");
        let ns = NetNs { name };
        for cmd in [
            "ip link set lo up",
            "ip link add br0 type bridge",
            // Its own address, as an operator sets it: otherwise the bridge takes its
            // lowest port's, which changes as VMs' TAP devices come and go.
            "ip link set br0 address 02:00:00:00:0b:01",
            "ip addr add 10.0.0.1/24 dev br0",
            "ip link set br0 up",
        ] {
            ns.exec(cmd);
        }
        ns
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

    /// A second namespace joined to this one's bridge by a veth pair, with `ip` (a
    /// `/24` on the bridge's subnet, e.g. `10.0.0.250`): a host-side client on the VMs'
    /// link (the benchmark's peer). The pair goes with the new namespace on drop.
    pub fn peer(&self, tag: &str, ip: &str) -> NetNs {
        let p = NetNs::create(tag);
        // Its own bridge would own the subnet's address: the peer is a plain host.
        p.exec("ip link del br0");
        p.exec(&format!(
            "ip link add pv0 type veth peer name pv1 netns {}",
            self.name
        ));
        self.exec("ip link set pv1 master br0");
        self.exec("ip link set pv1 up");
        p.exec(&format!("ip addr add {ip}/24 dev pv0"));
        p.exec("ip link set pv0 up");
        p
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

    /// A "boot server" at `addr` inside the namespace that accepts connections and
    /// never says a word: it holds them open until the test process ends.
    pub fn mute_server(&self, addr: &str) {
        let mute = self.listen(addr);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in mute.incoming().flatten() {
                held.push(c);
            }
        });
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

/// What a Linux network-boot test starts from: its own namespace, a tvpd host in it,
/// the tenant's PKI and the stand-in kernel signed as a Linux bundle. Fields drop in
/// order: the boot server's inputs, tvpd, the files, then the namespace.
pub struct LinuxBoot {
    /// The signed bundle ([`sign_linux`]).
    pub signed: PathBuf,
    /// The tenant's files.
    pub ten: TenantFiles,
    /// tvpd and its firmware.
    pub h: Host,
    /// The test's scratch directory.
    pub dir: tempfile::TempDir,
    /// The namespace.
    pub ns: NetNs,
}

/// [`LinuxBoot`] in a namespace named after `tag`, the stand-in kernel signed with
/// `cmdline` and `initrd`.
pub fn linux_boot(tag: &str, cmdline: &str, initrd: &[u8]) -> LinuxBoot {
    let ns = NetNs::create(tag);
    let dir = tempfile::tempdir().unwrap();
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let signed = sign_linux(&ten, &test_bzimage(&ten), cmdline, initrd).unwrap();
    LinuxBoot {
        signed,
        ten,
        h,
        dir,
        ns,
    }
}

/// The boot server process in the namespace; killed (by pid) on drop.
pub struct BootServer {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    /// Its first report line (`{"event": "listening", "ledger": {...}, ...}`).
    pub listening: Value,
    /// The reservations file (and the management key and policy it was given).
    _files: tempfile::TempDir,
}

/// How to start a boot server: [`BootServer::builder`] gives the common case, each
/// setter changes one thing, [`BootServerBuilder::start`] starts it.
pub struct BootServerBuilder<'a> {
    ns: &'a NetNs,
    cert_of: &'a TenantFiles,
    ca_of: &'a TenantFiles,
    name: &'a str,
    reservations: String,
    /// Expectations appended to each `I U` reservation line: memory, vcpus, image,
    /// disk, management (`docs/boot-server.md`).
    expect: [String; 5],
    max_failures: Option<u32>,
    ledger: Option<PathBuf>,
    inventory: PathBuf,
    firmware: PathBuf,
    workload: PathBuf,
    connections: usize,
}

impl BootServer {
    /// A boot server in `ns` for tenant `t` and host `h`: `t`'s certificate, pages
    /// trusting `t`'s CA, name [`NAME`], `h`'s inventory and firmware, `t`'s workload,
    /// no reservations (expecting `memory=any vcpus=any image=any disk=any
    /// management=tenant`),
    /// one connection.
    pub fn builder<'a>(ns: &'a NetNs, h: &Host, t: &'a TenantFiles) -> BootServerBuilder<'a> {
        BootServerBuilder {
            ns,
            cert_of: t,
            ca_of: t,
            name: NAME,
            reservations: String::new(),
            expect: ["any", "any", "any", "any", "tenant"].map(String::from),
            max_failures: None,
            ledger: None,
            inventory: h.inventory.clone(),
            firmware: h.firmware.clone(),
            workload: t.workload.clone(),
            connections: 1,
        }
    }

    /// The boot server's process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
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

impl<'a> BootServerBuilder<'a> {
    /// The reservations, one `VIP U` a line (e.g. `"10.0.0.2 U-a\n"`); at start each
    /// such line gets the builder's expectations (`expect_*`). A line that states its
    /// own (`VIP U memory=… vcpus=… image=… disk=… management=…`) is written as given.
    pub fn reservations(mut self, text: &str) -> Self {
        self.reservations = text.to_string();
        self
    }

    /// Reservations expect this memory size (MiB) in the page.
    pub fn expect_memory(mut self, mib: u32) -> Self {
        self.expect[0] = mib.to_string();
        self
    }

    /// Reservations expect this many vCPUs in the page.
    pub fn expect_vcpus(mut self, n: u16) -> Self {
        self.expect[1] = n.to_string();
        self
    }

    /// Reservations expect this image (plaintext SHA-256, hex) in the page's image
    /// descriptor, or none with `None`.
    pub fn expect_image(mut self, sha256_hex: Option<&str>) -> Self {
        self.expect[2] = sha256_hex.unwrap_or("none").to_string();
        self
    }

    /// Reservations expect this disk (its header's SHA-256, hex) in the page's disk
    /// descriptor, or none with `None`.
    pub fn expect_disk(mut self, header_sha256_hex: Option<&str>) -> Self {
        self.expect[3] = header_sha256_hex.unwrap_or("none").to_string();
        self
    }

    /// Reservations accept any management key and policy (`management=any`).
    pub fn any_management(mut self) -> Self {
        self.expect[4] = "any".into();
        self
    }

    /// A reservation tolerates this many failed attempts (`--max-failures`).
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = Some(n);
        self
    }

    /// The reservation ledger at `path` (`--ledger`), kept across boot servers; by
    /// default each boot server has a new one beside its reservations file.
    pub fn ledger(mut self, path: &Path) -> Self {
        self.ledger = Some(path.to_path_buf());
        self
    }

    /// The reservations file as written: `I U` lines completed with the expectations.
    fn reservations_file(&self) -> String {
        let [memory, vcpus, image, disk, management] = &self.expect;
        let suffix = format!(
            "memory={memory} vcpus={vcpus} image={image} disk={disk} management={management}"
        );
        self.reservations
            .lines()
            .map(|l| match l.split_whitespace().count() {
                2 => format!("{l} {suffix}\n"),
                _ => format!("{l}\n"),
            })
            .collect()
    }

    /// Serve with `other`'s server certificate (the pages still trust the builder's
    /// tenant CA).
    pub fn cert_of(mut self, other: &'a TenantFiles) -> Self {
        self.cert_of = other;
        self
    }

    /// Check evidence against this inventory.
    pub fn inventory(mut self, path: &Path) -> Self {
        self.inventory = path.to_path_buf();
        self
    }

    /// Expect this firmware image in PCR 23.
    pub fn firmware(mut self, path: &Path) -> Self {
        self.firmware = path.to_path_buf();
        self
    }

    /// Deliver this signed workload.
    pub fn workload(mut self, path: &Path) -> Self {
        self.workload = path.to_path_buf();
        self
    }

    /// Serve this many connections, then end.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Starts `tvp-boot-server serve` and waits for its `listening` line.
    pub fn start(self) -> BootServer {
        let files = tempfile::tempdir().unwrap();
        let reservations = files.path().join("reservations");
        std::fs::write(&reservations, self.reservations_file()).unwrap();
        // The management key and policy the tenant gives its VMs (tvpd measures them).
        let mgmt_key = files.path().join("management.pem");
        let mgmt_policy = files.path().join("management-policy.json");
        std::fs::write(&mgmt_key, crate::Tenant::shared().key_pem()).unwrap();
        std::fs::write(&mgmt_policy, crate::Tenant::shared().policy.to_string()).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(bin("tvp-boot-server"))
            .args(["serve", "--listen", "10.0.0.1:8443"])
            .arg("--cert")
            .arg(self.cert_of.dir.join("server.pem"))
            .arg("--key")
            .arg(self.cert_of.dir.join("server.key"))
            .arg("--ca")
            .arg(self.ca_of.dir.join("ca.pem"))
            .args(["--server-name", self.name])
            .arg("--reservations")
            .arg(&reservations)
            .arg("--inventory")
            .arg(&self.inventory)
            .arg("--firmware")
            .arg(&self.firmware)
            .arg("--workload")
            .arg(&self.workload)
            .arg("--management-key")
            .arg(&mgmt_key)
            .arg("--policy")
            .arg(&mgmt_policy)
            .args(["--max-connections", &self.connections.to_string()])
            .args(
                self.max_failures
                    .iter()
                    .flat_map(|n| ["--max-failures".to_string(), n.to_string()]),
            )
            .args(
                self.ledger
                    .iter()
                    .flat_map(|p| [std::ffi::OsStr::new("--ledger"), p.as_os_str()]),
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut server = BootServer {
            child,
            out,
            listening: Value::Null,
            _files: files,
        };
        let first = server.report(1);
        assert_eq!(first[0]["event"], "listening", "{first:?}");
        server.listening = first[0].clone();
        server
    }
}

impl Drop for BootServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The spec of a network-booted VM `id` with auth code `u`, trusting `ca_pem` for the
/// boot server [`NAME`] at 10.0.0.1:8443, with 64 MiB.
pub fn vm_spec(id: &str, u: &str, ca_pem: &str) -> VmSpec {
    VmSpec::measured(id)
        .auth_code(u)
        .tenant_ca_pem(ca_pem)
        .memory_mib(64)
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

impl Host {
    /// The host's swtpm process id (for its CPU time).
    pub fn swtpm_pid(&self) -> u32 {
        self._tpm.pid()
    }
}

/// Starts a host in `ns` with files under `dir`.
pub fn host(ns: &NetNs, dir: &Path) -> Host {
    host_with(ns, dir, &[])
}

/// The same with more tvpd flags (e.g. `--image-dir DIR`).
pub fn host_with(ns: &NetNs, dir: &Path, flags: &[&str]) -> Host {
    let tpm = Swtpm::with_ek_cert();
    ns.forward_loopback(tpm.port);
    ns.forward_loopback(tpm.port + 1);
    // TVP_FIRMWARE: a prebuilt image instead of this checkout's (benches comparing
    // firmware builds in one session); otherwise the reproducible build of this one.
    let firmware = match std::env::var_os("TVP_FIRMWARE") {
        Some(p) => PathBuf::from(p),
        None => {
            let fw_line = script(&["build-firmware.sh"]);
            PathBuf::from(fw_line.split_whitespace().nth(2).unwrap())
        }
    };
    let tdir = dir.join("tvpd");
    std::fs::create_dir_all(&tdir).unwrap();
    let mut extra = vec![
        "--firmware",
        firmware.to_str().unwrap(),
        "--vm-bridge",
        "br0",
    ];
    extra.extend_from_slice(flags);
    let mut once = extra.clone();
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

/// VM `id`'s console log (a guest may print any bytes: invalid UTF-8 is replaced, not
/// a reason to see nothing).
pub fn console(t: &Tvpd, id: &str) -> String {
    std::fs::read(t.state_dir.join("vms").join(id).join("console.log"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
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
    boot_spec(h, server, id, &vm_spec(id, u, ca_pem))
}

/// Creates VM `id` from `spec`, waits for its end and reads the boot server's report
/// line for it.
pub fn boot_spec(h: &Host, server: &mut BootServer, id: &str, spec: &VmSpec) -> Outcome {
    let r = h.t.create_vm(spec);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let t0 = Instant::now();
    let vm = wait_vm(&h.t, id, ended, BOOT_WITHIN);
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

/// How long a network boot may take to end (failed or destroyed).
pub const BOOT_WITHIN: Duration = Duration::from_secs(120);

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
