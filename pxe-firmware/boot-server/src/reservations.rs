//! Reservations: which VIP I may boot with which authentication code U, and what the
//! tenant expects of that VM's configuration ([`Expectations`]). A reservation is
//! *spent only by a delivery*: a session claims it (marks it in use, so one session
//! per U at a time), and at the session's end it is either spent (the workload was
//! sent) or released with one more failed attempt counted; after
//! [`Reservations::max_failures`] failed attempts it is refused for good. With a
//! [`Ledger`] (the server binary always has one), both are on disk first: a spend is
//! written before the workload goes out and a failure once counted, and a restarted
//! server starts from them ([`Reservations::with_ledger`]).
//!
//! File format (`docs/boot-server.md`): one reservation per line,
//!
//! ```text
//! <IPv4> <U> memory=<MiB>|any vcpus=<n>|any image=<sha256 hex>|none|any disk=<sha256 hex>|none|any management=tenant|any [tpm=yes|no|any]
//! ```
//!
//! `tpm=` (whether the VM has a TPM of its own, page flag bit 2) is optional and means
//! `no` when absent: a VM the host gave a TPM the tenant did not reserve is refused.
//!
//! every expectation stated (so "not checked" is a visible `any`), each once, in any
//! order; empty lines and lines starting with `#` are ignored. A line with only
//! `<IPv4> <U>` (the format before expectations) is refused with a message naming the
//! missing fields.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use crate::ledger::{code_digest, Entry, Event, Ledger, LedgerError};

/// Failed attempts a reservation tolerates by default before it is refused for good.
pub const DEFAULT_MAX_FAILURES: u32 = 5;

/// The expectation keys a reservation line must state, in documentation order.
pub const FIELDS: [&str; 5] = ["memory", "vcpus", "image", "disk", "management"];

/// Why a reservation file or a boot request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    /// A line of the file is malformed.
    #[error("reservations line {line}: {why} (expected \"<IPv4> <U> memory=<MiB>|any vcpus=<n>|any image=<sha256>|none|any disk=<sha256>|none|any management=tenant|any\", docs/boot-server.md)")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The same U appears twice.
    #[error("reservations line {0}: duplicate auth code")]
    Duplicate(usize),
    /// No reservation has this U.
    #[error("unknown auth code")]
    UnknownCode,
    /// The reservation is for another VIP.
    #[error("auth code reserved for another address")]
    WrongAddress,
    /// The reservation was spent by a delivery.
    #[error("auth code already used: its workload was delivered")]
    Reused,
    /// Another session holds the reservation right now.
    #[error("another session is using this auth code; retry when it ends")]
    Busy,
    /// Too many failed attempts: the reservation is refused for good.
    #[error("auth code refused after {failures} failed attempts (at most {max})")]
    TooManyFailures {
        /// Failed attempts counted.
        failures: u32,
        /// The bound.
        max: u32,
    },
}

impl ReservationError {
    /// Stable short name for reports and reply lines.
    pub fn code(&self) -> &'static str {
        match self {
            ReservationError::BadLine { .. } | ReservationError::Duplicate(_) => "bad-reservations",
            ReservationError::UnknownCode => "unknown-auth-code",
            ReservationError::WrongAddress => "wrong-address",
            ReservationError::Reused => "reused-auth-code",
            ReservationError::Busy => "reservation-busy",
            ReservationError::TooManyFailures { .. } => "too-many-failures",
        }
    }
}

/// One expectation: a value the page must hold, or `any` (deliberately not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<T> {
    /// Not checked (the reservation says `any`).
    Any,
    /// Must equal this.
    Is(T),
}

impl<T: PartialEq> Expect<T> {
    /// Whether `found` satisfies this expectation.
    pub fn admits(&self, found: &T) -> bool {
        match self {
            Expect::Any => true,
            Expect::Is(v) => v == found,
        }
    }
}

/// Which management binding (key and policy, measured into PCR 23) the VM must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagementExpect {
    /// The tenant's: the `--management-key` and `--policy` the server was given.
    Tenant,
    /// Any binding (its digest is taken from the verified event log).
    Any,
}

