//! Quote benchmark: tvpd's full API round trip (client → Unix socket → HTTP → TPM quote
//! → read-quote-compare → evidence JSON → client) against `tpm2_quote` from tpm2-tools,
//! on the same swtpm, in the same run, with 1 and CONCURRENCY clients. Prints medians,
//! p95, throughput and the ratios; then the cost of the secret-carrying commands
//! (ActivateCredential, the binding key's unwrap), which run in a session salted to the
//! EK with parameter encryption, and what the salt itself costs at session start.
//!
//! Usage: tvp-bench [QUOTES] [TPM2_QUOTES] [CONCURRENCY]   (defaults 200 30 16)
//!
//! The AK is tvpd's default (ECC P-256, ECDSA); TVP_BENCH_AK=rsa-2048 provisions an
//! RSA-2048 AK instead (as hosts provisioned before ECC AKs have). `tpm2_quote` signs
//! with the same AK, so both sides pay the same signing cost.

use std::process::Command;
use std::time::{Duration, Instant};

use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, SessionHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::SymmetricDefinition;
use tvp_agent::tpm::{ProvisionConfig, Tpm};
use tvp_tests::{have, make_credential, nonce_hex, Swtpm, Tvpd};
use tvpctl::client;

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(v[v.len() / 2]);
    let p95 = ms(v[(v.len() * 95 / 100).min(v.len() - 1)]);
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    (median, p95, mean)
}

/// The median of each `key=N` field of tvpd's debug lines with message `msg` (only
/// `op=quote` lines where the line names an op).
fn field_medians(log: &str, msg: &str, keys: &[&str]) -> Vec<(String, f64, usize)> {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!(": {msg} ")) || l.ends_with(&format!(": {msg}")))
        .filter(|l| !l.contains(" op=") || l.contains(" op=quote"))
        .collect();
    keys.iter()
        .map(|k| {
            let mut v: Vec<f64> = lines
                .iter()
                .filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(&format!("{k}=")))
                        .and_then(|x| x.trim_matches('"').parse::<f64>().ok())
                })
                .collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let med = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
            (k.to_string(), med / 1000.0, v.len())
        })
        .collect()
}

/// Where a quote's time goes, from tvpd's debug log (medians, ms).
fn print_profile(what: &str, log: &str) {
    println!("where a quote's time goes, {what} (tvpd debug log, medians in ms):");
    for (msg, keys) in [
        ("request timing", &["receive_us", "total_us"][..]),
        (
            "request phases",
            &["decide_us", "admit_us", "execute_us", "conclude_us"][..],
        ),
        (
            "quote timing",
            &["tpm_wait_us", "tpm_quote_us", "evidence_us"][..],
        ),
        (
            "audit group timing",
            &["records", "wal_us", "nv_extend_us", "log_us"][..],
        ),
    ] {
        let row: Vec<String> = field_medians(log, msg, keys)
            .into_iter()
            .map(|(k, m, n)| {
                if k == "records" {
                    format!("records/group {:.0}", m * 1000.0)
                } else {
                    format!("{} {m:.3} (n={n})", k.trim_end_matches("_us"))
                }
            })
            .collect();
        println!("  {msg:<20} {}", row.join("  "));
    }
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
    let c = args.get(2).copied().unwrap_or(16).max(1);
    for tool in ["swtpm", "tpm2_quote", "tpm2_makecredential"] {
        if !have(tool) {
            eprintln!("tvp-bench: {tool} not installed (scripts/bench.sh installs it)");
            std::process::exit(2);
        }
    }
    let tpm = Swtpm::blank();
    // TVP_BENCH_PROFILE=1: tvpd logs each request's phases at debug level (which costs
    // a little itself) and the bench prints their medians, per client count.
    let profile = std::env::var_os("TVP_BENCH_PROFILE").is_some_and(|v| v == "1");
    let level = if profile { "debug" } else { "warn" };
    let ak_alg = std::env::var("TVP_BENCH_AK").unwrap_or_else(|_| "ecc-p256".into());
    let mut t = Tvpd::start(
        &tpm,
        &tpm.scratch("tvpd"),
        &["--log-level", level, "--ak-algorithm", &ak_alg],
    );
    let ak_desc = tvp_verifier::AkKey::from_pem(
        t.api_json("GET", "/v1/host", None)["ak_public_pem"]
            .as_str()
            .unwrap_or_default(),
    )
    .map(|k| k.describe())
    .unwrap_or_else(|e| format!("unknown ({e})"));
    for _ in 0..5 {
        quote_once(&t);
    }
    eprintln!("tvp-bench: {n} sequential quotes through the API ...");
    let started = Instant::now();
    let seq: Vec<Duration> = (0..n).map(|_| quote_once(&t)).collect();
    let seq_rate = n as f64 / started.elapsed().as_secs_f64();
    let (api_med, api_p95, api_mean) = stats(seq);
    let log_after_seq = t.log().len();

    eprintln!("tvp-bench: {n} quotes from {c} concurrent clients ...");
    let started = Instant::now();
    let conc: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..c)
            .map(|_| s.spawn(|| (0..n / c).map(|_| quote_once(&t)).collect::<Vec<_>>()))
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    let conc_rate = (n / c * c) as f64 / started.elapsed().as_secs_f64();
    let (conc_med, conc_p95, conc_mean) = stats(conc);
    let log = t.log();
    t.stop();

    // swtpm serves one connection at a time: the in-process figures run after tvpd.
    let k = 20;
    eprintln!("tvp-bench: {k} of each secret-carrying command, in process ...");
    let secret_rows = secret_commands(&tpm, k);

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

    println!(
        "quote benchmark (swtpm, {ak_desc} AK for both, SHA-256, PCRs 15,16,23, 20-byte nonce)"
    );
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
        "{:<44} {:>10.2} {:>10.2} {:>10.2} {:>12.1}",
        format!("tvpd API, {c} concurrent clients (n={})", n / c * c),
        conc_med,
        conc_p95,
        conc_mean,
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
        "ratio, 1 client: tpm2_quote median / tvpd API median = {:.2}x",
        peer_med / api_med
    );
    println!(
        "ratio, {c} clients: tvpd API quotes/s / tpm2_quote quotes/s = {:.2}x",
        conc_rate / peer_rate
    );
    if profile {
        let (one, many) = log.split_at(log_after_seq.min(log.len()));
        print_profile("1 client", one);
        print_profile(&format!("{c} clients"), many);
    }
    println!();
    println!("secret-carrying commands (in process, session salted to the EK, AES-128-CFB parameter encryption)");
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "", "median ms", "p95 ms", "mean ms"
    );
    for (what, v) in secret_rows {
        let (med, p95, mean) = stats(v);
        println!("{what:<44} {med:>10.2} {p95:>10.2} {mean:>10.2}");
    }
}

