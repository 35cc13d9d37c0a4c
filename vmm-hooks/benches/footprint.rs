//! tvp-vmm's start-up time and memory footprint (issue #17's benchmarks), on real KVM
//! with the test peer playing tvpd:
//! - exec → first guest instruction: from just before `tvp-vmm run` is spawned until
//!   the guest's milestone 0 (its first instruction writes the boot timer) reaches the
//!   peer; beside it the VMM's own `micros_since_start` of that milestone (from its
//!   process start, so without exec and dynamic loading). Goal ≤ 12 ms.
//! - memory overhead: the VMM's resident set (`/proc/PID/smaps`) at that moment minus
//!   the resident pages of its guest RAM mapping, for a 256 MiB guest; Firecracker
//!   publishes ≤ 5 MiB for its VMM. The guest-RAM side counts only the large mapping
//!   (the boot region and the configuration page are two small mappings counted as
//!   overhead: at most 68 KiB too much).
//!
//! Run: `cargo bench -p tvp-vmm --bench footprint [-- RUNS]` (root, /dev/kvm, gcc, ld;
//! `scripts/bench.sh` runs it). Prints figures, never asserts them.

// Benchmark code, like test code (it shares `tests/common`): a failed set-up ends it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{build_guest, config, log_value, median, PeerMode, VmRun};

/// Guest memory of the measured VM.
const GUEST_MIB: u32 = 256;

/// What one run saw when milestone 0 arrived.
#[derive(Clone, Copy, Default)]
struct Sample {
    exec_to_first_ms: f64,
    rss_kib: u64,
    guest_rss_kib: u64,
}

/// Total `Rss` of `pid` and the `Rss` of its mappings at least `guest_bytes` long.
fn rss(pid: u32, guest_bytes: u64) -> Option<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut total, mut guest) = (0, 0);
    let mut size = 0u64;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let (a, b) = first.split_once('-')?;
            size = u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?;
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
            total += kib;
            if size >= guest_bytes {
                guest += kib;
            }
        }
    }
    Some((total, guest))
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20)
        .max(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fw = build_guest("spin", dir.path());
    let page = dir.path().join("config.page");
    let mut c = config(b"U-bench");
    c.mem_size_mib = GUEST_MIB;
    std::fs::write(&page, c.encode().expect("a valid page")).expect("write the page");
    // The guest RAM's large mapping: everything above the configuration page.
    let guest_bytes = (u64::from(GUEST_MIB) << 20) - (1 << 20);
    let mut samples = Vec::new();
    let mut inside_ms = Vec::new();
    for _ in 0..runs {
        let seen = Arc::new(Mutex::new(None));
        let out = seen.clone();
        let t0 = Instant::now();
        let run = VmRun::new(dir.path(), &fw, &page)
            .mode(PeerMode::StopAfterFirstMilestone)
            .channel_fd()
            .on_first_milestone(move |pid| {
                let exec_to_first_ms = t0.elapsed().as_secs_f64() * 1e3;
                let (rss_kib, guest_rss_kib) = rss(pid, guest_bytes).unwrap_or_default();
                *out.lock().expect("not poisoned") = Some(Sample {
                    exec_to_first_ms,
                    rss_kib,
                    guest_rss_kib,
                });
            })
            .run();
        if let Some(s) = *seen.lock().expect("not poisoned") {
            samples.push(s);
        }
        if let Some(us) = run
            .stderr
            .lines()
            .find(|l| l.contains("milestone") && l.contains(" code=0 "))
            .and_then(|l| log_value(l, "milestone", "micros_since_start"))
            .and_then(|v| v.parse::<f64>().ok())
        {
            inside_ms.push(us / 1e3);
        }
    }
    if samples.is_empty() {
        println!("no run reached the guest's first instruction");
        std::process::exit(1);
    }
    let mut exec: Vec<f64> = samples.iter().map(|s| s.exec_to_first_ms).collect();
    let mut over: Vec<f64> = samples
        .iter()
        .map(|s| (s.rss_kib - s.guest_rss_kib) as f64 / 1024.0)
        .collect();
    let mut total: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
    let mut guest: Vec<f64> = samples
        .iter()
        .map(|s| s.guest_rss_kib as f64 / 1024.0)
        .collect();
    let n = samples.len();
    let exec_med = median(&mut exec);
    println!("tvp-vmm footprint, {n} runs, {GUEST_MIB} MiB guest (the `spin` test guest)");
    println!(
        "  exec -> first guest instruction: median {exec_med:.2} ms, max {:.2} ms (goal <= 12 ms: {:.2}x of it)",
        exec[n - 1],
        exec_med / 12.0
    );
    if !inside_ms.is_empty() {
        let m = median(&mut inside_ms);
        println!(
            "    of which inside tvp-vmm (its process start -> milestone 0): median {m:.2} ms"
        );
    }
    let over_med = median(&mut over);
    println!(
        "  memory: resident {:.1} MiB, of it guest RAM {:.2} MiB; VMM overhead median {over_med:.2} MiB, max {:.2} MiB (Firecracker publishes <= 5 MiB: {:.2}x of it)",
        median(&mut total),
        median(&mut guest),
        over[n - 1],
        over_med / 5.0
    );
}
