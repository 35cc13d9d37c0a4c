//! A measured VM's boot, read back from its API view: time per boot phase, create ->
//! running, and the PCR lease hold (for the benchmarks).

use std::collections::BTreeMap;

use serde_json::Value;

/// Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn secs(t: &str) -> f64 {
    let n = |a: usize, b: usize| t.get(a..b).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let frac: f64 = t
        .get(19..)
        .and_then(|s| s.trim_end_matches('Z').parse().ok())
        .unwrap_or(0.0);
    (days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)) as f64 + frac
}

/// (phase → seconds spent in it, create → running seconds, PCR lease hold seconds:
/// the sum of the boot's leases, one per quote, from its `leases`)
pub fn breakdown(v: &Value) -> (BTreeMap<String, f64>, f64, f64) {
    let created = secs(v["created_at"].as_str().unwrap_or(""));
    let phases = v["phases"].as_array().cloned().unwrap_or_default();
    let start_of = |name: &str| {
        phases
            .iter()
            .find(|p| p["phase"] == name)
            .map(|p| secs(p["started_at"].as_str().unwrap_or("")))
    };
    let running = start_of("running").unwrap_or_else(|| panic!("VM never handed over: {v}"));
    let mut per = BTreeMap::new();
    for p in &phases {
        let name = p["phase"].as_str().unwrap_or("?").to_string();
        if name == "running" {
            continue;
        }
        let start = secs(p["started_at"].as_str().unwrap_or(""));
        let end = p["ended_at"].as_str().map(secs).unwrap_or(start);
        per.insert(name, end - start);
    }
    (per, running - created, lease_hold(v))
}

/// Seconds a VM view's boot held the PCR lease: the sum of its `leases` (one per
/// quote; 0 if it never quoted).
pub fn lease_hold(v: &Value) -> f64 {
    v["leases"]
        .as_array()
        .map(|l| l.iter().filter_map(|l| l["held_us"].as_u64()).sum::<u64>())
        .unwrap_or(0) as f64
        / 1e6
}

/// The boot phases of a VM view's `phases`, in order (panics on a phase without a name).
pub fn phase_names(v: &Value) -> Vec<String> {
    v["phases"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    p["phase"]
                        .as_str()
                        .unwrap_or_else(|| panic!("a phase without a name: {v}"))
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The states of a VM view's `history`, in order.
pub fn states(v: &Value) -> Vec<String> {
    v["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// When the VM of view `v` entered `state` (RFC 3339; panics if it never did).
pub fn entered(v: &Value, state: &str) -> String {
    v["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e[1] == state))
        .and_then(|e| e[0].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("the VM never entered {state}: {v}"))
}

/// The states of a measured VM that booted, handed over and ended normally.
pub const FULL_BOOT: [&str; 6] = [
    "queued",
    "measuring",
    "attesting",
    "booting-workload",
    "running",
    "destroyed",
];
