//! The VM's TPM: a TPM 2.0 Command Response Buffer (CRB) interface (TCG PC Client
//! Platform TPM Profile, "CRB interface") at the standard address, locality 0 only,
//! forwarding each command to the VM's own TPM (a per-VM swtpm) through a
//! [`TpmBackend`].
//!
//! The command and the response live in the device's own data buffer inside its
//! register window (`CMD_ADDR` = `RSP_ADDR` = window + 0x80, read-only): the guest
//! writes and reads them with MMIO, so the device never reads or writes guest memory.
//! A command runs when the guest sets `CTRL_START`; the device executes it before the
//! access completes, so `CTRL_START` always reads 0 (done).
//!
//! Guest input is hostile: a command whose header size is below 10 bytes or beyond the
//! buffer gets a `TPM_RC_COMMAND_SIZE` response without reaching the TPM, and `START`
//! without the locality is ignored. The backend's answer is checked too: a response
//! that is short, inconsistent with its header or larger than the buffer is
//! `TPM_RC_FAILURE` to the guest. A backend that fails (its process gone, or no answer
//! within its timeout: the caller sets the socket's) fails the device: from then on
//! every command gets `TPM_RC_FAILURE` and `CTRL_STS.tpmSts` reads 1, so a guest can
//! never hold a vCPU longer than that timeout once.

use std::io::{Read, Write};
use tvp_abi::layout::{TPM_CRB_GPA, TPM_CRB_SIZE};
pub use tvp_abi::tpm_crb::reg;
use tvp_abi::tpm_crb::{
    LOC_CTRL_RELINQUISH, LOC_CTRL_REQUEST, LOC_STATE_ASSIGNED, LOC_STATE_ESTABLISHED,
    LOC_STATE_VALID, LOC_STS_GRANTED, REQ_CMD_READY, REQ_GO_IDLE, STS_FATAL, STS_IDLE,
};

/// Offset of the data buffer in the window.
const DATA: u64 = 0x80;
/// Bytes in the data buffer: the rest of the 4 KiB window.
pub const DATA_LEN: usize = (TPM_CRB_SIZE - DATA) as usize;
/// A TPM response or command header: tag u16, size u32, code u32 (big-endian).
const HEADER_LEN: usize = 10;
/// `TPM_ST_NO_SESSIONS`.
const TAG_NO_SESSIONS: u16 = 0x8001;
/// `TPM_RC_FAILURE`: the TPM (here: its backend) failed.
pub const RC_FAILURE: u32 = 0x101;
/// `TPM_RC_COMMAND_SIZE`: the command's size field does not fit.
pub const RC_COMMAND_SIZE: u32 = 0x142;
/// Most problems logged individually.
const LOG_LIMIT: u32 = 32;

/// `INTF_ID`: InterfaceType 1 (CRB active), InterfaceVersion 1 (CRB),
/// CapDataXferSizeSupport 3 (64 bytes), CapCRB, InterfaceSelector 1 (CRB), IntfSelLock.
const INTF_ID: u64 = 1 | (1 << 4) | (3 << 11) | (1 << 14) | (1 << 17) | (1 << 19);

/// Why the backend could not run a command.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Sending the command or reading the response failed (or timed out).
    #[error("the VM's TPM did not answer: {0}")]
    Io(#[from] std::io::Error),
    /// The response is not a TPM response that fits the buffer.
    #[error("the VM's TPM answered a malformed response: {0}")]
    BadResponse(String),
}

/// Where commands go: the VM's own TPM.
pub trait TpmBackend: Send {
    /// Runs `cmd` (a whole TPM command) and writes its response into `rsp`; returns
    /// the response's length.
    fn execute(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, BackendError>;
}

/// A TPM reached over a byte stream carrying raw commands and responses (swtpm's
/// data channel): write the command, read the 10-byte header, then the rest its size
/// field announces, refused if that exceeds the buffer.
pub struct StreamBackend<S> {
    stream: S,
}

impl<S: Read + Write + Send> StreamBackend<S> {
    /// A backend over `stream` (its timeouts, if any, are the caller's).
    pub fn new(stream: S) -> Self {
        StreamBackend { stream }
    }
}

impl<S: Read + Write + Send> TpmBackend for StreamBackend<S> {
    fn execute(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, BackendError> {
        self.stream.write_all(cmd)?;
        self.stream.flush()?;
        let Some(head) = rsp.get_mut(..HEADER_LEN) else {
            return Err(BackendError::BadResponse("no room for a header".into()));
        };
        self.stream.read_exact(head)?;
        let len = response_size(head)?;
        let Some(rest) = rsp.get_mut(HEADER_LEN..len) else {
            return Err(BackendError::BadResponse(format!(
                "{len}-byte response exceeds the {}-byte buffer",
                rsp.len()
            )));
        };
        self.stream.read_exact(rest)?;
        Ok(len)
    }
}

/// The size field of a response header, at least [`HEADER_LEN`].
fn response_size(head: &[u8]) -> Result<usize, BackendError> {
    let size = head
        .get(2..6)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| BackendError::BadResponse("short header".into()))?;
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size < HEADER_LEN {
        return Err(BackendError::BadResponse(format!(
            "size field {size} below the header's 10 bytes"
        )));
    }
    Ok(size)
}

/// Counters, logged at the end of the VM.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TpmStats {
    /// Commands the TPM answered.
    pub commands: u64,
    /// Commands refused by the device (size, or the device failed).
    pub refused: u64,
    /// Backend failures (at most one: the device fails on it).
    pub backend_errors: u64,
}

