//! Errors of `tvp-vmm`, one enum for everything that can stop a VM from starting.

use std::path::PathBuf;

/// Why the VMM could not set up or start a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A file given on the command line could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration page is invalid.
    #[error("invalid configuration page: {0}; regenerate it with tvp-abi's Config::encode")]
    Config(tvp_abi::config::ConfigError),
    /// The configuration asks for something this VMM does not support yet.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
    /// The firmware is not a loadable ELF for this VM.
    #[error("firmware rejected: {0}")]
    Firmware(String),
    /// /dev/kvm or a KVM ioctl failed.
    #[error("KVM {op} failed: {source}; is /dev/kvm present and accessible?")]
    Kvm {
        /// The operation.
        op: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// The workload image could not be loaded (names the reason).
    #[error("image: {0}")]
    Image(String),
    /// The TAP device for virtio-net could not be opened.
    #[error("TAP device {0}")]
    Tap(String),
    /// The VM's TPM (its swtpm's descriptor) is unusable.
    #[error("vTPM: {0}")]
    Vtpm(String),
    /// Guest memory could not be allocated or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The console log could not be opened.
    #[error("cannot open console log {path}: {source}")]
    ConsoleLog {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The channel to tvpd failed.
    #[error("channel to tvpd: {0}")]
    Channel(#[from] tvp_vmm_channel::ChannelError),
    /// The channel descriptor or path is unusable.
    #[error("channel setup: {0}")]
    ChannelSetup(String),
    /// tvpd aborted the VM before it started.
    #[error("tvpd aborted the VM before start: {0}")]
    Aborted(String),
    /// A signal or tvpd stopped the VMM before the VM started.
    #[error("stopped before the VM started: {0}")]
    StoppedBeforeStart(&'static str),
    /// Signal handler or thread setup failed.
    #[error("process setup: {0}")]
    Process(String),
}

impl VmmError {
    /// Helper for KVM errors.
    pub fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |source| VmmError::Kvm { op, source }
    }
}
