//! The VM's TPM through its CRB interface (TCG PC Client Platform TPM Profile) at
//! `tvp_abi::layout::TPM_CRB_GPA`, locality 0: one job, send a command, wait for it,
//! read the response. Used only when the configuration page says the VM has a TPM.
//!
//! Everything the device says is bounded: the command/response buffer must lie inside
//! the 4 KiB window the stub maps (user, uncached), a response's size field must fit
//! the caller's buffer and the device's, and every wait has a deadline, so a TPM that
//! misbehaves is a [`TpmError`] (a boot failure), never a hang or a read outside the
//! window.

use core::ptr::{read_volatile, write_volatile};
use tvp_abi::layout::{TPM_CRB_GPA, TPM_CRB_SIZE};

use tvp_abi::tpm_crb::{
    reg, LOC_CTRL_RELINQUISH as LOC_RELINQUISH, LOC_CTRL_REQUEST as LOC_REQUEST,
    LOC_STS_GRANTED as LOC_GRANTED, REQ_CMD_READY, REQ_GO_IDLE, STS_FATAL,
};
/// A TPM 2.0 command or response header: tag u16, size u32, code u32 (big-endian).
pub const HEADER_LEN: usize = 10;
/// The longest wait for one step (locality, readiness, a command's completion).
pub const TIMEOUT_MS: u64 = 30_000;

/// Why a TPM command did not produce a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmError {
    /// Locality 0 was not granted in time.
    NoLocality,
    /// The TPM did not become ready for a command in time.
    NotReady,
    /// The command did not complete in time.
    Timeout,
    /// The interface reports a fatal error (`CTRL_STS.tpmSts`).
    Fatal,
    /// The command/response buffer is not inside the TPM's window, or too small.
    BadBuffer,
    /// The response is malformed (tag, or a size outside `10..=buffer`).
    BadResponse {
        /// Its size field.
        size: u32,
    },
}

impl core::fmt::Display for TpmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TpmError::NoLocality => f.write_str("locality 0 not granted in time"),
            TpmError::NotReady => f.write_str("the TPM did not become ready in time"),
            TpmError::Timeout => f.write_str("the command did not complete in time"),
            TpmError::Fatal => f.write_str("the TPM reports a fatal error (CTRL_STS.tpmSts)"),
            TpmError::BadBuffer => {
                f.write_str("the command/response buffer is not inside the CRB window")
            }
            TpmError::BadResponse { size } => {
                write!(f, "malformed response (size field {size})")
            }
        }
    }
}

/// The TPM's CRB interface, locality 0 held.
pub struct Crb {
    /// Offset of the command/response buffer in the window.
    data: u64,
    /// Its usable length.
    len: usize,
}

fn read(off: u64) -> u32 {
    // SAFETY: the stub maps the CRB window (4 KiB at TPM_CRB_GPA) user read-write,
    // uncached; every offset used here is below TPM_CRB_SIZE and 4-byte aligned.
    unsafe { read_volatile((TPM_CRB_GPA + off) as *const u32) }
}

fn write(off: u64, v: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile((TPM_CRB_GPA + off) as *mut u32, v) }
}

/// Polls until `done(register)` or the deadline; the register's last value.
fn wait(off: u64, done: impl Fn(u32) -> bool, err: TpmError) -> Result<u32, TpmError> {
    let deadline = crate::clock::now_ms().saturating_add(TIMEOUT_MS);
    loop {
        let v = read(off);
        if done(v) {
            return Ok(v);
        }
        if crate::clock::now_ms() > deadline {
            return Err(err);
        }
        core::hint::spin_loop();
    }
}

impl Crb {
    /// Takes locality 0 and checks the command/response buffer: one buffer for both,
    /// inside the window, at least one 4-byte word past the header.
    pub fn open() -> Result<Crb, TpmError> {
        write(reg::LOC_CTRL, LOC_REQUEST);
        wait(reg::LOC_STS, |v| v & LOC_GRANTED != 0, TpmError::NoLocality)?;
        let cmd = u64::from(read(reg::CMD_LADDR)) | (u64::from(read(reg::CMD_HADDR)) << 32);
        let rsp = u64::from(read(reg::RSP_ADDR)) | (u64::from(read(reg::RSP_ADDR_HI)) << 32);
        let (cmd_size, rsp_size) = (read(reg::CMD_SIZE), read(reg::RSP_SIZE));
        let data = cmd.wrapping_sub(TPM_CRB_GPA);
        let len = cmd_size.min(rsp_size) as u64;
        // The registers end at 0x80 on this interface; the buffer follows them.
        if cmd != rsp
            || !(0x80..TPM_CRB_SIZE).contains(&data)
            || len < 64
            || len > TPM_CRB_SIZE - data
        {
            return Err(TpmError::BadBuffer);
        }
        Ok(Crb {
            data,
            len: (len as usize) & !3,
        })
    }

    /// Sends `cmd` and reads the response into `rsp`; returns the response's length
    /// (its header's size, checked against both buffers). A response code other than
    /// success is the caller's to judge ([`response_code`]).
    pub fn command(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TpmError> {
        if cmd.len() < HEADER_LEN || cmd.len() > self.len {
            return Err(TpmError::BadBuffer);
        }
        write(reg::CTRL_REQ, REQ_CMD_READY);
        wait(
            reg::CTRL_REQ,
            |v| v & REQ_CMD_READY == 0,
            TpmError::NotReady,
        )?;
        if read(reg::CTRL_STS) & STS_FATAL != 0 {
            return Err(TpmError::Fatal);
        }
        for (i, chunk) in cmd.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            write(self.data + 4 * i as u64, u32::from_le_bytes(w));
        }
        write(reg::CTRL_START, 1);
        wait(reg::CTRL_START, |v| v & 1 == 0, TpmError::Timeout)?;
        if read(reg::CTRL_STS) & STS_FATAL != 0 {
            return Err(TpmError::Fatal);
        }
        let mut head = [0u8; 12];
        for (i, w) in head.chunks_mut(4).enumerate() {
            w.copy_from_slice(&read(self.data + 4 * i as u64).to_le_bytes());
        }
        let tag = u16::from_be_bytes([head[0], head[1]]);
        let size = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        let n = size as usize;
        if !(tag == 0x8001 || tag == 0x8002) || n < HEADER_LEN || n > self.len || n > rsp.len() {
            return Err(TpmError::BadResponse { size });
        }
        for (i, w) in rsp[..n].chunks_mut(4).enumerate() {
            let v = read(self.data + 4 * i as u64).to_le_bytes();
            w.copy_from_slice(&v[..w.len()]);
        }
        Ok(n)
    }

    /// Leaves the TPM idle and gives locality 0 back, as an OS's driver expects to
    /// find it.
    pub fn close(self) {
        write(reg::CTRL_REQ, REQ_GO_IDLE);
        write(reg::LOC_CTRL, LOC_RELINQUISH);
    }
}

/// The response code of a response read by [`Crb::command`] (at least a header).
pub fn response_code(rsp: &[u8]) -> u32 {
    match rsp.get(6..10) {
        Some(c) => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
        None => u32::MAX,
    }
}
