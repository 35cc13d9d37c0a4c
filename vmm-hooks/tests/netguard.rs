//! The virtio-net device under attack from its own guest, on a real TAP device in a
//! network namespace: frames posing as another VM, the gateway or the boot server
//! never reach the TAP (captured on the host side), and the device never writes the
//! configuration page or the firmware image, whatever the guest points its rings and
//! buffers at.
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use std::collections::BTreeSet;

/// The markers ("TVP-...", 18 bytes) of the captured frames.
fn markers(frames: &[Vec<u8>]) -> BTreeSet<String> {
    frames
        .iter()
        .filter_map(|f| {
            let at = f.windows(4).position(|w| w == b"TVP-")?;
            let m = f.get(at..at + 18)?;
            Some(String::from_utf8_lossy(m).trim_end_matches('-').to_string())
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Runs guest `name` with a NIC on `tap0` of a fresh namespace, capturing what it sends
/// (and sending it `inject` meanwhile).
fn run_with_tap(name: &str, inject: Option<Vec<u8>>) -> (Run, Vec<Vec<u8>>) {
    let ns = NetNs::create(name);
    let dir = tempfile::tempdir().unwrap();
    let fw = build_guest(name, dir.path());
    let page = write_config(dir.path(), b"U-netguard");
    let side = ns.tap_side(inject);
    let run = VmRun::new(dir.path(), &fw, &page)
        .in_netns(&ns.name)
        .args(&["--tap", "tap0"])
        .run();
    let frames = side.finish();
    (run, frames)
}

/// The value of `key=` on the log line containing `message` (env_logger's kv format).
fn log_value(stderr: &str, message: &str, key: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.contains(message))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    Some(
        line[at..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

#[test]
fn the_guests_register_window_is_the_abis() {
    // tests/guests/vnet.S hard-codes it.
    assert_eq!(tvp_abi::layout::VIRTIO_NET_MMIO_GPA, 0xd000_0000);
}

#[test]
fn spoofed_frames_during_boot_never_reach_the_tap_and_legitimate_ones_do() {
    require!(Need::Kvm, Need::Netns);
    let (run, frames) = run_with_tap("spoof", None);
    assert_eq!(run.exit_code, Some(0), "{}", run.stderr);
    assert!(
        run.console.contains(" T=0000000b"),
        "all eleven chains consumed: {}",
        run.console
    );
    assert_eq!(
        markers(&frames),
        set(&["TVP-LEGIT-ARP", "TVP-LEGIT-IP"]),
        "only the VM's own MAC and VIP reach the bridge (boot phase: IPv4 and ARP only)"
    );
    let totals = "virtio-net totals";
    let v = |k| log_value(&run.stderr, totals, k).unwrap_or_default();
    assert_eq!(v("dropped_spoofed_source_mac"), "2", "{}", run.stderr);
    assert_eq!(v("dropped_spoofed_source_ip"), "4");
    assert_eq!(v("dropped_ethertype"), "3");
    assert_eq!(v("tx_frames"), "2");
    for reason in [
        "reason=spoofed-source-mac",
        "reason=spoofed-source-ip",
        "reason=ethertype-not-allowed",
    ] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains("transmitted frame dropped") && l.contains(reason)),
            "a drop logged with {reason}"
        );
    }
}

#[test]
fn after_handover_the_workload_keeps_its_mac_and_vip_but_may_use_other_protocols() {
    // IPv6 passes from the VM's own link-local address; a neighbour advertisement for
    // the gateway's address and a router advertisement (the IPv6 neighbour spoofing
    // attack) do not.
    require!(Need::Kvm, Need::Netns);
    let (run, frames) = run_with_tap("spoof_handover", None);
    assert_eq!(run.exit_code, Some(0), "{}", run.stderr);
    assert!(run.console.contains(" T=0000000b"), "{}", run.console);
    assert!(run
        .stderr
        .contains("virtio-net: handover, transmit filter in workload mode"));
    assert_eq!(
        markers(&frames),
        set(&["TVP-LEGIT-ARP", "TVP-LEGIT-IP", "TVP-IPV6", "TVP-ZERO-SRC"])
    );
    let v = |k| log_value(&run.stderr, "virtio-net totals", k).unwrap_or_default();
    assert_eq!(v("dropped_spoofed_source_mac"), "2");
    assert_eq!(v("dropped_spoofed_source_ip"), "3");
    assert_eq!(v("dropped_ethertype"), "0");
    assert_eq!(v("dropped_spoofed_ndp"), "2", "{}", run.stderr);
    assert!(run
        .stderr
        .lines()
        .any(|l| l.contains("transmitted frame dropped")
            && l.contains("reason=spoofed-neighbour-discovery")));
}

/// A broadcast frame for the guest's receive queue (EtherType 0x88b5, local use).
fn inbound_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xfe, 0x88, 0xb5]);
    f.extend_from_slice(&[0x77; 64]);
    f
}

/// The "C p=.. s=.." checksum lines the guest printed.
fn checksums(console: &str) -> Vec<String> {
    console
        .lines()
        .filter(|l| l.starts_with("C "))
        .map(String::from)
        .collect()
}

#[test]
fn rings_and_buffers_on_the_configuration_page_or_the_firmware_are_refused_never_written() {
    require!(Need::Kvm, Need::Netns);
    let (run, _) = run_with_tap("dma_attack", Some(inbound_frame()));
    assert_eq!(run.exit_code, Some(0), "{}", run.stderr);
    let c = checksums(&run.console);
    assert_eq!(c.len(), 2, "{}", run.console);
    assert_eq!(
        c[0], c[1],
        "the configuration page and the firmware image are unchanged"
    );
    let lines: Vec<&str> = run.console.lines().collect();
    // 1: the used ring on the page is not enabled; the device marks itself failed.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(" q=00000000 S=0000004b")),
        "{}",
        run.console
    );
    // 2: moving a live queue's used ring is refused; the device marks itself failed.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(" q=00000001 S=0000004f")),
        "{}",
        run.console
    );
    // 3 and 4: a frame arrived each time, its buffer was refused (chain returned empty).
    let received = lines
        .iter()
        .filter(|l| l.starts_with(" q=00000001 u=00000001"))
        .count();
    assert_eq!(received, 2, "{}", run.console);
    let refused = |what: &str, reason: &str| {
        run.stderr.lines().any(|l| {
            l.contains("virtio-net: refused to write guest memory")
                && l.contains(&format!("what={what}"))
                && l.contains(&format!("reason={reason}"))
        })
    };
    assert!(refused("used-ring", "config-page"), "{}", run.stderr);
    assert!(refused("receive-buffer", "config-page"));
    assert!(refused("receive-buffer", "firmware-image"));
    assert!(run
        .stderr
        .contains("is live: write of 0x10100 to register 0xa0"));
    assert_eq!(
        log_value(&run.stderr, "virtio-net totals", "dma_refused").as_deref(),
        Some("3")
    );
}
