//! `tvp-test-vmm`: stands in for `tvp-vmm` in tvpd's lifecycle tests.
//!
//! For VM ids starting with `hostile`, it plays a compromised VMM: it reports correct
//! measurements, then asks for a quote and a tunnel extension *before* tvpd started
//! it (while another VM holds the PCR lease), then, once started, does the proper
//! tunnel → quote → handover. Every message it receives from tvpd is appended as a
//! JSON line to the `--console-log` file. Any other VM id: it executes the real
//! `tvp-vmm` next to it with the same arguments.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use tvp_vmm_channel::{read_frame, write_frame, ExitReason, HostMessage, VmmMessage};

fn arg(args: &[String], name: &str) -> String {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("missing {name}"));
    args[i + 1].clone()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let vm_id = arg(&args, "--vm-id");
    if !vm_id.starts_with("hostile") {
        let real = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .join("tvp-vmm");
        let e = std::process::Command::new(real).args(&args).exec();
        panic!("cannot exec tvp-vmm: {e}");
    }
    let fd: i32 = arg(&args, "--channel-fd").parse().unwrap();
    // SAFETY (test code): tvpd passed us this descriptor as our channel end.
    let mut s = unsafe { UnixStream::from_raw_fd(fd) };
    let fw = std::fs::read(arg(&args, "--firmware")).unwrap();
    let page = std::fs::read(arg(&args, "--config-page")).unwrap();
    let log_path = PathBuf::from(arg(&args, "--console-log"));
    let mut log = std::fs::File::create(&log_path).unwrap();

    let events = tvp_abi::measure::expected_events(&fw, &page).unwrap();
    let send = |s: &mut UnixStream, m: VmmMessage| write_frame(s, &m).unwrap();
    send(
        &mut s,
        VmmMessage::Hello {
            protocol_version: tvp_vmm_channel::PROTOCOL_VERSION,
            vm_id: vm_id.clone(),
            pid: std::process::id(),
        },
    );
    for (i, e) in events.iter().enumerate() {
        send(
            &mut s,
            VmmMessage::Measurement {
                index: i as u32,
                event_type: e.event_type.name().into(),
                digest: e.digest,
                description: "test".into(),
            },
        );
    }
    let pcr23 = tvp_abi::measure::replay(events.iter().map(|e| &e.digest));
    send(
        &mut s,
        VmmMessage::MeasurementsDone {
            count: events.len() as u32,
            pcr23,
        },
    );
    // The attack: mailbox requests before tvpd granted the lease and sent `start`.
    send(
        &mut s,
        VmmMessage::QuoteRequest {
            request_id: 1,
            nonce: vec![0x22; 16],
        },
    );
    send(
        &mut s,
        VmmMessage::TunnelEstablished {
            request_id: 2,
            measurement: [0x99; 32],
        },
    );
    let mut started = false;
    let mut answered = 0;
    while !(started && answered >= 2) {
        let m: HostMessage = read_frame(&mut s).unwrap();
        writeln!(log, "{}", serde_json::to_string(&m).unwrap()).unwrap();
        match m {
            HostMessage::Start => started = true,
            HostMessage::Stop | HostMessage::Abort { .. } => return,
            _ => answered += 1,
        }
    }
    // Now legitimately, under the lease.
    let requests = [
        VmmMessage::TunnelEstablished {
            request_id: 3,
            measurement: [0x99; 32],
        },
        VmmMessage::QuoteRequest {
            request_id: 4,
            nonce: vec![0x33; 16],
        },
        VmmMessage::Handover {
            request_id: 5,
            digest: [0xcd; 32],
        },
    ];
    for r in requests {
        send(&mut s, r);
        let m: HostMessage = read_frame(&mut s).unwrap();
        writeln!(log, "{}", serde_json::to_string(&m).unwrap()).unwrap();
    }
    send(
        &mut s,
        VmmMessage::Exited {
            reason: ExitReason::PoweredOff,
            exit_code: 0,
            detail: String::new(),
        },
    );
}
