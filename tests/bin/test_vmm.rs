//! `tvp-test-vmm`: stands in for `tvp-vmm` in tvpd's lifecycle tests.
//!
//! For VM ids starting with `hostile`, it plays a compromised VMM, the script chosen by
//! the id (see [`Script`]). Each script first says what an honest VMM says (hello,
//! correct measurements, measurements-done) and then attacks. Every message it
//! receives from tvpd is appended as a JSON line to the `--console-log` file. Any other
//! VM id: it executes the real `tvp-vmm` next to it with the same arguments.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tvp_vmm_channel::{read_frame, write_frame, ExitReason, HostMessage, VmmMessage};

/// How long a script that "keeps running" lives at most (so that a failed test leaves
/// nothing behind for long).
const LINGER: Duration = Duration::from_secs(120);
/// Quotes per VM of [`Script::Interleave`].
const QUOTES: usize = 8;

/// The attack, by VM id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// `hostile` (any id not below): a quote and a tunnel measurement before its
    /// measurements are done (before tvpd can have started it), then, if it is still
    /// there once started, the proper tunnel → quote → handover.
    EarlyRequests,
    /// `hostile-remeasure*`: a full honest boot up to the handover; then, once the
    /// file `go` appears in its VM directory, a second measurements-done.
    Remeasure,
    /// `hostile-quote*`: once started, a quote request without a tunnel measurement
    /// (it would take the PCR lease with nothing for PCR 16).
    QuoteWithoutTunnel,
    /// `hostile-tunnel*`: once started, two tunnel measurements (the second would
    /// put another tunnel into its quotes' PCR 16).
    SecondTunnel,
    /// `hostile-interleave*`: honest, but many quotes: once started, its tunnel
    /// measurement (SHA-256 of its VM id), then, once the file `go` appears in its VM
    /// directory, [`QUOTES`] quote requests (nonce: the first 16 bytes of SHA-256 of
    /// `<vm id>-<i>`), each evidence written to `evidence-<i>.json` there; then the
    /// handover and a power-off.
    Interleave,
    /// `hostile-attest*`: honest, and stays: once started, its tunnel measurement
    /// (SHA-256 of its VM id); then, once the file `nonce` (hex) appears in its VM
    /// directory, one quote with that nonce, the evidence written to `evidence.json`
    /// there; then it waits for tvpd's `stop` (a VM that attested and keeps running its
    /// firmware, for tests that need a VM's genuine evidence).
    Attest,
    /// `hostile-bootfail*`: started, reports boot-failed, then keeps
    /// running, ignoring tvpd's stop.
    BootFailedAndLinger,
    /// `hostile-afterexit*`: started, reports its exit, then goes on
    /// talking: a quote, a tunnel measurement, measurements-done, a hello.
    TalkAfterExit,
}

impl Script {
    fn of(vm_id: &str) -> Script {
        let by_prefix = [
            ("hostile-remeasure", Script::Remeasure),
            ("hostile-quote", Script::QuoteWithoutTunnel),
            ("hostile-tunnel", Script::SecondTunnel),
            ("hostile-interleave", Script::Interleave),
            ("hostile-attest", Script::Attest),
            ("hostile-bootfail", Script::BootFailedAndLinger),
            ("hostile-afterexit", Script::TalkAfterExit),
        ];
        by_prefix
            .iter()
            .find(|(p, _)| vm_id.starts_with(p))
            .map_or(Script::EarlyRequests, |(_, s)| *s)
    }
}

fn arg(args: &[String], name: &str) -> String {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("missing {name}"));
    args[i + 1].clone()
}

/// The channel to tvpd and the log of what tvpd said.
struct Vmm {
    s: UnixStream,
    log: std::fs::File,
}

impl Vmm {
    fn send(&mut self, m: VmmMessage) {
        // A refused message may have got the VMM killed or its channel closed: a
        // failed write is what an attacker would shrug off too.
        let _ = write_frame(&mut self.s, &m);
    }

