//! The VM's own TPM on real KVM: a stand-in CPL0 guest (guests/tpm.S) drives tvp-vmm's
//! TPM CRB device (`tvp_vmm::tpm_crb`), which forwards each command to a real swtpm
//! over an inherited socket (`--vtpm-fd`). The guest starts the TPM, extends PCR 16
//! and reads it back; tpm2-tools, reading the same swtpm afterwards, sees the value the
//! guest computed. A command with a hostile size field never reaches the TPM.
// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A swtpm of this test's own, its data channel on `<dir>/tpm.sock` and its control
/// channel on `<dir>/tpm.sock.ctrl` (what tpm2-tss's swtpm TCTI expects for `path=`);
/// killed by pid when dropped.
struct Swtpm {
    child: Child,
    sock: PathBuf,
}

impl Swtpm {
    fn start(dir: &Path) -> Swtpm {
        let state = dir.join("tpm-state");
        std::fs::create_dir_all(&state).unwrap();
        let sock = dir.join("tpm.sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm");
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "swtpm did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Swtpm { child, sock }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a configuration page giving the VM a TPM (`tpm`) or not.
fn tpm_page(dir: &Path, tpm: bool) -> PathBuf {
    let mut c = config(b"U-vtpm");
    c.tpm = tpm.then_some(tvp_abi::config::TpmRef {
        ek_public_digest: [0; 32],
        ak_public_digest: [0; 32],
    });
    let page = dir.join("config.page");
    std::fs::write(&page, c.encode().unwrap()).unwrap();
    page
}

/// `tvp-vmm run --standalone` of `fw` with `page`, its console in `dir`, and `vtpm` (if
/// given) inherited as descriptor 4 for `--vtpm-fd 4`.
fn vmm(dir: &Path, fw: &Path, page: &Path, vtpm: Option<i32>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tvp-vmm"));
    cmd.args(["--log", "info", "run", "--vm-id", "vtpm", "--standalone"])
        .arg("--firmware")
        .arg(fw)
        .arg("--config-page")
        .arg(page)
        .arg("--console-log")
        .arg(dir.join("console.log"));
    if let Some(fd) = vtpm {
        cmd.args(["--vtpm-fd", "4"]);
        pass_fds(&mut cmd, vec![(fd, 4)]);
    }
    cmd
}

/// Runs guests/tpm.S standalone with a connection to `tpm` as descriptor 4; returns
/// (exit code, stderr, console).
fn run_tpm_guest(dir: &Path, tpm: &Swtpm) -> (Option<i32>, String, String) {
    let fw = build_guest("tpm", dir);
    let page = tpm_page(dir, true);
    let console = dir.join("console.log");
    let conn = UnixStream::connect(&tpm.sock).unwrap();
    let mut cmd = vmm(dir, &fw, &page, Some(conn.as_raw_fd()));
    let out = cmd.output().unwrap();
    drop(conn);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&console).unwrap_or_default(),
    )
}

