//! One-shot modes of `tvpd` that print and exit instead of serving.

use super::StartError;
use crate::config::Config;
use crate::platform;

/// `--print-expected-pcrs`: what an inventory should expect of the platform PCR. The
/// measurements are listed on stderr, the expected-values file goes to stdout.
pub(super) fn print_expected_pcrs(cfg: &Config) -> Result<(), StartError> {
    let exe = std::env::current_exe().map_err(StartError::OwnBinary)?;
    let measurements = platform::platform_measurements(
        &exe,
        &cfg.canonical_json(),
        &super::start::platform_files(cfg),
    )
    .map_err(StartError::MeasurePlatform)?;
    let mut pcr = [0u8; 32];
    for m in &measurements {
        eprintln!("{}  {:?}  {}", hex::encode(m.digest), m.kind, m.description);
        pcr = tvp_verifier::eventlog::extend_sha256(&pcr, &m.digest);
    }
    let expected =
        serde_json::json!({"pcrs": {"sha256": {cfg.platform_pcr.to_string(): hex::encode(pcr)}}});
    println!("{expected:#}");
    Ok(())
}
