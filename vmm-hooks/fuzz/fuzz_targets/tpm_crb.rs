//! tvp-vmm's TPM CRB device driven by a hostile guest: a sequence of MMIO reads and
//! writes of any width anywhere in (and around) the window, `START` among them, with a
//! TPM that answers anything: a response of any length and size field, or an error.
//! Invariants beyond no panic:
//! - the TPM sees only commands of 10..=3968 bytes whose size field is their length,
//!   and only while the guest holds the locality;
//! - after a TPM error the TPM is never asked again;
//! - the address and size registers always point at the device's own buffer;
//! - a response is either the TPM's (when well formed and within the buffer) or a
//!   10-byte error, never longer than the buffer.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};
use tvp_abi::layout::{TPM_CRB_GPA, TPM_CRB_SIZE};
use tvp_vmm::tpm_crb::{reg, BackendError, StreamBackend, TpmBackend, TpmCrb, DATA_LEN};

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        off: u16,
        width: u8,
    },
    Write {
        off: u16,
        data: Vec<u8>,
    },
    /// A well-formed command of `len` bytes, then START.
    Command {
        len: u16,
        fill: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
    /// The TPM's answers, in turn: raw bytes a stream would carry (None: an I/O error).
    answers: Vec<Option<Vec<u8>>>,
}

#[derive(Default)]
struct Seen {
    commands: Vec<Vec<u8>>,
    failed: bool,
}

/// A TPM that answers what the input says, through the real stream backend's checks.
struct Scripted {
    answers: std::vec::IntoIter<Option<Vec<u8>>>,
    seen: Arc<Mutex<Seen>>,
}

impl TpmBackend for Scripted {
    fn execute(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, BackendError> {
        let mut seen = self.seen.lock().unwrap();
        assert!(!seen.failed, "a failed TPM was asked again");
        assert!((10..=DATA_LEN).contains(&cmd.len()), "{} bytes", cmd.len());
        let size = u32::from_be_bytes([cmd[2], cmd[3], cmd[4], cmd[5]]) as usize;
        assert_eq!(size, cmd.len(), "the size field is the command's length");
        seen.commands.push(cmd.to_vec());
        let r = match self.answers.next().flatten() {
            Some(bytes) => {
                StreamBackend::new(Duplex(std::io::Cursor::new(bytes))).execute(cmd, rsp)
            }
            None => Err(BackendError::Io(std::io::ErrorKind::TimedOut.into())),
        };
        if r.is_err() {
            seen.failed = true;
        }
        if let Ok(n) = &r {
            assert!(*n <= rsp.len());
        }
        r
    }
}

struct Duplex(std::io::Cursor<Vec<u8>>);

impl std::io::Read for Duplex {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}

impl std::io::Write for Duplex {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn r32(dev: &mut TpmCrb, off: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.mmio_read(TPM_CRB_GPA + off, &mut b);
    u32::from_le_bytes(b)
}

fuzz_target!(|input: Input| {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut dev = TpmCrb::new(Box::new(Scripted {
        answers: input.answers.into_iter(),
        seen: seen.clone(),
    }));
    let data = TPM_CRB_GPA + 0x80;
    for op in input.ops.into_iter().take(256) {
        match op {
            Op::Read { off, width } => {
                let mut b = vec![0u8; usize::from(width % 9)];
                dev.mmio_read(TPM_CRB_GPA + u64::from(off) % (TPM_CRB_SIZE + 16), &mut b);
            }
            Op::Write { off, data } => {
                let d = &data[..data.len().min(8)];
                dev.mmio_write(TPM_CRB_GPA + u64::from(off) % (TPM_CRB_SIZE + 16), d);
            }
            Op::Command { len, fill } => {
                let len = usize::from(len).clamp(10, DATA_LEN + 64);
                let mut cmd = vec![fill; len];
                cmd[..2].copy_from_slice(&[0x80, 0x01]);
                cmd[2..6].copy_from_slice(&(len as u32).to_be_bytes());
                for (i, chunk) in cmd.chunks(8).enumerate() {
                    dev.mmio_write(data + 8 * i as u64, chunk);
                }
                let before = seen.lock().unwrap().commands.len();
                let held = r32(&mut dev, reg::LOC_STS) & 1 == 1;
                dev.mmio_write(TPM_CRB_GPA + reg::CTRL_START, &1u32.to_le_bytes());
                let after = seen.lock().unwrap().commands.len();
                if !held {
                    assert_eq!(before, after, "a command ran without the locality");
                }
                // The response header's size field never exceeds the buffer.
                let mut h = [0u8; 10];
                dev.mmio_read(data, &mut h);
                if held {
                    let size = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
                    assert!((10..=DATA_LEN).contains(&size), "response size {size}");
                }
                assert_eq!(r32(&mut dev, reg::CTRL_START), 0);
            }
        }
        assert_eq!(r32(&mut dev, reg::CMD_LADDR) as u64, data);
        assert_eq!(r32(&mut dev, reg::RSP_ADDR) as u64, data);
        assert_eq!(r32(&mut dev, reg::CMD_SIZE) as usize, DATA_LEN);
        assert_eq!(r32(&mut dev, reg::RSP_SIZE) as usize, DATA_LEN);
        assert_eq!(r32(&mut dev, reg::CMD_HADDR), 0);
    }
});