/// What the tenant expects of a reserved VM: its configuration page fields beyond
/// U, I, CA and server name (which every reservation checks) and its management binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectations {
    /// Guest memory, MiB (page field `memory`).
    pub memory_mib: Expect<u32>,
    /// vCPUs (page field `vcpus`).
    pub vcpus: Expect<u16>,
    /// The workload image: `Is(None)` = no image, `Is(Some(d))` = an image whose
    /// plaintext SHA-256 is `d` (page image descriptor).
    pub image: Expect<Option<[u8; 32]>>,
    /// The encrypted disk: `Is(None)` = no disk, `Is(Some(d))` = a disk whose header
    /// SHA-256 is `d` (page disk descriptor; `tvpctl image inspect` prints it).
    pub disk: Expect<Option<[u8; 32]>>,
    /// The management key and policy.
    pub management: ManagementExpect,
    /// Whether the VM has a TPM of its own (page flag bit 2); `tpm=`, default `no`.
    pub tpm: Expect<bool>,
}

impl fmt::Display for Expectations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn one<T>(v: &Expect<T>, show: impl Fn(&T) -> String) -> String {
            match v {
                Expect::Any => "any".into(),
                Expect::Is(x) => show(x),
            }
        }
        write!(
            f,
            "memory={} vcpus={} image={} disk={} management={} tpm={}",
            one(&self.memory_mib, |m| m.to_string()),
            one(&self.vcpus, |n| n.to_string()),
            one(&self.image, |i| i.map_or("none".into(), hex::encode)),
            one(&self.disk, |d| d.map_or("none".into(), hex::encode)),
            match self.management {
                ManagementExpect::Tenant => "tenant",
                ManagementExpect::Any => "any",
            },
            one(&self.tpm, |t| if *t { "yes" } else { "no" }.into()),
        )
    }
}

/// `<sha256 hex>`, `none` or `any` (of `image=` and `disk=`).
fn digest_expect(value: &str) -> Option<Expect<Option<[u8; 32]>>> {
    match value {
        "any" => Some(Expect::Any),
        "none" => Some(Expect::Is(None)),
        hex_digest => hex::decode(hex_digest)
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .map(|d| Expect::Is(Some(d))),
    }
}

fn parse_expectations(fields: &[&str]) -> Result<Expectations, String> {
    let mut memory = None;
    let mut vcpus = None;
    let mut image = None;
    let mut disk = None;
    let mut management = None;
    let mut tpm = None;
    for f in fields {
        let Some((key, value)) = f.split_once('=') else {
            return Err(format!("\"{f}\" is not key=value"));
        };
        let bad = |what: &str| format!("{key}={value}: expected {what} or any");
        let any = value == "any";
        let seen = match key {
            "memory" => memory
                .replace(if any {
                    Expect::Any
                } else {
                    Expect::Is(value.parse::<u32>().map_err(|_| bad("a size in MiB"))?)
                })
                .is_some(),
            "vcpus" => vcpus
                .replace(if any {
                    Expect::Any
                } else {
                    Expect::Is(value.parse::<u16>().map_err(|_| bad("a count"))?)
                })
                .is_some(),
            "image" => image
                .replace(digest_expect(value).ok_or_else(|| bad("a SHA-256 in hex, none,"))?)
                .is_some(),
            "disk" => disk
                .replace(
                    digest_expect(value)
                        .ok_or_else(|| bad("the disk's header SHA-256 in hex, none,"))?,
                )
                .is_some(),
            "management" => management
                .replace(match value {
                    "tenant" => ManagementExpect::Tenant,
                    "any" => ManagementExpect::Any,
                    _ => return Err(bad("tenant")),
                })
                .is_some(),
            "tpm" => tpm
                .replace(match value {
                    "yes" => Expect::Is(true),
                    "no" => Expect::Is(false),
                    "any" => Expect::Any,
                    _ => return Err(bad("yes, no")),
                })
                .is_some(),
            _ => {
                return Err(format!(
                    "unknown field \"{key}\" (fields: {}; optional: tpm)",
                    FIELDS.join(", ")
                ))
            }
        };
        if seen {
            return Err(format!("{key} is given twice"));
        }
    }
    match (memory, vcpus, image, disk, management) {
        (Some(memory_mib), Some(vcpus), Some(image), Some(disk), Some(management)) => {
            Ok(Expectations {
                memory_mib,
                vcpus,
                image,
                disk,
                management,
                tpm: tpm.unwrap_or(Expect::Is(false)),
            })
        }
        (m, v, i, d, g) => {
            let missing: Vec<&str> = [
                m.is_none(),
                v.is_none(),
                i.is_none(),
                d.is_none(),
                g.is_none(),
            ]
            .iter()
            .zip(FIELDS)
            .filter_map(|(missing, name)| missing.then_some(name))
            .collect();
            Err(format!(
                "missing {} (state each expectation, or `any` to leave it unchecked)",
                missing.join(", ")
            ))
        }
    }
}

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nobody holds it.
    Free,
    /// A session holds it (one at a time).
    InUse,
    /// Its workload was delivered: it is spent.
    Spent,
}