/// Time the secret-carrying commands as tvpd runs them (salted sessions), a quote for
/// reference, and the bare cost of starting (and flushing) an unsalted vs a salted
/// session, `k` of each.
fn secret_commands(swtpm: &Swtpm, k: usize) -> Vec<(String, Vec<Duration>)> {
    use rsa::pkcs8::DecodePublicKey;
    const EK: u32 = 0x8101_0001;
    let cfg = ProvisionConfig {
        ek_handle: EK,
        ak_handle: 0x8101_0002,
        ak_algorithm: Default::default(),
    };
    let mut rows = Vec::new();
    let time = |f: &mut dyn FnMut()| {
        let s = Instant::now();
        f();
        s.elapsed()
    };
    {
        let mut tpm = Tpm::open(&swtpm.tcti(), &cfg).expect("open the TPM in process");
        let q: Vec<Duration> = (0..k)
            .map(|_| {
                time(&mut || {
                    tpm.quote(&[7u8; 20], &[15, 16, 23]).expect("quote");
                })
            })
            .collect();
        rows.push(("Quote (password session, PCRs unchanged)".to_string(), q));
        let key = tpm.create_binding_key(&[15]).expect("binding key");
        let pem = tvp_agent::tpm::keys::public_to_pem(&key.public).expect("pem");
        let public = rsa::RsaPublicKey::from_public_key_pem(&pem).expect("public key");
        let image_key = tvp_image::ImageKey::generate();
        let wrapped = image_key.wrap(&public).expect("wrap");
        let u: Vec<Duration> = (0..k)
            .map(|_| {
                time(&mut || {
                    let out = tpm.binding_unwrap(&key, &wrapped).expect("unwrap");
                    assert_eq!(&out[..], image_key.as_bytes());
                })
            })
            .collect();
        rows.push((
            "binding unwrap (load, PolicyPCR, RSA_Decrypt)".to_string(),
            u,
        ));
        let id = tpm.identity().clone();
        let secret = [9u8; 32];
        let (blob, enc) = make_credential(
            &swtpm.scratch("cred"),
            &id.ek_public_pem,
            &hex::encode(&id.ak_name),
            &secret,
        );
        let a: Vec<Duration> = (0..k)
            .map(|_| {
                time(&mut || {
                    let got = tpm.activate_credential(&blob, &enc).expect("activate");
                    assert_eq!(got, secret);
                })
            })
            .collect();
        rows.push(("ActivateCredential (with PolicySecret)".to_string(), a));
    }
    let conf = swtpm.tcti().parse().expect("tcti");
    let mut ctx = tss_esapi::Context::new(conf).expect("ESAPI context");
    let ek: KeyHandle = ctx
        .tr_from_tpm_public(TpmHandle::try_from(EK).expect("EK handle"))
        .expect("EK")
        .into();
    for (what, salt) in [
        ("StartAuthSession + flush, unsalted", None),
        ("StartAuthSession + flush, salted to the EK", Some(ek)),
    ] {
        let v: Vec<Duration> = (0..k)
            .map(|_| {
                time(&mut || {
                    let s = ctx
                        .start_auth_session(
                            salt,
                            None,
                            None,
                            SessionType::Policy,
                            SymmetricDefinition::AES_128_CFB,
                            HashingAlgorithm::Sha256,
                        )
                        .expect("start session")
                        .expect("a session");
                    ctx.flush_context(SessionHandle::from(s).into())
                        .expect("flush");
                })
            })
            .collect();
        rows.push((what.to_string(), v));
    }
    rows
}
