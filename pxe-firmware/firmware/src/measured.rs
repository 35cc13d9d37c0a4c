//! Measured boot into the VM's own TPM (only for a VM whose configuration page has the
//! TPM flag): `TPM2_Startup(CLEAR)`, the extends of `tvp_abi::tcg_log`'s plan, each
//! one logged in the TCG event log at `TPM_EVENT_LOG_GPA` before it is extended, and
//! after the last one the platform hierarchy disabled (`docs/pcr-plan.md`, "The VM's
//! own TPM").

use crate::tpm::{response_code, Crb, TpmError, HEADER_LEN};
use core::fmt;
use tvp_abi::layout::{TPM_EVENT_LOG_GPA, TPM_EVENT_LOG_SIZE};
use tvp_abi::tcg_log::{self, PlannedEvent};

/// `TPM_RH_PLATFORM`.
const RH_PLATFORM: u32 = 0x4000_000c;
/// `TPM_RS_PW`: the password session, with the empty password.
const RS_PW: u32 = 0x4000_0009;
/// Response buffer for these commands (their responses are at most a few dozen bytes).
const RSP_MAX: usize = 256;

/// Why the measured boot cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasuredError {
    /// The TPM interface failed.
    Tpm(TpmError),
    /// The TPM refused a command: what it was and its response code.
    Refused(&'static str, u32),
    /// The event log area is full.
    LogFull,
    /// A response does not parse: which.
    Malformed(&'static str),
}

impl fmt::Display for MeasuredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasuredError::Tpm(e) => write!(f, "TPM interface: {e}"),
            MeasuredError::Refused(what, rc) => write!(f, "{what} refused, TPM rc={rc:#x}"),
            MeasuredError::LogFull => f.write_str("the event log area is full"),
            MeasuredError::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

impl From<TpmError> for MeasuredError {
    fn from(e: TpmError) -> Self {
        MeasuredError::Tpm(e)
    }
}

/// The event log area, written front to back.
struct EventLog {
    area: &'static mut [u8],
    len: usize,
}

impl EventLog {
    /// Clears the area and writes the Spec ID header.
    fn new() -> EventLog {
        // SAFETY: the stub maps [TPM_EVENT_LOG_GPA, +TPM_EVENT_LOG_SIZE) user
        // read-write for this program; nothing else in the firmware uses it, no device
        // may write it (tvp-vmm's DMA policy), and this is its only reference (created
        // once, by `MeasuredBoot::start`).
        let area = unsafe {
            core::slice::from_raw_parts_mut(
                TPM_EVENT_LOG_GPA as *mut u8,
                TPM_EVENT_LOG_SIZE as usize,
            )
        };
        area.fill(0);
        let h = tcg_log::header();
        area[..h.len()].copy_from_slice(&h);
        EventLog { len: h.len(), area }
    }

    fn append(&mut self, e: &PlannedEvent) -> Result<(), MeasuredError> {
        let out = self
            .area
            .get_mut(self.len..)
            .ok_or(MeasuredError::LogFull)?;
        let n = tcg_log::encode_event(e.pcr, e.event_type, &e.digest, e.data, out)
            .ok_or(MeasuredError::LogFull)?;
        self.len += n;
        Ok(())
    }
}

/// The VM's TPM, started, with its event log.
pub struct MeasuredBoot {
    crb: Crb,
    log: EventLog,
}

impl MeasuredBoot {
    /// Starts the TPM (`TPM2_Startup(CLEAR)`: a TPM already started, whose PCRs might
    /// hold anything, is refused) and measures the firmware, the ACPI tables, the
    /// configuration page and the boot region.
    pub fn start(
        firmware: [u8; 32],
        acpi_tables: [u8; 32],
        config_page: [u8; 32],
        boot_region: [u8; 32],
    ) -> Result<MeasuredBoot, MeasuredError> {
        let mut crb = Crb::open()?;
        run(
            &mut crb,
            "TPM2_Startup(CLEAR)",
            &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0],
        )?;
        let mut m = MeasuredBoot {
            crb,
            log: EventLog::new(),
        };
        for e in tcg_log::start_events(firmware, acpi_tables, config_page, boot_region) {
            m.measure(&e)?;
        }
        Ok(m)
    }

    /// Measures the workload (its payload's digest) and the separators, disables the
    /// platform hierarchy and leaves the TPM idle for the OS. Returns the log's length.
    pub fn finish(mut self, workload: [u8; 32]) -> Result<usize, MeasuredError> {
        for e in tcg_log::handover_events(workload) {
            self.measure(&e)?;
        }
        // TPM2_HierarchyControl(TPM_RH_PLATFORM, enable TPM_RH_PLATFORM, NO) with the
        // empty platform authorization: the guest OS can then neither change the
        // platform's seeds nor undefine platform NV indices.
        let mut cmd = [0u8; 32];
        cmd[..10].copy_from_slice(&[0x80, 0x02, 0, 0, 0, 32, 0, 0, 0x01, 0x21]);
        cmd[10..14].copy_from_slice(&RH_PLATFORM.to_be_bytes());
        cmd[14..18].copy_from_slice(&9u32.to_be_bytes());
        cmd[18..22].copy_from_slice(&RS_PW.to_be_bytes());
        // nonce (empty), attributes 0, hmac (empty): cmd[22..27] = 0.
        cmd[27..31].copy_from_slice(&RH_PLATFORM.to_be_bytes());
        cmd[31] = 0;
        run(&mut self.crb, "TPM2_HierarchyControl(platform, NO)", &cmd)?;
        let len = self.log.len;
        self.crb.close();
        Ok(len)
    }

    /// The deep evidence's quote at step 4 of the boot protocol: tvp's AK re-created,
    /// PCRs 0 and 1 quoted over `qualifying`, the AK flushed; the VtpmQuote payload in
    /// `out` ([`crate::tpm_quote`]). Returns its length.
    pub fn quote(&mut self, qualifying: &[u8; 32], out: &mut [u8]) -> Result<usize, MeasuredError> {
        crate::tpm_quote::quote_boot(&mut self.crb, qualifying, out)
    }

    /// Logs `e`, then extends it (a log entry without its extend fails the boot; the
    /// log never lacks an extend that happened).
    fn measure(&mut self, e: &PlannedEvent) -> Result<(), MeasuredError> {
        self.log.append(e)?;
        let mut cmd = [0u8; 65];
        cmd[..10].copy_from_slice(&[0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x82]);
        cmd[10..14].copy_from_slice(&e.pcr.to_be_bytes());
        cmd[14..18].copy_from_slice(&9u32.to_be_bytes());
        cmd[18..22].copy_from_slice(&RS_PW.to_be_bytes());
        // cmd[22..27]: empty nonce, attributes 0, empty hmac.
        cmd[27..31].copy_from_slice(&1u32.to_be_bytes());
        cmd[31..33].copy_from_slice(&tcg_log::TPM_ALG_SHA256.to_be_bytes());
        cmd[33..65].copy_from_slice(&e.digest);
        run(&mut self.crb, "TPM2_PCR_Extend", &cmd)
    }
}

/// Runs `cmd` and requires `TPM_RC_SUCCESS`.
fn run(crb: &mut Crb, what: &'static str, cmd: &[u8]) -> Result<(), MeasuredError> {
    let mut rsp = [0u8; RSP_MAX];
    let n = crb.command(cmd, &mut rsp)?;
    let rc = response_code(&rsp[..n.max(HEADER_LEN)]);
    if rc != 0 {
        return Err(MeasuredError::Refused(what, rc));
    }
    Ok(())
}
