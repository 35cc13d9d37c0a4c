//! Boot failures: one reason code per way the boot can fail, reported through the
//! mailbox (`BOOT_FAILED`) and on the console before the firmware powers off.
//! Codes `0x100..=0x11f` are CPU exceptions caught by the stub (`0x100 | vector`),
//! `0x1f0`/`0x1f1` the stub's own checks (see [`crate::stub`]).

use crate::mailbox::Mailbox;
use crate::platform::{milestone, power_off};
use crate::println;

/// Why the boot failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Failure {
    /// The configuration page does not decode.
    BadConfig = 1,
    /// The mailbox does not answer or speaks another ABI version.
    MailboxUnavailable = 2,
    /// No entropy source works (RDRAND missing or failing).
    NoEntropy = 3,
    /// The network device is missing or does not come up.
    NoLink = 4,
    /// The TCP connection to the boot server was refused or timed out.
    TcpFailed = 5,
    /// The boot server's certificate was rejected (CA or name).
    CertificateRejected = 6,
    /// Another TLS failure.
    TlsFailed = 7,
    /// The boot server refused the reservation (U or I).
    ReservationRefused = 8,
    /// The platform did not accept the tunnel measurement.
    TunnelNotMeasured = 9,
    /// The attestation was rejected.
    AttestationRejected = 10,
    /// The workload's signature did not verify.
    BadSignature = 11,
    /// A deadline passed.
    Timeout = 12,
    /// Out of memory.
    OutOfMemory = 13,
    /// A bug: the firmware panicked.
    Panic = 14,
    /// The workload is not a loadable ELF image for the workload window.
    BadWorkload = 15,
    /// The platform did not answer the quote request.
    QuoteFailed = 16,
    /// The platform refused the handover.
    HandoverRefused = 17,
    /// The boot server broke the protocol.
    ProtocolError = 18,
    /// The workload announced is larger than this VM's workload window (refused before
    /// any of it is read).
    WorkloadTooLarge = 19,
    /// The VM's own TPM failed or refused a measurement (only for a VM with a TPM).
    TpmFailed = 20,
}

impl Failure {
    /// Stable short name for the console.
    pub fn name(self) -> &'static str {
        match self {
            Failure::BadConfig => "bad-config",
            Failure::MailboxUnavailable => "mailbox-unavailable",
            Failure::NoEntropy => "no-entropy",
            Failure::NoLink => "no-link",
            Failure::TcpFailed => "tcp-failed",
            Failure::CertificateRejected => "certificate-rejected",
            Failure::TlsFailed => "tls-failed",
            Failure::ReservationRefused => "reservation-refused",
            Failure::TunnelNotMeasured => "tunnel-not-measured",
            Failure::AttestationRejected => "attestation-rejected",
            Failure::BadSignature => "bad-signature",
            Failure::Timeout => "timeout",
            Failure::OutOfMemory => "out-of-memory",
            Failure::Panic => "panic",
            Failure::BadWorkload => "bad-workload",
            Failure::QuoteFailed => "quote-failed",
            Failure::HandoverRefused => "handover-refused",
            Failure::ProtocolError => "protocol-error",
            Failure::WorkloadTooLarge => "workload-too-large",
            Failure::TpmFailed => "tpm-failed",
        }
    }
}

/// Reports `failure` on the console and through the mailbox, then powers off.
pub fn fail(failure: Failure) -> ! {
    println!(
        "tvp-firmware: BOOT FAILED reason={} code={}",
        failure.name(),
        failure as u32
    );
    milestone(milestone::FAILED);
    let _ = Mailbox::new().boot_failed(failure as u32);
    power_off()
}
