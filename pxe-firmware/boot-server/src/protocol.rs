//! The boot protocol inside the TLS tunnel, version 1 (`docs/boot-protocol.md`).
//!
//! Firmware → server, one line: `TVP-BOOT 1 U=<hex of U> I=<a.b.c.d> FW=<version>\n`.
//! Server → firmware, one line: `OK <text>\n` or `REFUSED <reason-code>\n`.

use std::net::Ipv4Addr;

/// Longest request line accepted.
pub const REQUEST_MAX: usize = 512;

/// A parsed boot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRequest {
    /// Authentication code U.
    pub auth_code: Vec<u8>,
    /// The VM's address I.
    pub vip: Ipv4Addr,
    /// Firmware version.
    pub firmware: String,
}

/// Parses one request line (without or with the trailing newline).
pub fn parse_request(line: &str) -> Option<BootRequest> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line.len() > REQUEST_MAX {
        return None;
    }
    let mut f = line.split(' ');
    if f.next()? != "TVP-BOOT" || f.next()? != "1" {
        return None;
    }
    let auth_code = hex::decode(f.next()?.strip_prefix("U=")?).ok()?;
    let vip = f.next()?.strip_prefix("I=")?.parse().ok()?;
    let firmware = f.next()?.strip_prefix("FW=")?.to_string();
    if f.next().is_some() || auth_code.is_empty() || auth_code.len() > 64 {
        return None;
    }
    Some(BootRequest {
        auth_code,
        vip,
        firmware,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_firmware_request() {
        let r = parse_request("TVP-BOOT 1 U=552d31 I=10.0.0.2 FW=0.1.0\n").unwrap();
        assert_eq!(r.auth_code, b"U-1");
        assert_eq!(r.vip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(r.firmware, "0.1.0");
        for bad in [
            "TVP-BOOT 2 U=55 I=10.0.0.2 FW=1",
            "TVP-BOOT 1 U=zz I=10.0.0.2 FW=1",
            "TVP-BOOT 1 U= I=10.0.0.2 FW=1",
            "TVP-BOOT 1 U=55 I=10.0.0 FW=1",
            "TVP-BOOT 1 U=55 I=10.0.0.2 FW=1 extra",
        ] {
            assert_eq!(parse_request(bad), None, "{bad}");
        }
    }
}
