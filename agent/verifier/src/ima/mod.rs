//! The host's runtime integrity: the kernel's IMA measurement list (ima-ng template,
//! PCR 10), replayed against the quoted PCR 10 and checked against the inventory's
//! allowlist of the executables, libraries and kernel modules the host may run.
//!
//! - [`list`]: bounded parsers for `binary_runtime_measurements` (what tvpd ships in
//!   the evidence) and `ascii_runtime_measurements` (what an operator reads).
//! - [`replay`]: the PCR 10 replay rule (SHA-256 bank; a violation extends all-ones).
//! - [`allowlist`]: the inventory's allowlist, the `runtime_integrity` setting, and
//!   the check that names the first measurement outside the allowlist.
//!
//! `docs/evidence.md` specifies the evidence field and `docs/threat-model.md` what this
//! detects and what it does not.

pub mod allowlist;
pub mod list;
pub mod replay;

#[cfg(test)]
mod tests;

pub use allowlist::{AllowEntry, Allowlist, RuntimeIntegrity, RuntimeIntegrityReport};
pub use list::{parse_ascii, parse_binary, ImaEntry, ImaParseError};
pub use replay::{replay_to_quote, ImaReplayError};

/// The PCR IMA extends (the kernel's default, `CONFIG_IMA_MEASURE_PCR_IDX`).
pub const IMA_PCR: u32 = 10;

/// Why the host's runtime integrity was refused (the `ima` check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImaError {
    /// The inventory requires IMA but the evidence has no measurement list.
    #[error("no-list: the evidence has no IMA measurement list, but the host's inventory entry requires runtime integrity (IMA); the host's kernel has no IMA policy, or tvpd could not read /sys/kernel/security/ima")]
    NoList,
    /// The inventory requires IMA but the quote does not cover PCR 10.
    #[error("pcr10-not-quoted: the quote does not cover PCR {IMA_PCR}, so the IMA list is not bound to the TPM")]
    PcrNotQuoted,
    /// The caller's allowlist is unusable.
    #[error("bad-allowlist: {0}")]
    BadAllowlist(String),
    /// The covered list does not start with the kernel's boot_aggregate.
    #[error("no-boot-aggregate: the measurements the quote covers do not start with the kernel's boot_aggregate, so PCR 10 was not extended by a kernel with IMA")]
    NoBootAggregate,
    /// The list's boot_aggregate is not the digest of the quoted PCRs 0–9.
    #[error("boot-aggregate: the list's boot_aggregate {listed} is not {computed}, the digest of the quoted PCRs 0-9")]
    BootAggregate {
        /// `alg:hex` in the list.
        listed: String,
        /// `sha256:hex` of the quoted PCRs 0–9.
        computed: String,
    },
    /// The inventory pins a PCR 0–9 the quote does not cover.
    #[error("boot-pcr-not-quoted: the inventory pins PCR {pcr} (boot_pcrs) but the quote does not cover it")]
    BootPcrNotQuoted {
        /// The PCR.
        pcr: u32,
    },
    /// A quoted PCR 0–9 differs from the value the inventory pins.
    #[error("boot-pcr: PCR {pcr} is {quoted}, not {expected} as the inventory pins it (boot_pcrs): the host booted other firmware, boot loader or kernel than the one whose IMA the inventory trusts")]
    BootPcr {
        /// The PCR.
        pcr: u32,
        /// The pinned value, hex.
        expected: String,
        /// The quoted value, hex.
        quoted: String,
    },
    /// The list does not parse.
    #[error("malformed: {0}")]
    Parse(#[from] ImaParseError),
    /// No prefix of the list replays to the quoted PCR 10.
    #[error("replay: {0}")]
    Replay(#[from] ImaReplayError),
    /// A measurement covered by the quote is not in the allowlist.
    #[error("not-allowed {path} {digest} (measurement {index}, template {template}): the host ran a file its inventory does not allow")]
    NotAllowed {
        /// Position in the list (0 = boot_aggregate).
        index: usize,
        /// The measured file's path, as the kernel recorded it.
        path: String,
        /// `alg:hex` of the file's content.
        digest: String,
        /// The entry's template name.
        template: String,
    },
    /// A measurement covered by the quote is a violation (content unknown).
    #[error("violation {path} (measurement {index}): the kernel recorded a violation (a measured file open for writing, or a measurement that failed), so what ran is unknown")]
    Violation {
        /// Position in the list.
        index: usize,
        /// The file's path.
        path: String,
    },
}

impl ImaError {
    /// The stable kind, the first word of the message: `no-list`, `pcr10-not-quoted`,
    /// `bad-allowlist`, `malformed`, `replay`, `no-boot-aggregate`, `boot-aggregate`,
    /// `boot-pcr-not-quoted`, `boot-pcr`, `not-allowed`, `violation`.
    pub fn kind(&self) -> &'static str {
        match self {
            ImaError::NoList => "no-list",
            ImaError::PcrNotQuoted => "pcr10-not-quoted",
            ImaError::BadAllowlist(_) => "bad-allowlist",
            ImaError::Parse(_) => "malformed",
            ImaError::Replay(_) => "replay",
            ImaError::NoBootAggregate => "no-boot-aggregate",
            ImaError::BootAggregate { .. } => "boot-aggregate",
            ImaError::BootPcrNotQuoted { .. } => "boot-pcr-not-quoted",
            ImaError::BootPcr { .. } => "boot-pcr",
            ImaError::NotAllowed { .. } => "not-allowed",
            ImaError::Violation { .. } => "violation",
        }
    }
}