#[test]
fn the_guest_starts_extends_and_reads_its_own_tpm_through_the_crb() {
    require!(Need::Kvm, "swtpm", "tpm2_pcrread", "gcc", "ld");
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(dir.path());
    let (code, stderr, out) = run_tpm_guest(dir.path(), &tpm);
    assert_eq!(code, Some(0), "{stderr}\n{out}");
    assert!(out.contains("done"), "{out}\n{stderr}");
    // Locality 0 granted; the interface is a CRB (type 1, version 1).
    assert!(out.contains("T g=00000001 i="), "{out}");
    // Startup, Extend and Read succeeded (TPM_RC_SUCCESS)...
    assert!(
        out.contains("T s=00000000 x=00000000 r=00000000"),
        "{out}\n{stderr}"
    );
    // ... a command claiming 4 GiB got TPM_RC_COMMAND_SIZE from the device.
    assert!(out.contains("T b=00000142"), "{out}");
    // PCR 16 = SHA-256(32 zero bytes || 0x01..0x20), as the guest read it...
    let digest: Vec<u8> = (1..=32u8).collect();
    let expected = Sha256::new()
        .chain_update([0u8; 32])
        .chain_update(&digest)
        .finalize();
    let hex = hex::encode(expected);
    let printed: String = out
        .lines()
        .find_map(|l| l.strip_prefix("P "))
        .unwrap_or_else(|| panic!("no PCR line: {out}"))
        .split_whitespace()
        .collect();
    assert_eq!(printed, hex, "{out}");
    // ... and as tpm2-tools reads it from the same swtpm once the VM is gone.
    let read = Command::new("tpm2_pcrread")
        .arg("-T")
        .arg(format!("swtpm:path={}", tpm.sock.display()))
        .arg("sha256:16")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&read.stdout).to_lowercase();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(text.contains(&format!("16: 0x{hex}")), "{text}");
    // The measured ACPI tables are the ones with the TPM2 table and MSFT0101.
    let line = stderr
        .lines()
        .find(|l| l.contains("ACPI tables at") && l.contains("TPM2 (MSFT0101)"))
        .unwrap_or_else(|| panic!("no ACPI measurement with the TPM: {stderr}"));
    let with = hex::encode(tvp_abi::measure::acpi_tables_digest(1, true).unwrap());
    let without = hex::encode(tvp_abi::measure::acpi_tables_digest(1, false).unwrap());
    assert_ne!(with, without);
    assert!(line.contains(&with), "{line}");
    // The device's totals: three commands answered, the hostile one refused.
    assert!(
        stderr.lines().any(|l| l.contains("vTPM totals")
            && l.contains("commands=3")
            && l.contains("refused=1")),
        "{stderr}"
    );
}

#[test]
fn a_tpm_that_goes_away_fails_the_device_not_the_vmm() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let dir = tempfile::tempdir().unwrap();
    // A connection whose far end is closed at once: every command fails to get an
    // answer. The guest gets TPM_RC_FAILURE (0x101) for each and still powers off.
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(ours);
    let fw = build_guest("tpm", dir.path());
    let page = tpm_page(dir.path(), true);
    let console = dir.path().join("console.log");
    let mut cmd = vmm(dir.path(), &fw, &page, Some(theirs.as_raw_fd()));
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let con = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{con}");
    assert!(
        con.contains("T s=00000101 x=00000101 r=00000101"),
        "{con}\n{stderr}"
    );
    assert!(con.contains("T b=00000142"), "{con}");
    assert!(stderr.contains("vTPM failed"), "{stderr}");
}

#[test]
fn the_page_and_the_tpm_descriptor_go_together() {
    require!(Need::Kvm, "gcc", "ld");
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest("tpm", dir.path());
    for (page_tpm, pass_fd, why) in [
        (true, false, "gives the VM a TPM but none was passed"),
        (false, true, "does not give the VM one"),
    ] {
        let page = tpm_page(dir.path(), page_tpm);
        let (_keep, theirs) = UnixStream::pair().unwrap();
        let mut cmd = vmm(dir.path(), &fw, &page, pass_fd.then(|| theirs.as_raw_fd()));
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
    }
}

#[test]
fn the_guests_crb_address_is_the_abis() {
    assert_eq!(tvp_abi::layout::TPM_CRB_GPA, 0xfed4_0000);
}

/// `tpm2_pcrread sha256:<pcrs>` on `tpm`'s swtpm: the lowercase output without
/// spaces (lines `N:0x<hex>`).
fn pcrread(tpm: &Swtpm, pcrs: &str) -> String {
    let read = Command::new("tpm2_pcrread")
        .arg("-T")
        .arg(format!("swtpm:path={}", tpm.sock.display()))
        .arg(format!("sha256:{pcrs}"))
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    String::from_utf8_lossy(&read.stdout)
        .to_lowercase()
        .replace(' ', "")
}

