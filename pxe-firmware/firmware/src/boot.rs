//! The boot flow, run at CPL 3 after the stub.

use crate::failure::{fail, Failure};
use crate::mailbox::Mailbox;
use crate::net::Net;
use crate::platform::{milestone, power_off};
use crate::tcp::TcpStream;
use crate::tls::{Tls, TlsError};
use crate::{config, print, println, VERSION};
use core::fmt;
use tvp_abi::config::Config;
use tvp_abi::mailbox::MAILBOX_ABI_VERSION;

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

/// The main flow: configuration, mailbox, then (for now) power off.
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
    match mbox.version() {
        Ok(v) if v == MAILBOX_ABI_VERSION => println!("mailbox: ABI version {v}"),
        Ok(v) => {
            println!("mailbox: unsupported ABI version {v}");
            fail(Failure::MailboxUnavailable)
        }
        Err(e) => {
            println!("mailbox: GET_VERSION failed: {e:?}");
            fail(Failure::MailboxUnavailable)
        }
    }
    milestone(milestone::MAILBOX_READY);

    let heap = crate::heap::init(mem_size);
    let khz = crate::clock::init();
    println!("heap: {} KiB, tsc: {khz} kHz", heap >> 10);
    network_boot(&cfg, &mut mbox);

    println!("tvp-firmware: done, powering off");
    milestone(milestone::DONE);
    power_off()
}

/// Brings up the network, opens TLS to the boot server, measures the tunnel into the
/// mailbox and sends the boot request (`docs/boot-protocol.md`).
fn network_boot(cfg: &Config<'_>, mbox: &mut Mailbox) {
    let dev = match crate::net::open() {
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

    let mut req = alloc::vec::Vec::new();
    req.extend_from_slice(b"TVP-BOOT 1 U=");
    for b in cfg.auth_code {
        let _ = core::fmt::Write::write_fmt(&mut Hex(&mut req), format_args!("{b:02x}"));
    }
    let [a, b, c, d] = cfg.vip;
    let _ = core::fmt::Write::write_fmt(
        &mut Hex(&mut req),
        format_args!(" I={a}.{b}.{c}.{d} FW={VERSION}\n"),
    );
    if let Err(e) = tls.send(&mut net, &req) {
        println!("tls: boot request not sent: {e:?}");
        fail(Failure::TlsFailed)
    }
    let reply = match tls.recv(&mut net) {
        Ok(r) => r,
        Err(e) => {
            println!("tls: no answer to the boot request: {e:?}");
            fail(Failure::TlsFailed)
        }
    };
    let reply = core::str::from_utf8(&reply)
        .unwrap_or("<binary>")
        .trim_end();
    println!("boot server: {reply}");
    if !reply.starts_with("OK") {
        fail(Failure::ReservationRefused)
    }
    match mbox.tunnel_established(&measurement) {
        Ok(()) => println!("mailbox: tunnel measurement accepted"),
        Err(e) => {
            println!("mailbox: tunnel measurement not accepted: {e:?}");
            fail(Failure::TunnelNotMeasured)
        }
    }
    milestone(milestone::TUNNEL_MEASURED);
    tls.close(&mut net);
}

/// `fmt::Write` into a byte vector.
struct Hex<'a>(&'a mut alloc::vec::Vec<u8>);

impl fmt::Write for Hex<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
