//! The named verification checks and the error saying which one failed and why.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::ima::ImaError;
use crate::replay::ReplayError;

/// One verification check. Its kebab-case [`Check::name`] is stable: it prefixes error
/// messages and is what the CLI prints and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// The evidence or one of its encoded structures is malformed.
    Format,
    /// The evidence format version is not supported.
    Version,
    /// The evidence's AK differs from the trusted AK, or the quote names another signer.
    AkMismatch,
    /// The quote's signature does not verify with the trusted AK.
    Signature,
    /// The quote's qualifying data is not the expected nonce.
    Nonce,
    /// The quoted PCR selection differs from the reported PCRs.
    PcrSelection,
    /// The quote's PCR digest does not match the reported PCR values.
    PcrDigest,
    /// The event log is malformed or does not replay to the quoted values.
    EventLog,
    /// A quoted PCR differs from the caller's expected value.
    ExpectedPcrs,
    /// The host's IMA list is missing, does not replay to PCR 10, or shows a file
    /// outside the inventory's allowlist.
    Ima,
}

impl Check {
    /// Every check, in the order [`crate::verify::verify`] runs them.
    pub const ALL: [Check; 10] = [
        Check::Version,
        Check::Format,
        Check::AkMismatch,
        Check::Signature,
        Check::Nonce,
        Check::PcrSelection,
        Check::PcrDigest,
        Check::EventLog,
        Check::ExpectedPcrs,
        Check::Ima,
    ];

    /// The stable kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Check::Format => "format",
            Check::Version => "version",
            Check::AkMismatch => "ak-mismatch",
            Check::Signature => "signature",
            Check::Nonce => "nonce",
            Check::PcrSelection => "pcr-selection",
            Check::PcrDigest => "pcr-digest",
            Check::EventLog => "event-log",
            Check::ExpectedPcrs => "expected-pcrs",
            Check::Ima => "ima",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown check name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown check {0:?}")]
pub struct UnknownCheck(pub String);

impl FromStr for Check {
    type Err = UnknownCheck;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Check::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCheck(s.to_string()))
    }
}

/// Why evidence was rejected. `Display` starts with the failed check's name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// [`Check::Format`].
    #[error("format: {0}")]
    Format(String),
    /// [`Check::Version`].
    #[error(
        "version: evidence version {found} is not supported (this verifier reads {supported})"
    )]
    Version {
        /// Version in the evidence.
        found: u32,
        /// Version this crate reads.
        supported: u32,
    },
    /// [`Check::AkMismatch`].
    #[error("ak-mismatch: {0}")]
    AkMismatch(String),
    /// [`Check::Signature`].
    #[error("signature: {0}")]
    Signature(String),
    /// [`Check::Nonce`].
    #[error("nonce: {0}")]
    Nonce(String),
    /// [`Check::PcrSelection`].
    #[error("pcr-selection: {0}")]
    PcrSelection(String),
    /// [`Check::PcrDigest`].
    #[error("pcr-digest: quote digest {quoted} does not match SHA-256 of the reported PCR values {computed}")]
    PcrDigest {
        /// Hex digest in the quote.
        quoted: String,
        /// Hex SHA-256 of the reported values.
        computed: String,
    },
    /// [`Check::EventLog`]: the log could not be replayed.
    #[error("event-log: {0}")]
    EventLogReplay(#[from] ReplayError),
    /// [`Check::EventLog`]: the log replays to a value other than the quoted one.
    #[error("event-log: PCR {pcr} replays to {replayed} but the quote has {quoted}")]
    EventLogMismatch {
        /// The PCR.
        pcr: u32,
        /// Hex value from the replay.
        replayed: String,
        /// Hex value quoted.
        quoted: String,
    },
    /// [`Check::ExpectedPcrs`]: an expected PCR is not in the quote.
    #[error("expected-pcrs: {bank} PCR {pcr} is expected but was not quoted")]
    ExpectedPcrMissing {
        /// Bank name.
        bank: String,
        /// The PCR.
        pcr: u32,
    },
    /// [`Check::ExpectedPcrs`]: a quoted PCR differs from its expected value.
    #[error("expected-pcrs: {bank} PCR {pcr} is {actual}, expected {expected}")]
    ExpectedPcrMismatch {
        /// Bank name.
        bank: String,
        /// The PCR.
        pcr: u32,
        /// Hex value expected.
        expected: String,
        /// Hex value quoted.
        actual: String,
    },
    /// [`Check::Ima`].
    #[error("ima: {0}")]
    Ima(ImaError),
}

impl VerifyError {
    /// The check that failed.
    pub fn check(&self) -> Check {
        match self {
            VerifyError::Format(_) => Check::Format,
            VerifyError::Version { .. } => Check::Version,
            VerifyError::AkMismatch(_) => Check::AkMismatch,
            VerifyError::Signature(_) => Check::Signature,
            VerifyError::Nonce(_) => Check::Nonce,
            VerifyError::PcrSelection(_) => Check::PcrSelection,
            VerifyError::PcrDigest { .. } => Check::PcrDigest,
            VerifyError::EventLogReplay(_) | VerifyError::EventLogMismatch { .. } => {
                Check::EventLog
            }
            VerifyError::ExpectedPcrMissing { .. } | VerifyError::ExpectedPcrMismatch { .. } => {
                Check::ExpectedPcrs
            }
            VerifyError::Ima(_) => Check::Ima,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_prefix_messages() {
        for c in Check::ALL {
            assert_eq!(c.name().parse::<Check>().unwrap(), c);
        }
        assert!("nope".parse::<Check>().is_err());
        let e = VerifyError::PcrDigest {
            quoted: "3a".into(),
            computed: "9f".into(),
        };
        assert_eq!(e.check(), Check::PcrDigest);
        assert!(e.to_string().starts_with("pcr-digest: quote digest 3a"));
    }
}
