//! The skip mechanism itself: a test whose environment is missing FAILS under
//! `TVP_REQUIRE_ALL=1` (and under `CI`), and without them passes as a skip that is
//! printed and logged to `TVP_SKIP_LOG`. The missing need is simulated
//! (`TVP_SIMULATE_MISSING`) in a child run of this very binary.

use std::process::Command;

use tvp_test_env::{require, Need};

/// The child: needs a network namespace and `ip`. Does nothing unless the parent runs it.
#[test]
#[ignore = "run by the tests below, in a child process"]
fn child_needing_a_network_namespace() {
    if std::env::var_os("TVP_ENV_SELFTEST").is_none() {
        return;
    }
    require!(Need::Netns, "ip");
    panic!("the environment counted as present although TVP_SIMULATE_MISSING names it");
}

/// Runs the child with `env`; returns (exit success, stdout + stderr).
fn child(env: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--ignored",
        "--exact",
        "child_needing_a_network_namespace",
        "--nocapture",
    ])
    .env("TVP_ENV_SELFTEST", "1")
    .env("TVP_SIMULATE_MISSING", "netns")
    .env_remove("CI")
    .env_remove("TVP_REQUIRE_ALL")
    .env_remove("TVP_SKIP_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_missing_environment_fails_the_test_under_tvp_require_all_or_ci() {
    for strict in [("TVP_REQUIRE_ALL", "1"), ("CI", "true")] {
        let (ok, out) = child(&[strict]);
        assert!(!ok, "{strict:?}: the child passed:\n{out}");
        assert!(
            out.contains("tvp-require: missing_environment::child_needing_a_network_namespace cannot run here: netns (simulated"),
            "{strict:?}: {out}"
        );
        assert!(!out.contains("tvp-skip:"), "{out}");
    }
}

#[test]
fn a_missing_environment_is_a_logged_skip_otherwise() {
    let dir = std::env::temp_dir().join(format!("tvp-env-selftest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("skips");
    let (ok, out) = child(&[("TVP_SKIP_LOG", log.to_str().unwrap()), ("CI", "")]);
    assert!(ok, "{out}");
    let line = "tvp-skip: missing_environment::child_needing_a_network_namespace: netns (simulated by TVP_SIMULATE_MISSING)";
    assert!(out.contains(line), "{out}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), format!("{line}\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}
