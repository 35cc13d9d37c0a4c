//! `tvp-bench-netboot [N]`: N measured network boots in a row on this machine's KVM
//! (tvpd + swtpm + TAP in a private network namespace + tvp-boot-server + the real
//! firmware), each ending with the signed test workload printing after the handover.
//! Prints the TLS handshake (as the firmware and the boot server measure it), the boot
//! server's whole session (handshake → workload acknowledged), VM create → workload
//! done through tvpd's API, its breakdown by boot phase and the PCR lease hold (the
//! TPM steps of the one quote). Needs root, KVM, swtpm; `cargo build --workspace
//! --bins`. Then Q VMs created at once (attested network boots per minute: they boot
//! side by side and take the lease in turn, one quote each), with the CPU seconds each
//! process spent per boot (tvpd, the VMMs, the boot server, swtpm, this harness; from
//! /proc/PID/stat) and the ceiling the cores put on the rate, 60 x cores / CPU s per
//! boot, printed beside the measured rate. A VM that fails is
//! reported with its reason and console tail; the figures cover the others.
//!
//! Then a 64 MiB signed workload (a Linux bundle: `TVP_BENCH_KERNEL=bzImage` or the
//! stand-in kernel, and an initrd filling it) is streamed through the tunnel: the
//! transfer rate as the firmware measures it and its breakdown, and a peer in the same
//! run (the same file over TLS 1.3 to curl in a namespace on the same bridge) with the
//! ratio.
//!
//! Usage: tvp-bench-netboot [N] [Q]   (defaults 10 10)

use std::time::Duration;
use tvp_tests::netboot::*;
use tvp_tests::phases::{breakdown, lease_hold};

fn stats(name: &str, unit: &str, mut v: Vec<f64>) {
    if v.is_empty() {
        println!("{name:<44} (no samples)");
        return;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<44} median {:>7.1} {unit}  p95 {:>7.1} {unit}  min {:>7.1}  max {:>7.1}  (n={})",
        pct(0.5),
        pct(0.95),
        v[0],
        v[v.len() - 1],
        v.len()
    );
}

