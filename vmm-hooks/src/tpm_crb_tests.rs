//! The CRB register file and command path, driven as a hostile guest would, against a
//! fake backend (the real one, swtpm on real KVM: `tests/vtpm.rs`).

use super::*;
use std::sync::{Arc, Mutex};

const BASE: u64 = TPM_CRB_GPA;

/// Records every command; answers with `answer` or fails.
struct Fake {
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    answer: Option<Vec<u8>>,
}

impl TpmBackend for Fake {
    fn execute(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, BackendError> {
        self.seen.lock().unwrap().push(cmd.to_vec());
        match &self.answer {
            Some(a) => {
                rsp[..a.len()].copy_from_slice(a);
                Ok(a.len())
            }
            None => Err(BackendError::Io(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }
}

fn device(answer: Option<Vec<u8>>) -> (TpmCrb, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dev = TpmCrb::new(Box::new(Fake {
        seen: seen.clone(),
        answer,
    }));
    (dev, seen)
}

fn r32(dev: &mut TpmCrb, off: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.mmio_read(BASE + off, &mut b);
    u32::from_le_bytes(b)
}

fn w32(dev: &mut TpmCrb, off: u64, v: u32) {
    dev.mmio_write(BASE + off, &v.to_le_bytes());
}

/// TPM2_Startup(SU_CLEAR).
const STARTUP: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
/// A success response without parameters.
const OK: [u8; 10] = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0];

fn put(dev: &mut TpmCrb, cmd: &[u8]) {
    for (i, chunk) in cmd.chunks(8).enumerate() {
        dev.mmio_write(BASE + 0x80 + 8 * i as u64, chunk);
    }
}

fn response(dev: &mut TpmCrb, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for (i, b) in out.iter_mut().enumerate() {
        let mut one = [0u8; 1];
        dev.mmio_read(BASE + 0x80 + i as u64, &mut one);
        *b = one[0];
    }
    out
}

fn rc(dev: &mut TpmCrb) -> u32 {
    let r = response(dev, 10);
    u32::from_be_bytes([r[6], r[7], r[8], r[9]])
}

fn start(dev: &mut TpmCrb) {
    w32(dev, reg::CTRL_START, 1);
}

fn ready(dev: &mut TpmCrb) {
    w32(dev, reg::LOC_CTRL, 1);
    w32(dev, reg::CTRL_REQ, 1);
}

#[test]
fn the_registers_describe_a_crb_whose_buffer_is_in_the_window() {
    let (mut dev, _) = device(Some(OK.to_vec()));
    let id = r32(&mut dev, reg::INTF_ID);
    assert_eq!(id & 0xf, 1, "InterfaceType CRB");
    assert_eq!((id >> 4) & 0xf, 1, "InterfaceVersion CRB");
    assert_ne!(id & (1 << 14), 0, "CapCRB");
    assert_eq!((id >> 17) & 3, 1, "InterfaceSelector CRB");
    let mut b = [0u8; 8];
    dev.mmio_read(BASE + reg::RSP_ADDR, &mut b);
    assert_eq!(u64::from_le_bytes(b), BASE + 0x80);
    assert_eq!(r32(&mut dev, reg::CMD_LADDR), (BASE + 0x80) as u32);
    assert_eq!(r32(&mut dev, reg::CMD_HADDR), 0);
    assert_eq!(r32(&mut dev, reg::CMD_SIZE) as usize, DATA_LEN);
    assert_eq!(r32(&mut dev, reg::RSP_SIZE) as usize, DATA_LEN);
    // The guest cannot move the buffer (onto its RAM, say).
    w32(&mut dev, reg::CMD_LADDR, 0x1000);
    w32(&mut dev, reg::RSP_ADDR, 0x1000);
    assert_eq!(r32(&mut dev, reg::CMD_LADDR), (BASE + 0x80) as u32);
    assert_eq!(r32(&mut dev, reg::RSP_ADDR), (BASE + 0x80) as u32);
    // Locality 0 and the idle state.
    assert_eq!(r32(&mut dev, reg::LOC_STS), 0);
    assert_eq!(r32(&mut dev, reg::LOC_STATE) & 0x82, 0x80);
    w32(&mut dev, reg::LOC_CTRL, 1);
    assert_eq!(r32(&mut dev, reg::LOC_STS), 1);
    assert_eq!(r32(&mut dev, reg::LOC_STATE) & 0x82, 0x82);
    assert_eq!(r32(&mut dev, reg::CTRL_STS), 2, "idle");
    w32(&mut dev, reg::CTRL_REQ, 1);
    assert_eq!(r32(&mut dev, reg::CTRL_STS), 0, "ready");
    w32(&mut dev, reg::CTRL_REQ, 2);
    assert_eq!(r32(&mut dev, reg::CTRL_STS), 2, "idle again");
    w32(&mut dev, reg::LOC_CTRL, 2);
    assert_eq!(r32(&mut dev, reg::LOC_STS), 0);
}

#[test]
fn a_command_reaches_the_tpm_and_its_response_the_buffer() {
    let (mut dev, seen) = device(Some(OK.to_vec()));
    ready(&mut dev);
    put(&mut dev, &STARTUP);
    start(&mut dev);
    assert_eq!(
        r32(&mut dev, reg::CTRL_START),
        0,
        "done when START's write is"
    );
    assert_eq!(seen.lock().unwrap().as_slice(), [STARTUP.to_vec()]);
    assert_eq!(response(&mut dev, 12), [&OK[..], &[0, 0]].concat());
    assert_eq!(dev.stats().commands, 1);
}

#[test]
fn commands_of_a_bad_size_or_without_the_locality_never_reach_the_tpm() {
    let (mut dev, seen) = device(Some(OK.to_vec()));
    // START without the locality: ignored.
    put(&mut dev, &STARTUP);
    start(&mut dev);
    assert!(seen.lock().unwrap().is_empty());
    ready(&mut dev);
    for size in [0u32, 9, DATA_LEN as u32 + 1, u32::MAX] {
        let mut cmd = STARTUP;
        cmd[2..6].copy_from_slice(&size.to_be_bytes());
        put(&mut dev, &cmd);
        start(&mut dev);
        assert_eq!(rc(&mut dev), RC_COMMAND_SIZE, "size {size}");
    }
    // Writes past the buffer's end are dropped, reads there are zero.
    dev.mmio_write(BASE + TPM_CRB_SIZE - 2, &[0xaa; 8]);
    let mut b = [0xffu8; 8];
    dev.mmio_read(BASE + TPM_CRB_SIZE - 2, &mut b);
    assert_eq!(b, [0xaa, 0xaa, 0, 0, 0, 0, 0, 0]);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(dev.stats().refused, 4);
}

#[test]
fn a_failed_tpm_fails_the_device_and_later_commands_get_tpm_rc_failure() {
    let (mut dev, seen) = device(None);
    ready(&mut dev);
    put(&mut dev, &STARTUP);
    start(&mut dev);
    assert_eq!(rc(&mut dev), RC_FAILURE);
    assert!(dev.failed());
    assert_eq!(r32(&mut dev, reg::CTRL_STS) & 1, 1, "tpmSts: fatal error");
    put(&mut dev, &STARTUP);
    start(&mut dev);
    assert_eq!(rc(&mut dev), RC_FAILURE);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a failed TPM is not asked again"
    );
}

/// A duplex in memory: what the backend writes is kept, what it reads is `input`.
struct Duplex {
    input: std::io::Cursor<Vec<u8>>,
    written: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(b)
    }
}

impl Write for Duplex {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn stream(input: Vec<u8>) -> StreamBackend<Duplex> {
    StreamBackend::new(Duplex {
        input: std::io::Cursor::new(input),
        written: Vec::new(),
    })
}

#[test]
fn the_stream_backend_checks_what_the_tpm_answers() {
    let mut rsp = [0u8; DATA_LEN];
    let mut b = stream([&OK[..], &[9, 9]].concat());
    assert_eq!(b.execute(&STARTUP, &mut rsp).unwrap(), 10);
    assert_eq!(b.stream.written, STARTUP);
    assert_eq!(&rsp[..10], &OK);
    // A size field below the header, beyond the buffer, or a response cut short.
    let mut small = OK;
    small[5] = 9;
    let mut big = OK;
    big[2..6].copy_from_slice(&(DATA_LEN as u32 + 1).to_be_bytes());
    let mut short = OK.to_vec();
    short[5] = 20;
    for bad in [small.to_vec(), big.to_vec(), short, OK[..6].to_vec()] {
        assert!(
            stream(bad.clone()).execute(&STARTUP, &mut rsp).is_err(),
            "{bad:?}"
        );
    }
    // Through the device: a malformed answer is TPM_RC_FAILURE, never its bytes.
    let mut dev = TpmCrb::new(Box::new(stream(big.to_vec())));
    ready(&mut dev);
    put(&mut dev, &STARTUP);
    start(&mut dev);
    assert_eq!(rc(&mut dev), RC_FAILURE);
}