/// The CRB device.
pub struct TpmCrb {
    backend: Box<dyn TpmBackend>,
    buf: Box<[u8; DATA_LEN]>,
    scratch: Box<[u8; DATA_LEN]>,
    assigned: bool,
    idle: bool,
    failed: bool,
    logged: u32,
    stats: TpmStats,
}

impl TpmCrb {
    /// A device forwarding to `backend`.
    pub fn new(backend: Box<dyn TpmBackend>) -> Self {
        TpmCrb {
            backend,
            buf: Box::new([0; DATA_LEN]),
            scratch: Box::new([0; DATA_LEN]),
            assigned: false,
            idle: true,
            failed: false,
            logged: 0,
            stats: TpmStats::default(),
        }
    }

    /// Whether `addr` lies in the device's window.
    pub fn contains(addr: u64) -> bool {
        (TPM_CRB_GPA..TPM_CRB_GPA + TPM_CRB_SIZE).contains(&addr)
    }

    /// The counters.
    pub fn stats(&self) -> TpmStats {
        self.stats
    }

    /// Whether a backend failure failed the device.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Logs the counters (at the end of the VM).
    pub fn log_totals(&self) {
        let s = self.stats;
        log::info!(commands = s.commands, refused = s.refused, backend_errors = s.backend_errors, failed = self.failed; "vTPM totals");
    }

    fn note(&mut self, what: String) {
        if self.logged < LOG_LIMIT {
            self.logged += 1;
            log::warn!(problem = what.as_str(); "vTPM");
        }
    }

