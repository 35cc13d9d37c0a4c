//! The measurement hook: the events tvp-vmm reports replay to the PCR 23 value a
//! verifier computes from the firmware file and the configuration page alone.
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use tvp_abi::measure::{expected_pcr23, replay};
use tvp_vmm_channel::VmmMessage;

fn reported(run: &Run) -> (Vec<[u8; 32]>, [u8; 32]) {
    let digests: Vec<[u8; 32]> = run
        .messages
        .iter()
        .filter_map(|m| match m {
            VmmMessage::Measurement { digest, .. } => Some(*digest),
            _ => None,
        })
        .collect();
    let done = run
        .messages
        .iter()
        .find_map(|m| match m {
            VmmMessage::MeasurementsDone { pcr23, count } => {
                assert_eq!(*count as usize, digests.len());
                Some(*pcr23)
            }
            _ => None,
        })
        .expect("MeasurementsDone sent");
    (digests, done)
}

#[test]
fn reported_events_replay_to_expected_pcr23_and_any_byte_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-measure");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0));
    let (digests, done) = reported(&run);
    assert_eq!(digests.len(), 6);
    let fw_bytes = std::fs::read(&fw).unwrap();
    let page = std::fs::read(&cfg).unwrap();
    let expected = expected_pcr23(&fw_bytes, &page).unwrap();
    assert_eq!(replay(digests.iter()), expected);
    assert_eq!(done, expected);

    // The CLI prints the same value.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tvp-vmm"))
        .arg("expected-pcr23")
        .arg("--firmware")
        .arg(&fw)
        .arg("--config-page")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("pcr23 {}", hex::encode(expected))),
        "{text}"
    );

    // tvpctl computes the same value from the files alone (built by scripts/test.sh's
    // `cargo build --workspace --bins`).
    let tvpctl = std::path::Path::new(env!("CARGO_BIN_EXE_tvp-vmm")).with_file_name("tvpctl");
    if tvpctl.exists() {
        let out = std::process::Command::new(&tvpctl)
            .arg("expected-pcrs")
            .arg("--firmware")
            .arg(&fw)
            .arg("--config-page")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["pcrs"]["sha256"]["23"], hex::encode(expected));
    } else {
        eprintln!(
            "note: {} not built; tvpctl expected-pcrs not cross-checked",
            tvpctl.display()
        );
    }

    // One byte of the firmware (a symbol name: the guest still runs) changes PCR 23.
    let mut fw2 = fw_bytes.clone();
    let pos = fw2
        .windows(5)
        .position(|w| w == b"main\0")
        .expect("symbol name in ELF");
    fw2[pos + 3] = b'x';
    let fw2_path = dir.path().join("happy-modified.elf");
    std::fs::write(&fw2_path, &fw2).unwrap();
    let expected2 = expected_pcr23(&fw2, &page).unwrap();
    assert_ne!(expected2, expected);
    let dir2 = tempfile::tempdir().unwrap();
    let run2 = run_vm(dir2.path(), &fw2_path, &cfg, PeerMode::Normal);
    let (_, done2) = reported(&run2);
    assert_eq!(done2, expected2);

    // One byte of the configuration (the auth code) changes PCR 23.
    let dir3 = tempfile::tempdir().unwrap();
    let cfg3 = write_config(dir3.path(), b"U-measurf");
    let page3 = std::fs::read(&cfg3).unwrap();
    assert_eq!(page.iter().zip(&page3).filter(|(a, b)| a != b).count(), 1);
    let expected3 = expected_pcr23(&fw_bytes, &page3).unwrap();
    assert_ne!(expected3, expected);
    let run3 = run_vm(dir3.path(), &fw, &cfg3, PeerMode::Normal);
    let (_, done3) = reported(&run3);
    assert_eq!(done3, expected3);
}