#[test]
fn the_real_firmware_starts_the_vms_tpm_and_measures_itself_and_its_configuration() {
    require!(Need::Kvm, "swtpm", "tpm2_pcrread");
    let fw = firmware("");
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(dir.path());
    let page = tpm_page(dir.path(), true);
    let conn = UnixStream::connect(&tpm.sock).unwrap();
    let out = vmm(dir.path(), &fw, &page, Some(conn.as_raw_fd()))
        .output()
        .unwrap();
    drop(conn);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let con = std::fs::read_to_string(dir.path().join("console.log")).unwrap_or_default();
    eprintln!("{stderr}\n--- console ---\n{con}");
    // Without a NIC the boot ends at the network, after the measurements at start.
    assert!(con.contains("tpm: started"), "{con}\n{stderr}");
    assert!(con.contains("BOOT FAILED reason=no-link code=4"), "{con}");
    // PCR 0: the firmware file (the digest the host measures into PCR 23) and the ACPI
    // tables; PCR 1: the configuration page and the boot region, as swtpm holds them
    // once the VM is gone.
    use tvp_abi::measure::{acpi_tables_digest, boot_region_digest, replay, sha256};
    let fw_digest = sha256(&std::fs::read(&fw).unwrap());
    assert!(con.contains(&hex::encode(fw_digest)), "{con}");
    let pcr0 = replay([&fw_digest, &acpi_tables_digest(1, true).unwrap()]);
    let page_bytes = std::fs::read(&page).unwrap();
    let pcr1 = replay([
        &sha256(&page_bytes),
        &boot_region_digest(u64::from(MEM_MIB) << 20),
    ]);
    let text = pcrread(&tpm, "0,1,4");
    assert!(
        text.contains(&format!("\n0:0x{}", hex::encode(pcr0))),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n1:0x{}", hex::encode(pcr1))),
        "{text}"
    );
    // Nothing handed over: no workload and no separator in PCR 4.
    assert!(
        text.contains(&format!("\n4:0x{}", "0".repeat(64))),
        "{text}"
    );
}

/// Runs the real firmware with a TPM page and `theirs` as the VM's TPM; returns its
/// console, after checking that the VM ended on its own in time.
fn firmware_with_tpm(dir: &Path, theirs: &UnixStream) -> String {
    let fw = firmware("");
    let page = tpm_page(dir, true);
    let mut cmd = vmm(dir, &fw, &page, Some(theirs.as_raw_fd()));
    cmd.args(["--vtpm-timeout-ms", "2000"]);
    let t0 = Instant::now();
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let con = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    assert!(t0.elapsed() < Duration::from_secs(60), "{con}\n{stderr}");
    format!("{con}\n--- tvp-vmm ---\n{stderr}")
}

#[test]
fn the_real_firmware_fails_the_boot_clearly_on_a_tpm_that_answers_garbage_or_not_at_all() {
    require!(Need::Kvm);
    // A "TPM" that answers the first command with a header claiming 1 MiB and garbage:
    // the device refuses the answer and reports the TPM failed (CTRL_STS.tpmSts, and
    // TPM_RC_FAILURE in the buffer); the firmware fails the boot with its TPM reason,
    // before the network.
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let liar = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = ours;
        let mut cmd = [0u8; 64];
        let _ = s.read(&mut cmd);
        let _ = s.write_all(&[0x80, 0x01, 0x00, 0x10, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef]);
        let _ = s.write_all(&[0x5a; 300]);
        // Keep the connection until the VM is gone.
        let _ = s.read(&mut cmd);
    });
    let con = firmware_with_tpm(dir.path(), &theirs);
    drop(theirs);
    let _ = liar.join();
    assert!(
        con.contains("TPM failed at start: TPM interface: the TPM reports a fatal error"),
        "{con}"
    );
    assert!(
        con.contains("BOOT FAILED reason=tpm-failed code=20"),
        "{con}"
    );
    assert!(!con.contains("reason=no-link"), "{con}");

    // A TPM whose end is closed: the same clear failure, no hang.
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(ours);
    let con = firmware_with_tpm(dir.path(), &theirs);
    assert!(
        con.contains("BOOT FAILED reason=tpm-failed code=20"),
        "{con}"
    );
}
