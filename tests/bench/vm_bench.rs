//! Measured-VM benchmark through tvpd's API on real KVM and swtpm: create → running
//! (handover) latency with its breakdown by boot phase, the PCR lease hold time per VM
//! (the figure that bounds a host's attestation throughput), and attestations per
//! minute with QUEUED VMs created at once. The firmware is `FIRMWARE` if set (the real
//! network-boot firmware needs its boot server), else tvp-vmm's `happy` test guest,
//! which drives the same mailbox path (tunnel, quote, handover) without a network.
//!
//! Usage: tvp-bench-vm [SEQUENTIAL] [QUEUED]   (defaults 20 10)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tvp_tests::phases::breakdown;
use tvp_tests::vm::wait_vm_every;
use tvp_tests::{ended, Swtpm, Tenant, Tvpd, VmSpec};

/// How long a VM may take to end; the bench asks often (its wall-clock figures include
/// the last wait).
fn wait_final(t: &Tvpd, id: &str) -> Value {
    wait_vm_every(
        t,
        id,
        ended,
        Duration::from_secs(120),
        Duration::from_millis(5),
    )
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(20).max(1);
    let q = args.get(1).copied().unwrap_or(10).max(1);
    let tpm = Swtpm::blank();
    let fw = match std::env::var_os("FIRMWARE") {
        Some(f) => std::path::PathBuf::from(f),
        None => tvp_tests::guests::build_guest("happy", &tpm.scratch("guest")),
    };
    let t = Tvpd::start(
        &tpm,
        &tpm.scratch("a"),
        &[
            "--firmware",
            fw.to_str().unwrap_or_default(),
            "--log-level",
            "warn",
        ],
    );
    println!("measured VMs: firmware {}", fw.display());
    // Sequential: one VM at a time, create → running.
    let mut totals = Vec::new();
    let mut leases = Vec::new();
    let mut phase_times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut api = Vec::new();
    for i in 0..n {
        let id = format!("seq-{i}");
        let t0 = Instant::now();
        let r = t.create_vm(&VmSpec::measured(&id));
        api.push(t0.elapsed().as_secs_f64());
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = wait_final(&t, &id);
        let (per, total, lease) = breakdown(&v);
        totals.push(total);
        leases.push(lease);
        for (k, s) in per {
            phase_times.entry(k).or_default().push(s);
        }
        let _ = t.delete_vm(&id, Tenant::shared());
    }
    let ms = |s: f64| s * 1000.0;
    println!("create -> running (handover), {n} VMs one at a time:");
    println!(
        "  POST /v1/vms answered:  median {:7.2} ms",
        ms(pct(&mut api, 50))
    );
    println!(
        "  create -> running:      median {:7.2} ms  p95 {:7.2} ms",
        ms(pct(&mut totals.clone(), 50)),
        ms(pct(&mut totals, 95))
    );
    for name in ["queued", "measuring", "tunnel", "attestation", "delivery"] {
        if let Some(v) = phase_times.get_mut(name) {
            println!("    {name:<12} median {:7.2} ms", ms(pct(v, 50)));
        }
    }
    println!(
        "  (queued = VMM start + its measurements; measuring = their check by computation;\n   tunnel/attestation/delivery = firmware work, the lease wait and quote through the mailbox)"
    );
    println!(
        "  PCR lease hold per VM:  median {:7.2} ms  p95 {:7.2} ms",
        ms(pct(&mut leases.clone(), 50)),
        ms(pct(&mut leases, 95))
    );
    // Queued: Q VMs created at once: they boot side by side, each quote under the lease
    // in turn.
    let t0 = Instant::now();
    for i in 0..q {
        let r = t.create_vm(&VmSpec::measured(&format!("q-{i}")));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let mut holds = Vec::new();
    for i in 0..q {
        let v = wait_final(&t, &format!("q-{i}"));
        holds.push(breakdown(&v).2);
    }
    let wall = t0.elapsed().as_secs_f64();
    println!("{q} VMs created at once:");
    println!(
        "  all running after {:.2} s: {:.0} measured-VM attestations per minute",
        wall,
        q as f64 / wall * 60.0
    );
    println!(
        "  lease hold per VM: median {:.2} ms (bound: {:.0} attestations per minute)",
        ms(pct(&mut holds.clone(), 50)),
        60.0 / pct(&mut holds, 50)
    );
}
