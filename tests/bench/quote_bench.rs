//! Quote benchmark: tvpd's full API round trip (client → Unix socket → HTTP → TPM quote
//! → read-quote-compare → evidence JSON → client) against `tpm2_quote` from tpm2-tools,
//! on the same swtpm, in the same run. Prints medians, p95, throughput and the ratio.
//!
//! Usage: tvp-bench [QUOTES] [TPM2_QUOTES] [CONCURRENCY]   (defaults 200 30 4)

use std::process::Command;
use std::time::{Duration, Instant};

use tvp_tests::{have, nonce_hex, Swtpm, Tvpd};
use tvpctl::client;

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(v[v.len() / 2]);
    let p95 = ms(v[(v.len() * 95 / 100).min(v.len() - 1)]);
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    (median, p95, mean)
}

fn quote_once(t: &Tvpd) -> Duration {
    let body = format!("{{\"nonce\":\"{}\",\"pcrs\":[15,16,23]}}", nonce_hex(20));
    let start = Instant::now();
    let r = client::request(&t.socket, "POST", "/v1/host/quote", Some(body.as_bytes()))
        .unwrap_or_else(|e| panic!("quote failed: {e}"));
    let d = start.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    d
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200).max(2);
    let m = args.get(1).copied().unwrap_or(30).max(2);
    let c = args.get(2).copied().unwrap_or(4).max(1);
    for tool in ["swtpm", "tpm2_quote"] {
        if !have(tool) {
            eprintln!("tvp-bench: {tool} not installed (scripts/bench.sh installs it)");
            std::process::exit(2);
        }
    }
    let tpm = Swtpm::blank();
    let mut t = Tvpd::start(&tpm, &tpm.scratch("tvpd"), &["--log-level", "warn"]);
    for _ in 0..5 {
        quote_once(&t);
    }
    eprintln!("tvp-bench: {n} sequential quotes through the API ...");
    let started = Instant::now();
    let seq: Vec<Duration> = (0..n).map(|_| quote_once(&t)).collect();
    let seq_rate = n as f64 / started.elapsed().as_secs_f64();
    let (api_med, api_p95, api_mean) = stats(seq);

    eprintln!("tvp-bench: {n} quotes from {c} concurrent clients ...");
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..c {
            s.spawn(|| {
                for _ in 0..n / c {
                    quote_once(&t);
                }
            });
        }
    });
    let conc_rate = (n / c * c) as f64 / started.elapsed().as_secs_f64();
    t.stop();

    // swtpm serves one connection at a time: tpm2_quote runs after tvpd has let go.
    eprintln!("tvp-bench: {m} tpm2_quote invocations ...");
    let out = tpm.scratch("tpm2");
    let mut peer = Vec::with_capacity(m);
    for _ in 0..m {
        let start = Instant::now();
        let o = Command::new("tpm2_quote")
            .args([
                "-T",
                &tpm.tools_tcti(),
                "-c",
                "0x81010002",
                "-l",
                "sha256:15,16,23",
            ])
            .args(["-q", &nonce_hex(20), "-g", "sha256"])
            .arg("-m")
            .arg(out.join("q.msg"))
            .arg("-s")
            .arg(out.join("q.sig"))
            .arg("-o")
            .arg(out.join("q.pcrs"))
            .output()
            .expect("run tpm2_quote");
        peer.push(start.elapsed());
        assert!(
            o.status.success(),
            "tpm2_quote: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let peer_rate = m as f64 / peer.iter().map(|d| d.as_secs_f64()).sum::<f64>();
    let (peer_med, peer_p95, peer_mean) = stats(peer);

    println!("quote benchmark (swtpm, RSA-2048 AK, SHA-256, PCRs 15,16,23, 20-byte nonce)");
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>12}",
        "", "median ms", "p95 ms", "mean ms", "quotes/s"
    );
    println!(
        "{:<44} {:>10.2} {:>10.2} {:>10.2} {:>12.1}",
        format!("tvpd API round trip, sequential (n={n})"),
        api_med,
        api_p95,
        api_mean,
        seq_rate
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>12.1}",
        format!("tvpd API, {c} concurrent clients"),
        "-",
        "-",
        "-",
        conc_rate
    );
    println!(
        "{:<44} {:>10.2} {:>10.2} {:>10.2} {:>12.1}",
        format!("tpm2_quote invocation (n={m})"),
        peer_med,
        peer_p95,
        peer_mean,
        peer_rate
    );
    println!(
        "ratio: tpm2_quote median / tvpd API median = {:.2}x",
        peer_med / api_med
    );
}