    /// A guest read of `data.len()` bytes at `addr` (inside the window).
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        data.fill(0);
        let off = addr.wrapping_sub(TPM_CRB_GPA);
        if off >= DATA {
            let at = (off - DATA) as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.buf.get(at + i).copied().unwrap_or(0);
            }
            return;
        }
        // Registers: a value by 4-byte register, read at any width within it (the
        // 64-bit registers as two halves).
        let base = off & !3;
        let v = self.register(base);
        let bytes = v.to_le_bytes();
        let within = (off - base) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            let at = within + i;
            *b = match at {
                0..=3 => bytes[at],
                // A 64-bit read of a 64-bit register's low half.
                4..=7 => self.register(base + 4).to_le_bytes()[at - 4],
                _ => 0,
            };
        }
    }

    fn register(&self, off: u64) -> u32 {
        let data_gpa = TPM_CRB_GPA + DATA;
        match off {
            reg::LOC_STATE => {
                LOC_STATE_VALID
                    | LOC_STATE_ESTABLISHED
                    | if self.assigned { LOC_STATE_ASSIGNED } else { 0 }
            }
            reg::LOC_STS => u32::from(self.assigned) * LOC_STS_GRANTED,
            reg::INTF_ID => INTF_ID as u32,
            reg::INTF_ID_HI => (INTF_ID >> 32) as u32,
            reg::CTRL_STS => {
                (if self.idle { STS_IDLE } else { 0 }) | if self.failed { STS_FATAL } else { 0 }
            }
            reg::CMD_SIZE | reg::RSP_SIZE => DATA_LEN as u32,
            reg::CMD_LADDR | reg::RSP_ADDR => data_gpa as u32,
            reg::CMD_HADDR | reg::RSP_ADDR_HI => (data_gpa >> 32) as u32,
            _ => 0,
        }
    }

    /// A guest write of `data` at `addr` (inside the window).
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) {
        let off = addr.wrapping_sub(TPM_CRB_GPA);
        if off >= DATA {
            let at = (off - DATA) as usize;
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = self.buf.get_mut(at + i) {
                    *slot = *b;
                }
            }
            return;
        }
        let mut v = [0u8; 4];
        for (d, s) in v.iter_mut().zip(data) {
            *d = *s;
        }
        let v = u32::from_le_bytes(v);
        match off {
            reg::LOC_CTRL => {
                if v & LOC_CTRL_REQUEST != 0 {
                    self.assigned = true;
                }
                if v & LOC_CTRL_RELINQUISH != 0 {
                    self.assigned = false;
                }
            }
            reg::CTRL_REQ => {
                if v & REQ_CMD_READY != 0 {
                    self.idle = false;
                }
                if v & REQ_GO_IDLE != 0 {
                    self.idle = true;
                }
            }
            reg::CTRL_START if v & 1 != 0 => {
                if self.assigned {
                    self.run_command();
                } else {
                    self.note("START without the locality ignored".into());
                }
            }
            // Commands complete before START's write does: nothing to cancel; no
            // interrupts.
            reg::CTRL_START | reg::CTRL_CANCEL | reg::INT_ENABLE | reg::INT_STS => {}
            _ => self.note(format!("write to register {off:#x} ignored")),
        }
    }

    /// Runs the command in the buffer and puts its response there.
    fn run_command(&mut self) {
        self.idle = false;
        let size = response_size(&self.buf[..HEADER_LEN]).ok();
        let Some(len) = size.filter(|n| *n <= DATA_LEN) else {
            self.stats.refused += 1;
            self.note(format!(
                "command size {size:?} outside 10..={DATA_LEN} refused"
            ));
            self.respond_error(RC_COMMAND_SIZE);
            return;
        };
        if self.failed {
            self.stats.refused += 1;
            self.respond_error(RC_FAILURE);
            return;
        }
        let TpmCrb {
            backend,
            buf,
            scratch,
            ..
        } = self;
        match backend.execute(&buf[..len], &mut scratch[..]) {
            Ok(n) => {
                let n = n.min(DATA_LEN);
                buf[..n].copy_from_slice(&scratch[..n]);
                buf[n..].fill(0);
                self.stats.commands += 1;
            }
            Err(e) => {
                self.stats.backend_errors += 1;
                self.failed = true;
                log::error!(error = e.to_string(); "vTPM failed: every further command gets TPM_RC_FAILURE");
                self.respond_error(RC_FAILURE);
            }
        }
    }

    /// A 10-byte error response with `rc`.
    fn respond_error(&mut self, rc: u32) {
        self.buf.fill(0);
        self.buf[..2].copy_from_slice(&TAG_NO_SESSIONS.to_be_bytes());
        self.buf[2..6].copy_from_slice(&(HEADER_LEN as u32).to_be_bytes());
        self.buf[6..10].copy_from_slice(&rc.to_be_bytes());
    }
}

/// The VM's TPM as tvpd (or a test) hands it over: an inherited, connected stream
/// socket to its swtpm's data channel, and how long one command may take.
#[derive(Debug, Clone, Copy)]
pub struct VtpmInput {
    /// The descriptor.
    pub fd: i32,
    /// Send and receive timeout of one command.
    pub timeout: std::time::Duration,
}

/// Takes the inherited descriptor, sets its timeouts (before the syscall filter) and
/// makes the device.
pub fn open(input: &VtpmInput) -> Result<TpmCrb, crate::error::VmmError> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let bad = |m: String| crate::error::VmmError::Vtpm(m);
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if input.fd < 0 || unsafe { libc::fcntl(input.fd, libc::F_GETFD) } < 0 {
        return Err(bad(format!("descriptor {} is not open", input.fd)));
    }
    // SAFETY: the descriptor is open, was inherited for this purpose and nothing else
    // in this process owns it; the File closes it.
    let stream = unsafe { std::fs::File::from_raw_fd(input.fd) };
    let t = libc::timeval {
        tv_sec: libc::time_t::try_from(input.timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(input.timeout.subsec_micros() as i32),
    };
    for (what, opt) in [("receive", libc::SO_RCVTIMEO), ("send", libc::SO_SNDTIMEO)] {
        // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from a live local.
        let r = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&t as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(bad(format!(
                "descriptor {} is not a socket ({what} timeout: {})",
                input.fd,
                std::io::Error::last_os_error()
            )));
        }
    }
    log::info!(fd = input.fd, timeout_ms = input.timeout.as_millis() as u64; "vTPM: TPM CRB at 0xfed40000 (locality 0)");
    Ok(TpmCrb::new(Box::new(StreamBackend::new(stream))))
}

#[cfg(test)]
#[path = "tpm_crb_tests.rs"]
mod tests;
