//! Errors of the TPM core.

/// What went wrong talking to the TPM, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI string is malformed or the TPM behind it cannot be reached.
    #[error("cannot open TPM through TCTI '{tcti}': {reason} (check the `tcti` setting and that the TPM or swtpm is running)")]
    Tcti { tcti: String, reason: String },
    /// A TPM command failed.
    #[error("TPM command {command} failed: {source}")]
    Command {
        command: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    /// A persistent handle holds an object that is not what tvp expects there.
    #[error("persistent handle {handle:#010x} holds {found}, expected {expected}; evict it or configure another handle")]
    WrongObject {
        handle: u32,
        found: String,
        expected: &'static str,
    },
    /// The caller asked for something the TPM core refuses by policy.
    #[error("{0}")]
    Refused(String),
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A PCR value kept changing while being quoted.
    #[error("PCR values kept changing during the quote ({attempts} attempts); retry later")]
    QuoteRace { attempts: u32 },
    /// The TPM service thread has stopped.
    #[error("the TPM service is not running")]
    ServiceStopped,
    /// Converting a TPM structure failed.
    #[error("cannot encode {what}: {reason}")]
    Encoding { what: &'static str, reason: String },
}

/// Wrap a tss-esapi error with the command that failed.
pub(crate) fn cmd(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { command, source }
}