/// One reservation.
#[derive(Debug, Clone)]
struct Reservation {
    vip: Ipv4Addr,
    expect: Expectations,
    state: State,
    failures: u32,
}

/// What a successful claim gives the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// What the tenant expects of this VM.
    pub expect: Expectations,
    /// Failed attempts before this one.
    pub failures: u32,
}

/// How a claimed session ended, for [`Reservations::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The workload was sent: the reservation is spent.
    Delivered,
    /// Anything else: the reservation is free again, one more failure counted.
    Failed,
}

/// The reservation's tally after [`Reservations::finish`], for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Failed attempts counted so far (this one included).
    pub failures: u32,
    /// Whether the reservation is now spent.
    pub spent: bool,
    /// Whether the reservation now refuses every further attempt.
    pub exhausted: bool,
    /// The failure could not be written to the ledger (a restart would forget it).
    pub ledger_error: Option<String>,
}

/// What a ledger said at start, for the `listening` report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replay {
    /// Reservations found spent.
    pub spent: usize,
    /// Failed attempts counted back.
    pub failures: usize,
    /// Entries for auth codes no reservation has (reservations since removed).
    pub unknown: usize,
}

/// The reservations, by U.
#[derive(Debug)]
pub struct Reservations {
    by_code: HashMap<Vec<u8>, Reservation>,
    max_failures: u32,
    ledger: Option<Ledger>,
}

