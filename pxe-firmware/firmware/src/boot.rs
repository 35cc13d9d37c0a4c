//! The boot flow, run at CPL 3 after the stub.

use crate::failure::{fail, Failure};
use crate::frames::{self, FrameError, FrameReader, Received};
use crate::mailbox::Mailbox;
use crate::measured::MeasuredBoot;
use crate::net::Net;
use crate::platform::milestone;
use crate::tcp::TcpStream;
use crate::tls::{Tls, TlsError};
use crate::{config, print, println, VERSION};
use crate::{elf, linux, workload};
use alloc::vec;
use core::fmt;
use tvp_abi::config::Config;
use tvp_abi::mailbox::MAILBOX_ABI_VERSION;
use tvp_boot_protocol::{BootRequest, MsgType, STATUS_HANDOVER};

/// How long the TCP connection to the boot server may take to establish.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long a read or write on it may wait.
const IO_TIMEOUT_MS: u64 = 10_000;

/// An IPv4 address for display.
struct Ip([u8; 4]);

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// The main flow: configuration, mailbox, network boot, handover (never returns).
pub fn run(mem_size: u64) -> ! {
    milestone(milestone::RUST_ENTERED);
    println!(
        "tvp-firmware {VERSION}: running at CPL 3, {} MiB RAM",
        mem_size >> 20
    );

    let cfg = match config::read() {
        Ok(c) => c,
        Err(e) => {
            println!("tvp-firmware: configuration page rejected: {e}");
            fail(Failure::BadConfig)
        }
    };
    milestone(milestone::CONFIG_READ);
    println!(
        "config: vip={}/{} gateway={} boot-server={}:{} name={} ca-cert={} bytes",
        Ip(cfg.vip),
        cfg.prefix_len,
        Ip(cfg.gateway),
        Ip(cfg.boot_server_ip),
        cfg.boot_server_port,
        cfg.server_name,
        cfg.ca_cert_der.len()
    );

    #[cfg(feature = "selftest")]
    crate::selftest::run(cfg.auth_code);

    let mut mbox = Mailbox::new();
    let platform_khz = match mbox.version() {
        Ok((v, khz)) if v == MAILBOX_ABI_VERSION => {
            println!("mailbox: ABI version {v}");
            khz
        }
        Ok((v, _)) => {
            println!("mailbox: unsupported ABI version {v}");
            fail(Failure::MailboxUnavailable)
        }
        Err(e) => {
            println!("mailbox: GET_VERSION failed: {e:?}");
            fail(Failure::MailboxUnavailable)
        }
    };
    milestone(milestone::MAILBOX_READY);

    let heap = crate::heap::init(mem_size);
    let (khz, source) = crate::clock::init(platform_khz);
    println!("heap: {} KiB, tsc: {khz} kHz ({source})", heap >> 10);
    let tpm = if cfg.tpm.is_some() {
        Some(measure_start(&cfg, &mut mbox))
    } else {
        None
    };
    network_boot(&cfg, &mut mbox, tpm, heap)
}

/// The VM has a TPM of its own: start it and measure the firmware, the ACPI tables,
/// the configuration page and the boot region into it (the digests PCR 23 holds), or
/// fail the boot.
fn measure_start(cfg: &Config<'_>, mbox: &mut Mailbox) -> MeasuredBoot {
    let firmware = match mbox.firmware_digest() {
        Ok(d) => d,
        Err(e) => {
            println!("tvp-firmware: TPM: the platform did not give the firmware's digest: {e:?}");
            fail(Failure::TpmFailed)
        }
    };
    let Ok(acpi) = tvp_abi::measure::acpi_tables_digest(cfg.vcpus, cfg.tpm.is_some()) else {
        println!("tvp-firmware: TPM: no ACPI tables for this configuration");
        fail(Failure::TpmFailed)
    };
    let page = tvp_abi::measure::sha256(config::page());
    let region = tvp_abi::measure::boot_region_digest(cfg.mem_size());
    match MeasuredBoot::start(firmware, acpi, page, region) {
        Ok(m) => {
            print!("tpm: started; measured into PCRs 0 and 1: firmware ");
            for b in firmware {
                print!("{b:02x}");
            }
            println!();
            m
        }
        Err(e) => {
            println!("tvp-firmware: TPM failed at start: {e}");
            fail(Failure::TpmFailed)
        }
    }
}