    /// tvpd's next message (logged), or `None` once the channel is closed. The
    /// adoption secret every VMM gets first is not an answer: skipped, not logged.
    fn recv(&mut self) -> Option<HostMessage> {
        let mut m: HostMessage = read_frame(&mut self.s).ok()?;
        while matches!(m, HostMessage::AdoptionSecret { .. }) {
            m = read_frame(&mut self.s).ok()?;
        }
        writeln!(self.log, "{}", serde_json::to_string(&m).unwrap()).unwrap();
        Some(m)
    }

    /// Wait for `start`; false on `stop`, `abort` or a closed channel.
    fn wait_start(&mut self) -> bool {
        loop {
            match self.recv() {
                Some(HostMessage::Start) => return true,
                Some(HostMessage::Stop | HostMessage::Abort { .. }) | None => return false,
                Some(_) => {}
            }
        }
    }

    /// Mailbox requests, each followed by tvpd's answer.
    fn requests(&mut self, requests: Vec<VmmMessage>) {
        for r in requests {
            self.send(r);
            if self.recv().is_none() {
                return;
            }
        }
    }

    /// Keep running whatever tvpd says (a stop is ignored), for at most [`LINGER`].
    fn linger(&mut self) {
        let until = Instant::now() + LINGER;
        while self.recv().is_some() && Instant::now() < until {}
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn tunnel(request_id: u64) -> VmmMessage {
    VmmMessage::TunnelEstablished {
        request_id,
        measurement: [0x99; 32],
    }
}

fn quote(request_id: u64) -> VmmMessage {
    VmmMessage::QuoteRequest {
        request_id,
        nonce: vec![0x33; 16],
    }
}

fn handover(request_id: u64) -> VmmMessage {
    VmmMessage::Handover {
        request_id,
        digest: [0xcd; 32],
    }
}

fn wait_for_file(path: &Path) {
    let until = Instant::now() + LINGER;
    while !path.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let s = unsafe { UnixStream::from_raw_fd(fd) };
    let fw = std::fs::read(arg(&args, "--firmware")).unwrap();
    let page = std::fs::read(arg(&args, "--config-page")).unwrap();
    let log_path = PathBuf::from(arg(&args, "--console-log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut vmm = Vmm { s, log };

    // What an honest VMM says first.
    let events = tvp_abi::measure::expected_events(&fw, &page).unwrap();
    vmm.send(VmmMessage::Hello {
        protocol_version: tvp_vmm_channel::PROTOCOL_VERSION,
        vm_id: vm_id.clone(),
        pid: std::process::id(),
    });
    for (i, e) in events.iter().enumerate() {
        vmm.send(VmmMessage::Measurement {
            index: i as u32,
            event_type: e.event_type.name().into(),
            digest: e.digest,
            description: "test".into(),
        });
    }
    let pcr23 = tvp_abi::measure::replay(events.iter().map(|e| &e.digest));
    let done = VmmMessage::MeasurementsDone {
        count: events.len() as u32,
        pcr23,
    };
    let script = Script::of(&vm_id);
    if script == Script::EarlyRequests {
        // The attack: mailbox requests before tvpd can have sent `start`.
        vmm.send(VmmMessage::QuoteRequest {
            request_id: 1,
            nonce: vec![0x22; 16],
        });
        vmm.send(tunnel(2));
    }
    vmm.send(done.clone());

    match script {
        Script::EarlyRequests => early_requests(&mut vmm),
        Script::Remeasure => {
            if !vmm.wait_start() {
                return;
            }
            vmm.requests(vec![tunnel(1), quote(2), handover(3)]);
            wait_for_file(&log_path.with_file_name("go"));
            vmm.send(done);
            vmm.linger();
        }
        Script::QuoteWithoutTunnel => {
            if !vmm.wait_start() {
                return;
            }
            vmm.send(quote(1));
            vmm.linger();
        }
        Script::SecondTunnel => {
            if !vmm.wait_start() {
                return;
            }
            vmm.requests(vec![tunnel(1)]);
            vmm.send(VmmMessage::TunnelEstablished {
                request_id: 2,
                measurement: [0x77; 32],
            });
            vmm.linger();
        }
        Script::Attest => {
            if !vmm.wait_start() {
                return;
            }
            let dir = log_path.parent().unwrap().to_path_buf();
            attest(&mut vmm, &vm_id, &dir);
        }
        Script::Interleave => {
            if !vmm.wait_start() {
                return;
            }
            let dir = log_path.parent().unwrap().to_path_buf();
            interleave(&mut vmm, &vm_id, &dir);
        }
        Script::BootFailedAndLinger => {
            if !vmm.wait_start() {
                return;
            }
            vmm.requests(vec![VmmMessage::BootFailed {
                request_id: 1,
                reason: 7,
            }]);
            vmm.linger();
        }
        Script::TalkAfterExit => {
            if !vmm.wait_start() {
                return;
            }
            vmm.send(VmmMessage::Exited {
                reason: ExitReason::Halted,
                exit_code: 0,
                detail: "halted".into(),
            });
            for m in [
                quote(1),
                tunnel(2),
                done,
                VmmMessage::Hello {
                    protocol_version: tvp_vmm_channel::PROTOCOL_VERSION,
                    vm_id,
                    pid: std::process::id(),
                },
            ] {
                vmm.send(m);
            }
            vmm.linger();
        }
    }
}

/// [`Script::Attest`], once started.
fn attest(vmm: &mut Vmm, vm_id: &str, dir: &Path) {
    let measurement = tvp_abi::measure::sha256(vm_id.as_bytes());
    vmm.requests(vec![VmmMessage::TunnelEstablished {
        request_id: 1,
        measurement,
    }]);
    let nonce_file = dir.join("nonce");
    wait_for_file(&nonce_file);
    let nonce = hex::decode(std::fs::read_to_string(&nonce_file).unwrap().trim()).unwrap();
    vmm.send(VmmMessage::QuoteRequest {
        request_id: 2,
        nonce,
    });
    if let Some(HostMessage::Evidence { evidence, .. }) = vmm.recv() {
        std::fs::write(dir.join("evidence.json"), evidence).unwrap();
    }
    while !matches!(vmm.recv(), Some(HostMessage::Stop) | None) {}
}

/// [`Script::Interleave`], once started.
fn interleave(vmm: &mut Vmm, vm_id: &str, dir: &Path) {
    let measurement = tvp_abi::measure::sha256(vm_id.as_bytes());
    vmm.requests(vec![VmmMessage::TunnelEstablished {
        request_id: 1,
        measurement,
    }]);
    wait_for_file(&dir.join("go"));
    for i in 0..QUOTES {
        let nonce = tvp_abi::measure::sha256(format!("{vm_id}-{i}").as_bytes())[..16].to_vec();
        vmm.send(VmmMessage::QuoteRequest {
            request_id: 2 + i as u64,
            nonce,
        });
        match vmm.recv() {
            Some(HostMessage::Evidence { evidence, .. }) => {
                std::fs::write(dir.join(format!("evidence-{i}.json")), evidence).unwrap();
            }
            Some(_) | None => return,
        }
    }
    vmm.requests(vec![handover(100)]);
    vmm.send(VmmMessage::Exited {
        reason: ExitReason::PoweredOff,
        exit_code: 0,
        detail: String::new(),
    });
}

/// [`Script::EarlyRequests`], after its early requests.
fn early_requests(vmm: &mut Vmm) {
    let mut started = false;
    let mut answered = 0;
    while !(started && answered >= 2) {
        match vmm.recv() {
            Some(HostMessage::Start) => started = true,
            Some(HostMessage::Stop | HostMessage::Abort { .. }) | None => return,
            Some(_) => answered += 1,
        }
    }
    // Now legitimately.
    vmm.requests(vec![tunnel(3), quote(4), handover(5)]);
    vmm.send(VmmMessage::Exited {
        reason: ExitReason::PoweredOff,
        exit_code: 0,
        detail: String::new(),
    });
}
