mod common;
use common::*;

#[test]
fn happy_guest_boots_and_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("happy", dir.path());
    let cfg = write_config(dir.path(), b"U-happy");
    let run = run_vm(dir.path(), &fw, &cfg, PeerMode::Normal);
    assert_eq!(run.exit_code, Some(0), "{}", run.stderr);
}