/// A VM that did not run its workload: its state, reason and console tail.
fn report_failure(
    t: &tvp_tests::Tvpd,
    id: &str,
    vm: &serde_json::Value,
    console: &str,
    report: Option<&serde_json::Value>,
) {
    let lines: Vec<&str> = console.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
    println!(
        "FAILED {id}: {} ({}); phases {}\n    {tail}",
        vm["state"], vm["reason"], vm["phases"]
    );
    if let Some(r) = report {
        println!("  boot server: {r}");
    }
    // What tvpd logged about it (its VMM's network totals among it).
    let log = t.log();
    let mine: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("vm={id} ")))
        .collect();
    for l in &mine[mine.len().saturating_sub(12)..] {
        println!("  tvpd: {l}");
    }
    let vmm =
        std::fs::read_to_string(t.state_dir.join(format!("vms/{id}/vmm.log"))).unwrap_or_default();
    let lines: Vec<&str> = vmm.lines().collect();
    for l in &lines[lines.len().saturating_sub(12)..] {
        println!("  tvp-vmm: {l}");
    }
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (n, q) = (arg(1, 10), arg(2, 10));
    if let Some(why) = tvp_tests::Need::Netns.missing() {
        eprintln!("tvp-bench-netboot: {why}");
        std::process::exit(1);
    }
    let ns = NetNs::create("bench");
    let dir = tempfile::tempdir().expect("tempdir");
    let h = host(&ns, dir.path());
    let ten = tenant(dir.path(), "tenant", NAME);
    let mut lines: String = (0..n).map(|i| format!("10.0.0.2 U-bench-{i}\n")).collect();
    lines.extend((0..q).map(|i| format!("10.0.0.{} U-queued-{i}\n", 20 + i)));
    let mut server = BootServer::builder(&ns, &h, &ten)
        .reservations(&lines)
        .connections(n + q)
        .start();
    let ca = std::fs::read_to_string(ten.dir.join("ca.pem")).expect("ca");
    let (mut fw_tls, mut srv_tls, mut session, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut lease, mut phases) = (
        vec![],
        std::collections::BTreeMap::<String, Vec<f64>>::new(),
    );
    for i in 0..n {
        let o = boot(
            &h,
            &mut server,
            &format!("bench-{i}"),
            &format!("U-bench-{i}"),
            &ca,
        );
        if !(o.workload_ran() && o.report["event"] == "delivered") {
            report_failure(
                &h.t,
                &format!("bench-{i}"),
                &o.vm,
                &o.console,
                Some(&o.report),
            );
            let _ =
                h.t.delete_vm(&format!("bench-{i}"), tvp_tests::Tenant::shared());
            continue;
        }
        let ms = o
            .console
            .lines()
            .find_map(|l| {
                l.strip_prefix("tls: established with ")?
                    .split(" in ")
                    .nth(1)
            })
            .and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok());
        fw_tls.extend(ms);
        srv_tls.extend(o.report["handshake_millis"].as_f64());
        session.extend(o.report["millis"].as_f64());
        total.push(o.elapsed.as_secs_f64() * 1000.0);
        let (per, _, hold) = breakdown(&o.vm);
        lease.push(hold * 1000.0);
        for (p, t) in per {
            phases.entry(p).or_default().push(t * 1000.0);
        }
        let id = format!("bench-{i}");
        let _ = h.t.delete_vm(&id, tvp_tests::Tenant::shared());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("tvp network boot, {n} boots (real KVM, swtpm, TAP, rustls):");
    stats("TLS 1.3 handshake, firmware side", "ms", fw_tls);
    stats("TLS 1.3 handshake, boot server side", "ms", srv_tls);
    stats("boot server session (TLS .. workload acked)", "ms", session);
    stats("VM create -> workload done (API)", "ms", total);
    println!("boot phases (tvpd's boot log), in boot order:");
    for p in ["queued", "measuring", "tunnel", "attestation", "delivery"] {
        if let Some(v) = phases.remove(p) {
            stats(&format!("  {p}"), "ms", v);
        }
    }
    println!(
        "  (queued: VMM start and its measurements; measuring: their check by computation;\n   \
         tunnel: firmware start, network, TCP, TLS handshake, reservation; attestation: the\n   \
         lease wait and the quote through the mailbox; delivery: the boot server's\n   \
         verification, workload transfer, signature check, handover)"
    );
    stats("PCR lease hold (reset .. quote .. reset)", "ms", lease);
    if q > 0 {
        // Q VMs created at once (own VIP and MAC each): they take the lease in turn.
        let cpu0 = CpuSample::take(&h, &server);
        let t0 = std::time::Instant::now();
        for i in 0..q {
            let id = format!("queued-{i}");
            let s = vm_spec(&id, &format!("U-queued-{i}"), &ca)
                .vip(&format!("10.0.0.{}/24", 20 + i))
                .mac(&format!("02:00:00:00:01:{i:02x}"));
            let r = h.t.create_vm(&s);
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        }
        let (mut ok, mut holds) = (0, vec![]);
        for i in 0..q {
            let id = format!("queued-{i}");
            let v = tvp_tests::wait_vm(&h.t, &id, tvp_tests::ended, BOOT_WITHIN);
            let console = console(&h.t, &id);
            if console.contains("tvp-workload: hello from the tenant workload") {
                ok += 1;
                holds.push(lease_hold(&v) * 1000.0);
            } else {
                report_failure(&h.t, &id, &v, &console, None);
            }
        }
        let all = t0.elapsed().as_secs_f64();
        let cpu = CpuSample::take(&h, &server).since(&cpu0);
        let reports = server.report(q);
        let delivered = reports.iter().filter(|r| r["event"] == "delivered").count();
        for r in reports.iter().filter(|r| r["event"] != "delivered") {
            println!("  boot server: not delivered: {r}");
        }
        stats(&format!("PCR lease hold, {q} VMs at once"), "ms", holds);
        println!(
            "{q} VMs created at once: {ok} workloads done ({delivered} delivered by the boot server) \
             after {all:.2} s: {:.0} attested network boots per minute",
            ok as f64 * 60.0 / all
        );
        cpu.print(ok, all, ok as f64 * 60.0 / all);
    }
    drop(server);
    // A 64 MiB signed workload: a Linux bundle of a kernel (TVP_BENCH_KERNEL=bzImage,
    // else the stand-in bzImage) and an initrd filling it to 64 MiB, streamed through
    // the tunnel into the VM's workload window and handed over. (On a KVM where ring 0
    // is emulated a real kernel does not get far afterwards.)
    let kernel = std::env::var_os("TVP_BENCH_KERNEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| test_bzimage(&ten));
    let klen = std::fs::metadata(&kernel).expect("kernel").len() as usize;
    let initrd: Vec<u8> = (0..(LARGE - klen - 8192))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let signed = match sign_linux(&ten, &kernel, "console=ttyS0", &initrd) {
        Ok(s) => s,
        Err(e) => {
            println!(
                "large workload: {kernel:?} cannot be signed as a Linux workload ({e}): skipped"
            );
            return;
        }
    };
    let size = std::fs::metadata(&signed).expect("signed").len() as f64;
    let mut server = BootServer::builder(&ns, &h, &ten)
        .reservations("10.0.0.2 U-large\n")
        .workload(&signed)
        .start();
    let s = vm_spec("large", "U-large", &ca).memory_mib(256);
    let r = h.t.create_vm(&s);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let report = server.report(1).remove(0);
    assert_eq!(report["event"], "delivered", "{report}");
    let v = h.t.api_json("GET", "/v1/vms/large", None);
    let (per, _, _) = breakdown(&v);
    let delivery = per.get("delivery").copied().unwrap_or(f64::NAN);
    println!(
        "large workload ({:.1} MB signed Linux bundle, {:.1} MB kernel {kernel:?}):\n  \
         delivery phase {delivery:.2} s = {:.1} MB/s (transfer, signature check, digest, load, \
         handover; boot server session {} ms)",
        size / 1e6,
        klen as f64 / 1e6,
        size / 1e6 / delivery,
        report["millis"]
    );
    // The firmware's own figures (TSC): transfer, frames, device polls, check, digest.
    let t0 = std::time::Instant::now();
    while !console(&h.t, "large").contains("workload: loaded") && t0.elapsed() < BOOT_WITHIN {
        std::thread::sleep(Duration::from_millis(50));
    }
    let con = console(&h.t, "large");
    if !con.contains("workload: loaded") {
        let vm = h.t.api_json("GET", "/v1/vms/large", None);
        println!(
            "  firmware figures missing: VM {} ({}); console ({} bytes)",
            vm["state"],
            vm["reason"],
            con.len()
        );
    }
    for l in con.lines().filter(|l| l.starts_with("workload: ")) {
        println!("  firmware: {l}");
    }
    let transfer_ms = con.lines().find_map(|l| {
        l.strip_prefix("workload: ")?
            .split(" bytes received in ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse::<f64>()
            .ok()
    });
    let tunnel_mbs = transfer_ms.map_or(f64::NAN, |ms| size / 1e6 / (ms / 1000.0));
    println!("  tunnel transfer (firmware, first byte to last): {tunnel_mbs:.1} MB/s");
    // tvp-vmm's side at the handover: frames delivered, and how many TSO segments
    // from the TAP device it split into them (the host's offloads, issue #18).
    let vmm = std::fs::read_to_string(h.t.state_dir.join("vms/large/vmm.log")).unwrap_or_default();
    for l in vmm.lines().filter(|l| l.contains("virtio-net: handover")) {
        println!("  tvp-vmm: {l}");
    }
    let _ = h.t.delete_vm("large", tvp_tests::Tenant::shared());
    drop(server);
    peer_fetch(&ns, &ten, &signed, tunnel_mbs);
}

/// CPU seconds used so far by each process the bench started, and by the machine.
#[derive(Default)]
struct CpuSample {
    tvpd: f64,
    vmm: f64,
    boot_server: f64,
    swtpm: f64,
    bench: f64,
    /// Busy CPU seconds of the whole machine (/proc/stat: everything but idle and
    /// iowait), other users' work included.
    machine: f64,
}

impl CpuSample {
    fn take(h: &Host, server: &BootServer) -> Self {
        use tvp_tests::procfs::{cpu_seconds, tree_cpu_seconds};
        let tvpd_pid = h.t.pid().unwrap_or(0);
        let tvpd = cpu_seconds(tvpd_pid).map_or(0.0, |(own, _)| own);
        CpuSample {
            tvpd,
            // tvpd's children are the VMMs: those it reaped and those still running.
            vmm: tree_cpu_seconds(tvpd_pid) - tvpd,
            boot_server: tree_cpu_seconds(server.pid()),
            swtpm: tree_cpu_seconds(h.swtpm_pid()),
            bench: cpu_seconds(std::process::id()).map_or(0.0, |(own, _)| own),
            machine: machine_busy_seconds(),
        }
    }

    fn since(&self, before: &Self) -> Self {
        CpuSample {
            tvpd: self.tvpd - before.tvpd,
            vmm: self.vmm - before.vmm,
            boot_server: self.boot_server - before.boot_server,
            swtpm: self.swtpm - before.swtpm,
            bench: self.bench - before.bench,
            machine: self.machine - before.machine,
        }
    }

    /// CPU seconds per boot by process, and the ceiling the cores put on boots/min
    /// (tvp's processes only: the harness's polling is the bench's, not tvp's).
    fn print(&self, boots: usize, wall: f64, measured: f64) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let per = |s: f64| s / boots.max(1) as f64;
        let tvp = self.tvpd + self.vmm + self.boot_server + self.swtpm;
        println!("CPU per attested boot ({boots} boots, {wall:.2} s wall, {cores} cores):");
        for (name, s) in [
            ("tvpd", self.tvpd),
            ("tvp-vmm (guest + VMM, all VMs)", self.vmm),
            ("tvp-boot-server", self.boot_server),
            ("swtpm", self.swtpm),
        ] {
            println!(
                "  {name:<32} {:>7.3} s/boot  ({:>4.1}%)",
                per(s),
                100.0 * s / tvp.max(1e-9)
            );
        }
        println!("  {:<32} {:>7.3} s/boot", "sum (tvp's processes)", per(tvp));
        println!(
            "  {:<32} {:>7.3} s/boot (not counted)",
            "bench harness (API polling)",
            per(self.bench)
        );
        println!(
            "  machine busy {:.3} s/boot ({:.0}% of {cores} cores, others' work included)",
            per(self.machine),
            100.0 * self.machine / (wall * cores)
        );
        let ceiling = 60.0 * cores / per(tvp).max(1e-9);
        println!(
            "CPU-bound ceiling: 60 x {cores} cores / {:.3} s = {ceiling:.0} boots/min; measured \
             {measured:.0} boots/min ({:.0}% of the ceiling)",
            per(tvp),
            100.0 * measured / ceiling
        );
    }
}