/// Brings up the network, opens TLS to the boot server, measures the tunnel into the
/// mailbox and sends the boot request (`docs/boot-protocol.md`).
fn network_boot(cfg: &Config<'_>, mbox: &mut Mailbox, tpm: Option<MeasuredBoot>, heap: usize) -> ! {
    let dev = match crate::net::open(heap) {
        Ok(d) => d,
        Err(e) => {
            println!("net: no virtio-net device: {e:?}");
            fail(Failure::NoLink)
        }
    };
    let Some(seed) = crate::entropy::seed64(&cfg.entropy_seed) else {
        println!("entropy: RDRAND unavailable");
        fail(Failure::NoEntropy)
    };
    if !crate::entropy::init(&cfg.entropy_seed) {
        println!("entropy: RDRAND failing");
        fail(Failure::NoEntropy)
    }
    let mut net = Net::up(dev, cfg, seed);
    milestone(milestone::NET_UP);
    println!("net: up, mac={:02x?}", cfg.mac);
    let tcp = match TcpStream::connect(
        &mut net,
        cfg.boot_server_ip,
        cfg.boot_server_port,
        CONNECT_TIMEOUT_MS,
    ) {
        Ok(s) => s,
        Err(e) => {
            println!("tcp: connection to the boot server failed: {e:?}");
            fail(Failure::TcpFailed)
        }
    };
    milestone(milestone::TCP_CONNECTED);
    println!(
        "tcp: connected to {}:{}",
        Ip(cfg.boot_server_ip),
        cfg.boot_server_port
    );
    let t0 = crate::clock::now_ms();
    let mut tls = match Tls::connect(&mut net, tcp, cfg, IO_TIMEOUT_MS) {
        Ok(t) => t,
        Err(TlsError::Certificate(e)) => {
            println!("tls: boot server certificate rejected: {e}");
            fail(Failure::CertificateRejected)
        }
        Err(e) => {
            println!("tls: handshake failed: {e:?}");
            fail(Failure::TlsFailed)
        }
    };
    milestone(milestone::TLS_ESTABLISHED);
    println!(
        "tls: established with {} (TLS 1.3) in {} ms",
        cfg.server_name,
        crate::clock::now_ms().saturating_sub(t0)
    );
    let Ok(measurement) = tls.tunnel_measurement(cfg.auth_code) else {
        println!("tls: exporter unavailable");
        fail(Failure::TlsFailed)
    };
    print!("tunnel measurement: ");
    for b in measurement {
        print!("{b:02x}");
    }
    println!();
    deliver(cfg, mbox, &mut net, &mut tls, &measurement, tpm);
}

/// Fails with `failure` after a protocol step went wrong.
fn step_failed(what: &str, e: &FrameError) -> ! {
    println!("boot protocol: {what}: {e:?}");
    match e {
        FrameError::Protocol(_) | FrameError::UnexpectedWorkload => fail(Failure::ProtocolError),
        FrameError::Tls(_) => fail(Failure::TlsFailed),
    }
}

/// Tells the boot server the delivery failed with `failure`, then fails.
fn fail_told(tls: &mut Tls, net: &mut Net, failure: Failure) -> ! {
    let _ = frames::send(tls, net, MsgType::Status, &(failure as u32).to_le_bytes());
    fail(failure)
}

/// The boot server refused: print its reason and fail with `failure`.
fn refused(reason: &[u8], failure: Failure) -> ! {
    let reason = core::str::from_utf8(reason).unwrap_or("<binary>");
    println!("boot server: REFUSED {reason}");
    fail(failure)
}

