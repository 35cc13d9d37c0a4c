//! Reservations: which VIP I may boot with which authentication code U. Each is used
//! at most once (one tunnel per reservation).
//!
//! File format: one reservation per line, `I U` (IPv4 address, then U as text without
//! spaces); empty lines and lines starting with `#` are ignored.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Why a reservation file or a boot request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    /// A line of the file is malformed.
    #[error("reservations line {0}: expected \"<IPv4> <auth code>\"")]
    BadLine(usize),
    /// The same U appears twice.
    #[error("reservations line {0}: duplicate auth code")]
    Duplicate(usize),
    /// No reservation has this U.
    #[error("unknown auth code")]
    UnknownCode,
    /// The reservation is for another VIP.
    #[error("auth code reserved for another address")]
    WrongAddress,
    /// The reservation was already used.
    #[error("auth code already used")]
    Reused,
}

impl ReservationError {
    /// Stable short name for reports and reply lines.
    pub fn code(&self) -> &'static str {
        match self {
            ReservationError::BadLine(_) | ReservationError::Duplicate(_) => "bad-reservations",
            ReservationError::UnknownCode => "unknown-auth-code",
            ReservationError::WrongAddress => "wrong-address",
            ReservationError::Reused => "reused-auth-code",
        }
    }
}

/// The reservations, by U.
#[derive(Debug, Default)]
pub struct Reservations {
    by_code: HashMap<Vec<u8>, (Ipv4Addr, bool)>,
}

impl Reservations {
    /// Parses a reservations file.
    pub fn parse(text: &str) -> Result<Self, ReservationError> {
        let mut r = Reservations::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split_whitespace();
            let (Some(ip), Some(code), None) = (f.next(), f.next(), f.next()) else {
                return Err(ReservationError::BadLine(i + 1));
            };
            let ip: Ipv4Addr = ip.parse().map_err(|_| ReservationError::BadLine(i + 1))?;
            if r.by_code
                .insert(code.as_bytes().to_vec(), (ip, false))
                .is_some()
            {
                return Err(ReservationError::Duplicate(i + 1));
            }
        }
        Ok(r)
    }

    /// Claims the reservation for (`code`, `vip`): succeeds once.
    pub fn claim(&mut self, code: &[u8], vip: Ipv4Addr) -> Result<(), ReservationError> {
        let (ip, used) = self
            .by_code
            .get_mut(code)
            .ok_or(ReservationError::UnknownCode)?;
        if *ip != vip {
            return Err(ReservationError::WrongAddress);
        }
        if *used {
            return Err(ReservationError::Reused);
        }
        *used = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_and_address_bound() {
        let mut r = Reservations::parse("# tenant\n10.0.0.2 U-1\n\n10.0.0.3 U-2\n").unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            r.claim(b"U-9", ip("10.0.0.2")),
            Err(ReservationError::UnknownCode)
        );
        assert_eq!(
            r.claim(b"U-1", ip("10.0.0.3")),
            Err(ReservationError::WrongAddress)
        );
        assert_eq!(r.claim(b"U-1", ip("10.0.0.2")), Ok(()));
        assert_eq!(
            r.claim(b"U-1", ip("10.0.0.2")),
            Err(ReservationError::Reused)
        );
        assert_eq!(r.claim(b"U-2", ip("10.0.0.3")), Ok(()));
    }

    #[test]
    fn rejects_bad_files() {
        assert_eq!(
            Reservations::parse("10.0.0.2").unwrap_err(),
            ReservationError::BadLine(1)
        );
        assert_eq!(
            Reservations::parse("x U").unwrap_err(),
            ReservationError::BadLine(1)
        );
        assert_eq!(
            Reservations::parse("10.0.0.2 U\n10.0.0.3 U").unwrap_err(),
            ReservationError::Duplicate(2)
        );
    }
}
