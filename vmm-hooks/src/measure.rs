//! The measurement hook: digests of exactly the bytes the VMM places in guest memory
//! (and of the initial vCPU state), in the order of `tvp_abi::measure`.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use tvp_abi::measure::{self, EventType, EVENT_COUNT, SCHEME_TAG};

/// One event as reported to tvpd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// What was measured.
    pub event_type: EventType,
    /// SHA-256 of it.
    pub digest: [u8; 32],
    /// Human-readable description.
    pub description: String,
}

/// Collects measurements in order while the VM is being built.
#[derive(Debug, Default)]
pub struct MeasurementLog {
    events: Vec<Measurement>,
}

impl MeasurementLog {
    /// A log that starts with the scheme event.
    pub fn new() -> Self {
        let mut log = MeasurementLog::default();
        log.record(
            EventType::Scheme,
            measure::sha256(SCHEME_TAG.as_bytes()),
            SCHEME_TAG.to_string(),
        );
        log
    }

    /// Records `bytes` (hashing them) as an event.
    pub fn measure(&mut self, event_type: EventType, bytes: &[u8], description: String) {
        let t = std::time::Instant::now();
        let digest = sha256(bytes);
        let secs = t.elapsed().as_secs_f64();
        log::debug!(event = event_type.name(), bytes = bytes.len(), seconds = format!("{secs:.6}"), mb_per_s = format!("{:.1}", bytes.len() as f64 / secs.max(1e-9) / 1e6); "hashed");
        self.record(event_type, digest, description);
    }

    /// Records a precomputed digest.
    pub fn record(&mut self, event_type: EventType, digest: [u8; 32], description: String) {
        log::info!(index = self.events.len(), event = event_type.name(), digest = hex::encode(digest), what = description.as_str(); "measured");
        self.events.push(Measurement {
            event_type,
            digest,
            description,
        });
    }

    /// The events so far.
    pub fn events(&self) -> &[Measurement] {
        &self.events
    }

    /// PCR 23 after replaying the events from zeros.
    pub fn pcr23(&self) -> [u8; 32] {
        measure::replay(self.events.iter().map(|e| &e.digest))
    }

    /// True when the log has the complete, ordered event set of `tvp_abi::measure`.
    pub fn is_complete(&self) -> bool {
        let order = [
            EventType::Scheme,
            EventType::FirmwareImage,
            EventType::ConfigPage,
            EventType::BootRegion,
            EventType::AcpiTables,
            EventType::VcpuState,
        ];
        self.events.len() == EVENT_COUNT
            && self
                .events
                .iter()
                .zip(order)
                .all(|(e, t)| e.event_type == t)
    }
}

/// SHA-256 of a buffer (SHA-NI accelerated where the CPU has it).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of a file, streamed in 1 MiB chunks (used by `tvp-vmm measure-file`).
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}
