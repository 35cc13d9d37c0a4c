//! The attestation mailbox, guest side (`docs/mailbox-abi.md`): requests encoded with
//! `tvp_abi`, written to the request block, doorbell, response read back.

use crate::port::outb;
use core::ptr;
use tvp_abi::layout::MAILBOX_GPA;
use tvp_abi::mailbox::{
    encode_request, parse_response_header, Command, ResponseHeader, Status, REQUEST_MAX,
    REQUEST_OFFSET, RESPONSE_HEADER_LEN, RESPONSE_OFFSET, VERSION_RESPONSE_LEN,
};
use tvp_abi::ports::MAILBOX_DOORBELL_PORT;

/// Why a mailbox call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxError {
    /// The request does not fit the request block.
    TooLarge,
    /// The response header is malformed or echoes another command.
    BadResponse,
    /// The platform answered with this status (and detail).
    Status(u32, u32),
}

/// A successful response: its header; the payload stays in the mailbox page.
pub type Response = ResponseHeader;

/// The mailbox at its fixed guest-physical address (mapped user read-write by the stub).
pub struct Mailbox {
    base: *mut u8,
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Mailbox {
    /// The platform's mailbox.
    pub fn new() -> Self {
        Mailbox {
            base: MAILBOX_GPA as *mut u8,
        }
    }

    /// Sends one request and returns the response header if the status is OK.
    pub fn call(&mut self, command: Command, payload: &[u8]) -> Result<Response, MailboxError> {
        let mut block = [0u8; REQUEST_MAX];
        let n =
            encode_request(command as u16, payload, &mut block).ok_or(MailboxError::TooLarge)?;
        // SAFETY: the mailbox region [MAILBOX_GPA, +MAILBOX_SIZE) is RAM the stub maps
        // user read-write for this program alone; the request block is its first 4 KiB
        // and `n <= REQUEST_MAX`. The `out` below is a compiler barrier (asm without
        // `nomem`), so the writes happen before the doorbell.
        unsafe { ptr::copy_nonoverlapping(block.as_ptr(), self.base.add(REQUEST_OFFSET), n) };
        outb(MAILBOX_DOORBELL_PORT, 1);
        let mut h = [0u8; RESPONSE_HEADER_LEN];
        // SAFETY: the response header lies inside the mailbox region (offset 0x1000);
        // the platform finished writing it before the doorbell `out` retired. Volatile
        // because the platform, not this program, wrote it.
        for (i, b) in h.iter_mut().enumerate() {
            *b = unsafe { ptr::read_volatile(self.base.add(RESPONSE_OFFSET + i)) };
        }
        let r = parse_response_header(&h).ok_or(MailboxError::BadResponse)?;
        if r.command != command as u16 {
            return Err(MailboxError::BadResponse);
        }
        if r.status != Status::Ok as u32 {
            return Err(MailboxError::Status(r.status, r.detail));
        }
        Ok(r)
    }

    /// Copies up to `out.len()` bytes of the last response's payload into `out`.
    pub fn payload(&self, r: &Response, out: &mut [u8]) -> usize {
        let n = out.len().min(r.payload_len as usize);
        for (i, b) in out[..n].iter_mut().enumerate() {
            // SAFETY: payload_len <= RESPONSE_PAYLOAD_MAX (checked by the parser), so the
            // payload lies inside the mailbox region after the response header.
            *b = unsafe {
                ptr::read_volatile(self.base.add(RESPONSE_OFFSET + RESPONSE_HEADER_LEN + i))
            };
        }
        n
    }

    /// GET_VERSION: the platform's mailbox ABI version and, if it says, the TSC
    /// frequency in kHz.
    pub fn version(&mut self) -> Result<(u16, Option<u32>), MailboxError> {
        let r = self.call(Command::GetVersion, &[])?;
        let mut p = [0u8; VERSION_RESPONSE_LEN];
        if self.payload(&r, &mut p) != VERSION_RESPONSE_LEN {
            return Err(MailboxError::BadResponse);
        }
        Ok((
            u16::from_le_bytes([p[0], p[1]]),
            tvp_abi::mailbox::version_tsc_khz(&p),
        ))
    }

    /// GET_FIRMWARE_DIGEST: the SHA-256 of this firmware's ELF file as the platform
    /// measured it (PCR 23's `firmware-image`), for the VM's own TPM.
    pub fn firmware_digest(&mut self) -> Result<[u8; 32], MailboxError> {
        let r = self.call(Command::GetFirmwareDigest, &[])?;
        let mut d = [0u8; 32];
        if r.payload_len != 32 || self.payload(&r, &mut d) != 32 {
            return Err(MailboxError::BadResponse);
        }
        Ok(d)
    }

    /// BOOT_FAILED with `reason`.
    pub fn boot_failed(&mut self, reason: u32) -> Result<(), MailboxError> {
        self.call(Command::BootFailed, &reason.to_le_bytes())
            .map(|_| ())
    }

    /// TUNNEL_ESTABLISHED with the 32-byte tunnel measurement.
    pub fn tunnel_established(&mut self, measurement: &[u8; 32]) -> Result<(), MailboxError> {
        self.call(Command::TunnelEstablished, measurement)
            .map(|_| ())
    }

    /// QUOTE_REQUEST with `nonce`: the platform's evidence (tvpd's evidence JSON).
    pub fn quote(&mut self, nonce: &[u8]) -> Result<alloc::vec::Vec<u8>, MailboxError> {
        let r = self.call(Command::QuoteRequest, nonce)?;
        let mut ev = alloc::vec![0u8; r.payload_len as usize];
        let n = self.payload(&r, &mut ev);
        ev.truncate(n);
        Ok(ev)
    }

    /// HANDOVER with the digest of the workload about to run.
    pub fn handover(&mut self, digest: &[u8; 32]) -> Result<(), MailboxError> {
        self.call(Command::Handover, digest).map(|_| ())
    }
}