/// The boot protocol (`docs/boot-protocol.md`): boot request, attestation relay,
/// signed workload, handover. Never returns.
fn deliver(
    cfg: &Config<'_>,
    mbox: &mut Mailbox,
    net: &mut Net,
    tls: &mut Tls,
    measurement: &[u8; 32],
    mut tpm: Option<MeasuredBoot>,
) -> ! {
    let req = BootRequest {
        auth_code: cfg.auth_code,
        vip: cfg.vip,
        firmware_version: VERSION,
        config_page: config::page(),
    };
    let mut buf = vec![0u8; req.encoded_len()];
    let n = match req.encode(&mut buf) {
        Ok(n) => n,
        Err(e) => {
            println!("boot request cannot be encoded: {e}");
            fail(Failure::BadConfig)
        }
    };
    if let Err(e) = frames::send(tls, net, MsgType::BootRequest, &buf[..n]) {
        step_failed("boot request not sent", &e)
    }
    let mut reader = FrameReader::default();
    let nonce = match reader.next(tls, net) {
        Ok((MsgType::AttestRequest, nonce)) => nonce,
        Ok((MsgType::Refused, reason)) => refused(&reason, Failure::ReservationRefused),
        Ok((t, _)) => {
            println!("boot protocol: unexpected {t:?} instead of the attestation request");
            fail(Failure::ProtocolError)
        }
        Err(e) => step_failed("no answer to the boot request", &e),
    };
    println!("boot server: reservation accepted, attestation requested");
    match mbox.tunnel_established(measurement) {
        Ok(()) => println!("mailbox: tunnel measurement accepted"),
        Err(e) => {
            println!("mailbox: tunnel measurement not accepted: {e:?}");
            fail(Failure::TunnelNotMeasured)
        }
    }
    milestone(milestone::TUNNEL_MEASURED);
    let evidence = match mbox.quote(&nonce) {
        Ok(ev) => ev,
        Err(e) => {
            println!("mailbox: quote request failed: {e:?}");
            fail(Failure::QuoteFailed)
        }
    };
    println!("mailbox: evidence {} bytes", evidence.len());
    if let Err(e) = frames::send(tls, net, MsgType::Evidence, &evidence) {
        step_failed("evidence not sent", &e)
    }
    drop(evidence);
    // Deep evidence: the VM's own TPM quotes what the firmware measured into it, in
    // this session (N) and this tunnel; the boot server checks it with the host's
    // evidence, which names the TPM's AK through the page.
    if let Some(m) = tpm.as_mut() {
        send_vtpm_quote(m, tls, net, &nonce, measurement);
    }
    // The workload window ends where the VM's image (if any) begins; the container is
    // staged at its top, the loaded image goes below it.
    let window_end = cfg.image.map_or(cfg.mem_size(), |i| i.gpa);
    let (container, streamed): (&[u8], _) = match reader.next_staged(
        tls,
        net,
        elf::WORKLOAD_BASE..window_end,
    ) {
        Ok(Received::Workload(w, d)) => (w, d),
        Ok(Received::TooLarge { len, capacity }) => {
            println!(
                "workload: {len} bytes announced, this VM's workload window takes at most {capacity}: refused before the transfer"
            );
            fail_told(tls, net, Failure::WorkloadTooLarge)
        }
        Ok(Received::Frame(MsgType::Refused, reason)) => {
            refused(&reason, Failure::AttestationRejected)
        }
        Ok(Received::Frame(t, _)) => {
            println!("boot protocol: unexpected {t:?} instead of the workload");
            fail(Failure::ProtocolError)
        }
        Err(e) => step_failed("no workload", &e),
    };
    let staged_at = container.as_ptr() as u64;
    // From here on the boot server learns the outcome (a Status frame) before a failure.
    let t_received = crate::clock::now_ms();
    let transfer_ms = t_received.saturating_sub(reader.started_ms());
    let st = net.phy.stats;
    println!(
        "workload: {} bytes received in {transfer_ms} ms ({} KB/s); {} frames in, {} out, {} device polls, {} idle polls",
        container.len(),
        container.len() as u64 / transfer_ms.max(1),
        st.rx_frames,
        st.tx_frames,
        st.kicks,
        st.idle_polls
    );
    print_profile(transfer_ms);
    let now = crate::clock::wall_secs(cfg);
    let payload = match workload::verify(container, cfg.ca_cert_der, now) {
        Ok(p) => p,
        Err(e) => {
            println!("workload: signature rejected: {e:?}");
            fail_told(tls, net, Failure::BadSignature)
        }
    };
    let t_verified = crate::clock::now_ms();
    // The digest taken during the transfer, if it covered exactly the payload the
    // signature check found (it does unless the header was refused, and then the check
    // failed); otherwise a second pass.
    let offset = (payload.as_ptr() as usize).wrapping_sub(container.as_ptr() as usize);
    let digest = match streamed {
        Some(d) if d.range == (offset..offset + payload.len()) => d.sha256,
        _ => tvp_abi::measure::sha256(payload),
    };
    let t_digest = crate::clock::now_ms();
    println!(
        "workload: signature check {} ms, sha256 {} ms after the transfer",
        t_verified.saturating_sub(t_received),
        t_digest.saturating_sub(t_verified)
    );
    print!(
        "workload: signature verified, {} bytes, sha256 ",
        payload.len()
    );
    for b in digest {
        print!("{b:02x}");
    }
    println!();
    let (kind, loaded) = if tvp_boot_protocol::linux::is_bundle(payload) {
        let r = linux::load(payload, staged_at, window_end, cfg.mem_size(), cfg.tpm.is_some()).map_err(|e| {
            println!("workload: Linux bundle not loadable below the staged container at {staged_at:#x}: {e:?}");
        });
        ("Linux kernel", r)
    } else {
        let r = elf::load(payload, staged_at)
            .map(|entry| (entry, 0))
            .map_err(|e| {
                println!("workload: not loadable: {e:?}");
            });
        ("workload", r)
    };
    let Ok((entry, arg)) = loaded else {
        fail_told(tls, net, Failure::BadWorkload)
    };
    println!(
        "workload: loaded in {} ms",
        crate::clock::now_ms().saturating_sub(t_digest)
    );
    // The VM's own TPM: the workload into PCR 4, the separators, the platform
    // hierarchy off; the last TPM commands before the handover.
    if let Some(m) = tpm {
        match m.finish(digest) {
            Ok(len) => println!(
                "tpm: measured the workload into PCR 4 and separators into PCRs 0-7, platform hierarchy disabled; event log {len} bytes at {:#x}",
                tvp_abi::layout::TPM_EVENT_LOG_GPA
            ),
            Err(e) => {
                println!("tvp-firmware: TPM failed before the handover: {e}");
                fail_told(tls, net, Failure::TpmFailed)
            }
        }
    }
    if let Err(e) = mbox.handover(&digest) {
        println!("mailbox: handover refused: {e:?}");
        fail_told(tls, net, Failure::HandoverRefused)
    }
    // Not waiting for the acknowledgement: from the handover on tvp-vmm delivers no
    // received frame (the receive buffers become the workload's memory), and waiting
    // would cost the firmware's whole I/O timeout before every workload.
    let _ = frames::send_last(tls, net, MsgType::Status, &STATUS_HANDOVER.to_le_bytes());
    milestone(milestone::DONE);
    println!("tvp-firmware: handing over to the {kind} at {entry:#x}");
    crate::stub::handover(entry, arg)
}