impl Default for Reservations {
    fn default() -> Self {
        Reservations {
            by_code: HashMap::new(),
            max_failures: DEFAULT_MAX_FAILURES,
            ledger: None,
        }
    }
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
            let bad = |why: String| ReservationError::BadLine { line: i + 1, why };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [ip, code, rest @ ..] = fields.as_slice() else {
                return Err(bad("expected an IPv4 address and an auth code".into()));
            };
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| bad(format!("\"{ip}\" is not an IPv4 address")))?;
            if code.len() > tvp_abi::config::AUTH_CODE_MAX || code.contains('=') {
                return Err(bad(format!(
                    "the auth code is 1..={} bytes without '='",
                    tvp_abi::config::AUTH_CODE_MAX
                )));
            }
            let expect = parse_expectations(rest).map_err(bad)?;
            let reservation = Reservation {
                vip: ip,
                expect,
                state: State::Free,
                failures: 0,
            };
            if r.by_code
                .insert(code.as_bytes().to_vec(), reservation)
                .is_some()
            {
                return Err(ReservationError::Duplicate(i + 1));
            }
        }
        Ok(r)
    }

    /// Sets how many failed attempts a reservation tolerates (at least 1).
    pub fn with_max_failures(mut self, n: u32) -> Self {
        self.max_failures = n.max(1);
        self
    }

    /// The bound on failed attempts.
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// Keeps the reservations' history in `ledger`, starting from what it already
    /// holds (`entries`, as [`Ledger::open`] read them): spent reservations stay
    /// spent and counted failures stay counted across restarts.
    pub fn with_ledger(mut self, ledger: Ledger, entries: &[Entry]) -> (Self, Replay) {
        let by_digest: HashMap<String, Vec<u8>> = self
            .by_code
            .keys()
            .map(|c| (code_digest(c), c.clone()))
            .collect();
        let mut replay = Replay::default();
        for e in entries {
            let Some(r) = by_digest
                .get(&e.u_sha256)
                .and_then(|c| self.by_code.get_mut(c))
            else {
                replay.unknown += 1;
                continue;
            };
            match e.event {
                Event::Spent => {
                    if r.state != State::Spent {
                        replay.spent += 1;
                    }
                    r.state = State::Spent;
                }
                Event::Failed => {
                    r.failures = r.failures.saturating_add(1);
                    replay.failures += 1;
                }
            }
        }
        self.ledger = Some(ledger);
        (self, replay)
    }

    /// Records, durably, that the claimed reservation for `code` is about to be spent:
    /// called before the first byte of its workload is sent, which must not happen if
    /// this fails.
    pub fn record_spend(&mut self, code: &[u8]) -> Result<(), LedgerError> {
        match &mut self.ledger {
            Some(l) => l.append(code, Event::Spent),
            None => Ok(()),
        }
    }

    /// Claims the reservation for (`code`, `vip`): marks it in use. Refused while
    /// another session holds it, once it is spent, or after too many failures.
    pub fn claim(&mut self, code: &[u8], vip: Ipv4Addr) -> Result<Claim, ReservationError> {
        let max = self.max_failures;
        let r = self
            .by_code
            .get_mut(code)
            .ok_or(ReservationError::UnknownCode)?;
        if r.vip != vip {
            return Err(ReservationError::WrongAddress);
        }
        match r.state {
            State::Spent => return Err(ReservationError::Reused),
            State::InUse => return Err(ReservationError::Busy),
            State::Free => {}
        }
        if r.failures >= max {
            return Err(ReservationError::TooManyFailures {
                failures: r.failures,
                max,
            });
        }
        r.state = State::InUse;
        Ok(Claim {
            expect: r.expect,
            failures: r.failures,
        })
    }

    /// Ends the claimed session for `code`: spent on a delivery, otherwise free again
    /// with one more failure. `None` if `code` is not in use (a caller bug; nothing changes).
    pub fn finish(&mut self, code: &[u8], ending: Ending) -> Option<Tally> {
        let max = self.max_failures;
        let r = self.by_code.get_mut(code)?;
        if r.state != State::InUse {
            return None;
        }
        let mut ledger_error = None;
        match ending {
            Ending::Delivered => r.state = State::Spent,
            Ending::Failed => {
                r.state = State::Free;
                r.failures = r.failures.saturating_add(1);
                if let Some(l) = &mut self.ledger {
                    ledger_error = l.append(code, Event::Failed).err().map(|e| e.to_string());
                }
            }
        }
        Some(Tally {
            failures: r.failures,
            spent: r.state == State::Spent,
            exhausted: r.state == State::Spent || r.failures >= max,
            ledger_error,
        })
    }

    /// The state of the reservation for `code`, if there is one.
    pub fn state(&self, code: &[u8]) -> Option<State> {
        self.by_code.get(code).map(|r| r.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: &str = "memory=any vcpus=any image=any disk=any management=any";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn two() -> Reservations {
        Reservations::parse(&format!(
            "# tenant\n10.0.0.2 U-1 {ANY}\n\n10.0.0.3 U-2 {ANY}\n"
        ))
        .unwrap()
    }

    #[test]
    fn claims_are_address_bound_and_one_at_a_time() {
        let mut r = two();
        assert_eq!(
            r.claim(b"U-9", ip("10.0.0.2")),
            Err(ReservationError::UnknownCode)
        );
        assert_eq!(
            r.claim(b"U-1", ip("10.0.0.3")),
            Err(ReservationError::WrongAddress)
        );
        assert_eq!(r.claim(b"U-1", ip("10.0.0.2")).unwrap().failures, 0);
        assert_eq!(r.state(b"U-1"), Some(State::InUse));
        // A second session for the same U while the first runs.
        assert_eq!(r.claim(b"U-1", ip("10.0.0.2")), Err(ReservationError::Busy));
        assert_eq!(ReservationError::Busy.code(), "reservation-busy");
        // Another U is independent.
        assert!(r.claim(b"U-2", ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn only_a_delivery_spends_a_reservation() {
        let mut r = two();
        // Failed attempts (attestation refused, a client that only knows U) free it again.
        for n in 1..=3 {
            r.claim(b"U-1", ip("10.0.0.2")).unwrap();
            let t = r.finish(b"U-1", Ending::Failed).unwrap();
            assert_eq!((t.failures, t.spent, t.exhausted), (n, false, false));
            assert_eq!(r.state(b"U-1"), Some(State::Free));
        }
        let c = r.claim(b"U-1", ip("10.0.0.2")).unwrap();
        assert_eq!(c.failures, 3);
        let t = r.finish(b"U-1", Ending::Delivered).unwrap();
        assert!(t.spent && t.exhausted);
        assert_eq!(
            r.claim(b"U-1", ip("10.0.0.2")),
            Err(ReservationError::Reused)
        );
        // Finishing what is not in use changes nothing.
        assert_eq!(r.finish(b"U-1", Ending::Failed), None);
        assert_eq!(r.finish(b"U-2", Ending::Delivered), None);
        assert_eq!(r.state(b"U-1"), Some(State::Spent));
    }

    #[test]
    fn failed_attempts_are_bounded() {
        let mut r = two().with_max_failures(2);
        assert_eq!(r.max_failures(), 2);
        r.claim(b"U-1", ip("10.0.0.2")).unwrap();
        assert!(!r.finish(b"U-1", Ending::Failed).unwrap().exhausted);
        r.claim(b"U-1", ip("10.0.0.2")).unwrap();
        assert!(r.finish(b"U-1", Ending::Failed).unwrap().exhausted);
        let e = r.claim(b"U-1", ip("10.0.0.2")).unwrap_err();
        assert_eq!(
            e,
            ReservationError::TooManyFailures {
                failures: 2,
                max: 2
            }
        );
        assert_eq!(e.code(), "too-many-failures");
        assert_eq!(r.state(b"U-1"), Some(State::Free));
        // At least one attempt is always allowed.
        assert_eq!(two().with_max_failures(0).max_failures(), 1);
    }

    #[test]
    fn expectations_are_parsed_in_any_order() {
        let d = "ab".repeat(32);
        let e = "cd".repeat(32);
        let r = Reservations::parse(&format!(
            "10.0.0.2 U-1 management=tenant disk={e} image={d} vcpus=1 memory=64\n\
             10.0.0.2 U-2 memory=any vcpus=any image=none disk=none management=any\n"
        ))
        .unwrap();
        let mut r = r;
        let ex = r.claim(b"U-1", ip("10.0.0.2")).unwrap().expect;
        assert_eq!(
            ex,
            Expectations {
                memory_mib: Expect::Is(64),
                vcpus: Expect::Is(1),
                image: Expect::Is(Some([0xab; 32])),
                disk: Expect::Is(Some([0xcd; 32])),
                management: ManagementExpect::Tenant,
                tpm: Expect::Is(false),
            }
        );
        assert_eq!(
            ex.to_string(),
            format!("memory=64 vcpus=1 image={d} disk={e} management=tenant tpm=no")
        );
        let e = r.claim(b"U-2", ip("10.0.0.2")).unwrap().expect;
        assert_eq!(e.image, Expect::Is(None));
        assert_eq!(e.disk, Expect::Is(None));
        assert!(e.memory_mib.admits(&4096) && e.vcpus.admits(&7));
        assert_eq!(e.management, ManagementExpect::Any);
    }

    fn line_error(text: &str) -> String {
        match Reservations::parse(text).unwrap_err() {
            ReservationError::BadLine { line, why } => format!("{line}: {why}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn an_old_two_field_line_is_refused_naming_the_missing_expectations() {
        let e = line_error("10.0.0.2 U-1\n");
        assert_eq!(
            e,
            "1: missing memory, vcpus, image, disk, management (state each expectation, or `any` to leave it unchecked)"
        );
        // A line of the format before disk= names the one field it lacks.
        let e = line_error("10.0.0.2 U-1 memory=64 vcpus=1 image=none management=tenant\n");
        assert!(e.starts_with("1: missing disk ("), "{e}");
        let e = line_error(&format!(
            "10.0.0.2 U-1 {ANY}\n10.0.0.3 U-2 memory=64 image=none\n"
        ));
        assert!(e.starts_with("2: missing vcpus, disk, management"), "{e}");
        // The Display names the file format.
        let full = Reservations::parse("10.0.0.2 U").unwrap_err().to_string();
        assert!(full.contains("memory=<MiB>|any"), "{full}");
    }

    #[test]
    fn rejects_bad_files() {
        assert!(line_error("10.0.0.2").contains("an IPv4 address and an auth code"));
        assert!(line_error(&format!("x U {ANY}")).contains("\"x\" is not an IPv4"));
        assert!(
            line_error(&format!("10.0.0.2 U {ANY} memory=64")).contains("memory is given twice")
        );
        assert!(
            line_error("10.0.0.2 U memory=lots vcpus=any image=any disk=any management=any")
                .contains("memory=lots: expected a size in MiB or any")
        );
        assert!(
            line_error("10.0.0.2 U memory=any vcpus=any image=abcd disk=any management=any")
                .contains("image=abcd: expected a SHA-256 in hex, none, or any")
        );
        assert!(
            line_error("10.0.0.2 U memory=any vcpus=any image=any disk=xyz management=any")
                .contains("disk=xyz: expected the disk's header SHA-256 in hex, none, or any")
        );
        assert!(
            line_error("10.0.0.2 U memory=any vcpus=any image=any disk=any management=mine")
                .contains("management=mine: expected tenant or any")
        );
        assert!(line_error(&format!("10.0.0.2 U {ANY} colour=blue"))
            .contains("unknown field \"colour\""));
        assert!(
            line_error(&format!("10.0.0.2 U {ANY} stray")).contains("\"stray\" is not key=value")
        );
        assert!(line_error(&format!("10.0.0.2 {} {ANY}", "u".repeat(65))).contains("auth code"));
        assert_eq!(
            Reservations::parse(&format!("10.0.0.2 U {ANY}\n10.0.0.3 U {ANY}")).unwrap_err(),
            ReservationError::Duplicate(2)
        );
    }

    #[test]
    fn a_ledger_carries_spends_and_failures_into_the_next_server() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("ledger");
        let (l, e) = Ledger::open(&path).unwrap();
        let (mut r, replay) = two().with_max_failures(2).with_ledger(l, &e);
        assert_eq!(replay, Replay::default());
        r.claim(b"U-1", ip("10.0.0.2")).unwrap();
        r.record_spend(b"U-1").unwrap();
        r.finish(b"U-1", Ending::Delivered).unwrap();
        r.claim(b"U-2", ip("10.0.0.3")).unwrap();
        let t = r.finish(b"U-2", Ending::Failed).unwrap();
        assert_eq!(t.ledger_error, None);
        drop(r);
        // The next server: a reservation removed since counts as unknown.
        let (l, e) = Ledger::open(&path).unwrap();
        let one = Reservations::parse(&format!("10.0.0.3 U-2 {ANY}\n")).unwrap();
        let (_, replay) = one.with_ledger(l, &e);
        assert_eq!(replay.unknown, 1);
        let (l, e) = Ledger::open(&path).unwrap();
        let (mut r, replay) = two().with_max_failures(2).with_ledger(l, &e);
        assert_eq!(
            replay,
            Replay {
                spent: 1,
                failures: 1,
                unknown: 0
            }
        );
        assert_eq!(r.state(b"U-1"), Some(State::Spent));
        assert_eq!(
            r.claim(b"U-1", ip("10.0.0.2")),
            Err(ReservationError::Reused)
        );
        assert_eq!(r.claim(b"U-2", ip("10.0.0.3")).unwrap().failures, 1);
        let t = r.finish(b"U-2", Ending::Failed).unwrap();
        assert!(t.exhausted);
    }
}
