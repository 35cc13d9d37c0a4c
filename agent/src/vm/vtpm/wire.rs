//! The few raw TPM 2.0 commands tvpd sends to a VM's swtpm while it provisions it
//! (`provision.rs`), marshalled by hand: the swtpm is reached over a socketpair, which
//! no TCTI of the host's TPM stack speaks, and tvpd needs only these.
//!
//! Every response is bounded ([`MAX_RESPONSE`]), its size field checked, and a TPM
//! error code comes back as [`WireError::Tpm`] naming the command.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// TPM_ST_NO_SESSIONS.
const ST_NO_SESSIONS: u16 = 0x8001;
/// TPM_ST_SESSIONS.
const ST_SESSIONS: u16 = 0x8002;
/// TPM_RS_PW: the password session (empty authorization).
const RS_PW: u32 = 0x4000_0009;
/// TPM_RH_ENDORSEMENT.
pub const RH_ENDORSEMENT: u32 = 0x4000_000b;
/// TPM_RH_PLATFORM.
pub const RH_PLATFORM: u32 = 0x4000_000c;
/// TPM_ALG_SHA256.
const ALG_SHA256: u16 = 0x000b;
/// The largest response tvpd reads (swtpm's buffers are 4 KiB).
pub const MAX_RESPONSE: usize = 4096;
/// The largest chunk one TPM2_NV_Write carries (MAX_NV_BUFFER_SIZE of libtpms is 1024).
const NV_CHUNK: usize = 1024;

/// NV attributes of an EK certificate index, as the TCG EK Credential Profile and
/// swtpm_setup define them: platform-created, written by the platform only and locked
/// by TPM2_NV_WriteLock, readable by owner, platform and with its own (empty) auth, no
/// dictionary-attack lockout.
pub const NV_EK_CERT_ATTRIBUTES: u32 = 0x0000_0001 // PPWRITE
    | 0x0000_2000 // WRITEDEFINE
    | 0x0001_0000 // PPREAD
    | 0x0002_0000 // OWNERREAD
    | 0x0004_0000 // AUTHREAD
    | 0x0200_0000 // NO_DA
    | 0x4000_0000; // PLATFORMCREATE

/// Why a command to the VM's TPM failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("{command}: {source}")]
    Io {
        command: &'static str,
        source: std::io::Error,
    },
    /// The TPM answered with an error code.
    #[error("{command}: TPM error {rc:#x}")]
    Tpm { command: &'static str, rc: u32 },
    /// The response is not what the command returns.
    #[error("{command}: malformed response: {reason}")]
    Malformed {
        command: &'static str,
        reason: &'static str,
    },
}

/// A command under construction.
struct Cmd {
    buf: Vec<u8>,
}

impl Cmd {
    fn new(tag: u16, code: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend(tag.to_be_bytes());
        buf.extend([0u8; 4]);
        buf.extend(code.to_be_bytes());
        Cmd { buf }
    }
    fn u16(mut self, v: u16) -> Self {
        self.buf.extend(v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.buf.extend(v.to_be_bytes());
        self
    }
    fn tpm2b(mut self, v: &[u8]) -> Self {
        // Callers pass at most a few KiB; the TPM refuses anything it finds too long.
        self.buf.extend((v.len() as u16).to_be_bytes());
        self.buf.extend(v);
        self
    }
    /// The authorization area with one empty password session.
    fn password(self) -> Self {
        self.u32(9).u32(RS_PW).u16(0).buf_byte(0).u16(0)
    }
    fn buf_byte(mut self, b: u8) -> Self {
        self.buf.push(b);
        self
    }
    fn done(mut self) -> Vec<u8> {
        let len = (self.buf.len() as u32).to_be_bytes();
        self.buf[2..6].copy_from_slice(&len);
        self.buf
    }
}

/// One VM TPM reached over its socket.
pub struct VmTpm {
    sock: UnixStream,
}

impl VmTpm {
    /// Talk to the TPM on `sock` (a connected stream; reads time out after `timeout`).
    pub fn new(sock: UnixStream, timeout: std::time::Duration) -> Result<Self, WireError> {
        sock.set_read_timeout(Some(timeout))
            .map_err(|source| WireError::Io {
                command: "socket",
                source,
            })?;
        Ok(VmTpm { sock })
    }

    /// Send `cmd`, return the response's bytes after its 10-byte header, or the error.
    fn call(&mut self, command: &'static str, cmd: &[u8]) -> Result<Vec<u8>, WireError> {
        let io = |source| WireError::Io { command, source };
        self.sock.write_all(cmd).map_err(io)?;
        let mut head = [0u8; 10];
        self.sock.read_exact(&mut head).map_err(io)?;
        let size = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let rc = u32::from_be_bytes([head[6], head[7], head[8], head[9]]);
        if !(10..=MAX_RESPONSE).contains(&size) {
            return Err(WireError::Malformed {
                command,
                reason: "response size out of range",
            });
        }
        let mut body = vec![0u8; size - 10];
        self.sock.read_exact(&mut body).map_err(io)?;
        if rc != 0 {
            return Err(WireError::Tpm { command, rc });
        }
        Ok(body)
    }

    /// TPM2_Startup(CLEAR).
    pub fn startup(&mut self) -> Result<(), WireError> {
        let c = Cmd::new(ST_NO_SESSIONS, 0x144).u16(0).done();
        self.call("TPM2_Startup", &c).map(drop)
    }

