//! The boot flow, run at CPL 3 after the stub.

use crate::failure::{fail, Failure};
use crate::mailbox::Mailbox;
use crate::net::Net;
use crate::platform::{milestone, power_off};
use crate::tcp::TcpStream;
use crate::{config, println, VERSION};
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
    network_hello(&cfg);

    println!("tvp-firmware: done, powering off");
    milestone(milestone::DONE);
    power_off()
}

/// Brings up the network and exchanges one line with the boot server over plain TCP
/// (the TLS boot protocol replaces this exchange).
fn network_hello(cfg: &Config<'_>) {
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
    let mut net = Net::up(dev, cfg, seed);
    milestone(milestone::NET_UP);
    println!("net: up, mac={:02x?}", cfg.mac);
    let mut s = match TcpStream::connect(
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
    let mut hello = alloc::vec::Vec::new();
    hello.extend_from_slice(b"tvp-firmware ");
    hello.extend_from_slice(VERSION.as_bytes());
    hello.extend_from_slice(b" hello\n");
    if let Err(e) = s
        .write_all(&mut net, &hello, IO_TIMEOUT_MS)
        .and_then(|()| s.flush(&mut net, IO_TIMEOUT_MS))
    {
        println!("tcp: send failed: {e:?}");
        fail(Failure::TcpFailed)
    }
    let mut buf = [0u8; 256];
    match s.read(&mut net, &mut buf, IO_TIMEOUT_MS) {
        Ok(n) => {
            let line = core::str::from_utf8(&buf[..n]).unwrap_or("<binary>");
            println!("tcp: received {n} bytes: {}", line.trim_end());
        }
        Err(e) => {
            println!("tcp: receive failed: {e:?}");
            fail(Failure::TcpFailed)
        }
    }
    s.close(&mut net);
}