/// Busy CPU seconds of the machine so far (/proc/stat's first line, USER_HZ ticks).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy / 100.0
}

/// Size of the large workload's payload.
const LARGE: usize = 64 << 20;

/// Whether curl's figures show a download (bytes > 0).
fn bytes_ok(v: &[f64]) -> bool {
    v.first().is_some_and(|b| *b > 0.0)
}

/// The peer in the same run: the same signed workload fetched over TLS 1.3 across the
/// same bridge by a host client (curl in a namespace on the bridge) from `openssl
/// s_server` with the boot server's certificate at the boot server's address: what the
/// host's own stack achieves on this machine, and the tunnel's ratio to it.
fn peer_fetch(ns: &NetNs, ten: &TenantFiles, file: &std::path::Path, tunnel_mbs: f64) {
    use std::process::{Command, Stdio};
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return;
    };
    let d = &ten.dir;
    let mut srv = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "openssl", "s_server", "-quiet", "-tls1_3",
        ])
        .args(["-accept", "10.0.0.1:8444", "-WWW"])
        .arg("-cert")
        .arg(d.join("server.pem"))
        .arg("-key")
        .arg(d.join("server.key"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_server");
    let peer = ns.peer("peer", "10.0.0.250");
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("https://{NAME}:8444/{}", name.to_string_lossy());
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &peer.name,
            "curl",
            "-sS",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{size_download} %{time_starttransfer} %{time_total}"])
        .arg("--cacert")
        .arg(d.join("ca.pem"))
        .args(["--resolve", &format!("{NAME}:8444:10.0.0.1"), &url])
        .output()
        .expect("curl");
    let _ = srv.kill();
    let srv_out = srv.wait_with_output();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text.split(' ').filter_map(|x| x.parse().ok()).collect();
    if v.len() != 3 {
        println!("peer: curl said {text:?}");
    }
    let (&[bytes, first, total], true) = (&v[..], out.status.success() && bytes_ok(&v)) else {
        println!(
            "peer: curl failed: {text} {}; openssl s_server: {}",
            String::from_utf8_lossy(&out.stderr),
            srv_out.map_or(String::new(), |o| String::from_utf8_lossy(&o.stderr)
                .into_owned())
        );
        return;
    };
    let mbs = bytes / 1e6 / (total - first).max(1e-6);
    println!(
        "peer (curl over TLS 1.3, same bridge, openssl s_server): {:.1} MB in {:.3} s = {mbs:.1} MB/s; \
         tunnel / peer = {:.2}",
        bytes / 1e6,
        total - first,
        tunnel_mbs / mbs
    );
}
