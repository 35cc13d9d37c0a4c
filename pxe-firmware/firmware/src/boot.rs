//! The boot flow, run at CPL 3 after the stub.

use crate::failure::{fail, Failure};
use crate::mailbox::Mailbox;
use crate::platform::{milestone, power_off};
use crate::{config, println, VERSION};
use core::fmt;
use tvp_abi::mailbox::MAILBOX_ABI_VERSION;

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

    println!("tvp-firmware: done, powering off");
    milestone(milestone::DONE);
    power_off()
}