    /// TPM2_Shutdown(CLEAR): the state is saved before the swtpm ends.
    pub fn shutdown(&mut self) -> Result<(), WireError> {
        let c = Cmd::new(ST_NO_SESSIONS, 0x145).u16(0).done();
        self.call("TPM2_Shutdown", &c).map(drop)
    }

    /// TPM2_CreatePrimary in `hierarchy` from `template` (a TPMT_PUBLIC), empty auth:
    /// the object's handle and its TPMT_PUBLIC as the TPM made it.
    pub fn create_primary(
        &mut self,
        hierarchy: u32,
        template: &[u8],
    ) -> Result<(u32, Vec<u8>), WireError> {
        const C: &str = "TPM2_CreatePrimary";
        let c = Cmd::new(ST_SESSIONS, 0x131)
            .u32(hierarchy)
            .password()
            .tpm2b(&[0, 0, 0, 0]) // TPMS_SENSITIVE_CREATE: empty userAuth and data
            .tpm2b(template)
            .u16(0) // outsideInfo
            .u32(0) // creationPCR: none
            .done();
        let body = self.call(C, &c)?;
        let bad = |reason| WireError::Malformed { command: C, reason };
        // objectHandle, parameterSize, then outPublic (TPM2B_PUBLIC).
        let handle = body
            .get(0..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(bad("no handle"))?;
        let len = body
            .get(8..10)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or(bad("no outPublic"))?;
        let public = body.get(10..10 + len).ok_or(bad("outPublic truncated"))?;
        Ok((handle, public.to_vec()))
    }

    /// TPM2_Clear with the platform's (empty) authorization.
    pub fn clear_platform(&mut self) -> Result<(), WireError> {
        let c = Cmd::new(ST_SESSIONS, 0x126)
            .u32(RH_PLATFORM)
            .password()
            .done();
        self.call("TPM2_Clear", &c).map(drop)
    }

    /// TPM2_FlushContext.
    pub fn flush(&mut self, handle: u32) -> Result<(), WireError> {
        let c = Cmd::new(ST_NO_SESSIONS, 0x165).u32(handle).done();
        self.call("TPM2_FlushContext", &c).map(drop)
    }

    /// Define NV index `index` of `size` bytes with `attributes` under the platform
    /// hierarchy (empty platform auth: before the guest's firmware runs).
    pub fn nv_define_platform(
        &mut self,
        index: u32,
        attributes: u32,
        size: u16,
    ) -> Result<(), WireError> {
        let mut public = Vec::with_capacity(14);
        public.extend(index.to_be_bytes());
        public.extend(ALG_SHA256.to_be_bytes());
        public.extend(attributes.to_be_bytes());
        public.extend(0u16.to_be_bytes()); // authPolicy: none
        public.extend(size.to_be_bytes());
        let c = Cmd::new(ST_SESSIONS, 0x12a)
            .u32(RH_PLATFORM)
            .password()
            .u16(0) // auth: empty
            .tpm2b(&public)
            .done();
        self.call("TPM2_NV_DefineSpace", &c).map(drop)
    }

    /// Write `data` into platform-written NV index `index` from offset 0, in chunks.
    pub fn nv_write_platform(&mut self, index: u32, data: &[u8]) -> Result<(), WireError> {
        for (i, chunk) in data.chunks(NV_CHUNK).enumerate() {
            let c = Cmd::new(ST_SESSIONS, 0x137)
                .u32(RH_PLATFORM)
                .u32(index)
                .password()
                .tpm2b(chunk)
                .u16((i * NV_CHUNK) as u16)
                .done();
            self.call("TPM2_NV_Write", &c)?;
        }
        Ok(())
    }

    /// TPM2_NV_WriteLock by the platform: the index stays read-only for good
    /// (WRITEDEFINE).
    pub fn nv_write_lock_platform(&mut self, index: u32) -> Result<(), WireError> {
        let c = Cmd::new(ST_SESSIONS, 0x138)
            .u32(RH_PLATFORM)
            .u32(index)
            .password()
            .done();
        self.call("TPM2_NV_WriteLock", &c).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_carry_their_size_and_one_empty_password_session() {
        let c = Cmd::new(ST_SESSIONS, 0x138)
            .u32(RH_PLATFORM)
            .u32(0x01c0_000a)
            .password()
            .done();
        assert_eq!(
            hex::encode(&c),
            "80020000001f00000138\
             4000000c01c0000a\
             00000009400000090000000000"
        );
        assert_eq!(c.len(), 0x1f);
    }

    /// A peer answering `response` to any command.
    fn answering(response: Vec<u8>) -> VmTpm {
        let (a, mut b) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let _ = b.read(&mut buf);
            let _ = b.write_all(&response);
        });
        VmTpm::new(a, std::time::Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn error_codes_and_oversized_or_truncated_responses_are_refused() {
        let mut t = answering(vec![0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x84]);
        assert!(matches!(
            t.startup(),
            Err(WireError::Tpm {
                command: "TPM2_Startup",
                rc: 0x184
            })
        ));
        let mut t = answering(vec![0x80, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert!(matches!(t.startup(), Err(WireError::Malformed { .. })));
        // CreatePrimary whose outPublic claims more than was sent.
        let mut r = vec![0x80, 2, 0, 0, 0, 22, 0, 0, 0, 0];
        r.extend([0x80, 0, 0, 0, 0, 0, 0, 9, 0, 50]);
        r.extend([0u8; 2]);
        let mut t = answering(r);
        assert!(matches!(
            t.create_primary(RH_ENDORSEMENT, &[]),
            Err(WireError::Malformed {
                reason: "outPublic truncated",
                ..
            })
        ));
    }
}
