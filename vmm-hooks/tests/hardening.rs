//! Hardening of the VMM process: a crash of tvp-vmm never writes a core file (guest
//! memory must not reach the disk in the clear), while an ordinary process crashing
//! the same way does (the control that shows the test can fail).
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn core_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n == "core" || n.starts_with("core."))
                .collect()
        })
        .unwrap_or_default()
}

fn allow_core_dumps() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct; affects this test process and its children.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &lim) };
}

#[test]
fn a_crashing_vmm_leaves_no_core_file_while_an_ordinary_process_does() {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    skip_unless!(
        pattern.trim() == "core",
        "core_pattern is {pattern:?}, not a plain file in the cwd"
    );
    allow_core_dumps();
    // Control: a dumpable process killed by SIGABRT dumps core in its cwd.
    let control_dir = tempfile::tempdir().unwrap();
    let mut control = Command::new("sleep")
        .arg("30")
        .current_dir(control_dir.path())
        .spawn()
        .unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(control.id() as i32, libc::SIGABRT) };
    let _ = control.wait();
    skip_unless!(
        !core_files(control_dir.path()).is_empty(),
        "this machine writes no core files even for ordinary processes"
    );

    // The VMM, running a guest, crashed the same way. Its cwd is this crate's dir.
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("spin", dir.path());
    let cfg = write_config(dir.path(), b"U-core");
    let cwd = std::env::current_dir().unwrap();
    let before = core_files(&cwd);
    let run = run_vm_with(dir.path(), &fw, &cfg, PeerMode::Normal, |pid| {
        // SAFETY: signalling the VMM child we spawned.
        unsafe { libc::kill(pid as i32, libc::SIGABRT) };
    });
    assert_ne!(
        run.exit_code,
        Some(0),
        "the VMM must have died of the signal"
    );
    let after = core_files(&cwd);
    let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    for f in &new {
        let _ = std::fs::remove_file(cwd.join(f));
    }
    assert!(new.is_empty(), "tvp-vmm dumped core: {new:?}");
}