/// Quotes PCRs 0 and 1 of the VM's TPM over `qualifying_data(N, tunnel measurement)`
/// with tvp's AK and sends the VtpmQuote frame; any TPM failure fails the boot
/// (`tpm-failed`, the boot server told through a Status frame).
fn send_vtpm_quote(
    m: &mut MeasuredBoot,
    tls: &mut Tls,
    net: &mut Net,
    nonce: &[u8],
    measurement: &[u8; 32],
) {
    let Ok(nonce) = <&[u8; tvp_boot_protocol::NONCE_LEN]>::try_from(nonce) else {
        println!(
            "boot protocol: the attestation nonce is {} bytes, not {}",
            nonce.len(),
            tvp_boot_protocol::NONCE_LEN
        );
        fail(Failure::ProtocolError)
    };
    let t0 = crate::clock::now_ms();
    let qualifying = tvp_boot_protocol::vtpm::qualifying_data(nonce, measurement);
    let mut payload = [0u8; tvp_boot_protocol::vtpm::VTPM_QUOTE_MAX];
    let n = match m.quote(&qualifying, &mut payload) {
        Ok(n) => n,
        Err(e) => {
            println!("tvp-firmware: TPM failed to quote PCRs 0 and 1 with the AK: {e}");
            fail_told(tls, net, Failure::TpmFailed)
        }
    };
    if let Err(e) = frames::send(tls, net, MsgType::VtpmQuote, &payload[..n]) {
        step_failed("vTPM quote not sent", &e)
    }
    println!(
        "tpm: quoted PCRs 0 and 1 with the AK for this session: {n} bytes sent, {} ms",
        crate::clock::now_ms().saturating_sub(t0)
    );
}

/// Prints where the transfer's time went (TSC cycles per phase, [`crate::profile`]).
fn print_profile(transfer_ms: u64) {
    use crate::profile::{snapshot, Phase};
    let khz = crate::clock::khz().max(1);
    let p = snapshot();
    let ms = |ph: Phase| p[ph as usize].0 / khz;
    let n = |ph: Phase| p[ph as usize].1;
    println!(
        "workload: transfer {transfer_ms} ms: network stack {} ms in {} polls (ring {} ms for {} frames, device polls {} ms in {}, sends {} ms in {}), idle waits {} ms in {}, TLS records {} ms in {} calls, payload SHA-256 {} ms",
        ms(Phase::Poll),
        n(Phase::Poll),
        ms(Phase::Ring),
        n(Phase::Ring),
        ms(Phase::Kick),
        n(Phase::Kick),
        ms(Phase::Send),
        n(Phase::Send),
        ms(Phase::Idle),
        n(Phase::Idle),
        ms(Phase::Tls),
        n(Phase::Tls),
        ms(Phase::Digest)
    );
}
