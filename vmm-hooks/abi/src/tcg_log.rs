//! The VM's own TPM (page flag `FLAG_TPM`): what the firmware extends into its PCRs and
//! the TCG event log it leaves at [`crate::layout::TPM_EVENT_LOG_GPA`] for the guest OS
//! (`docs/pcr-plan.md`, "The VM's own TPM").
//!
//! The log is in the crypto-agile format of the TCG PC Client Platform Firmware
//! Profile: first a `TCG_PCR_EVENT` (SHA-1 layout, zero digest) of type
//! [`EV_NO_ACTION`] whose data is the `TCG_EfiSpecIDEvent` "Spec ID Event03" naming
//! SHA-256 as the only algorithm, then one `TCG_PCR_EVENT2` per extend:
//! `pcr u32 | type u32 | count u32 = 1 | alg u16 = 0x000b | digest (32) | size u32 | data`,
//! all little-endian. The rest of the area is zero, which ends the log for a reader.
//!
//! The firmware's events, in this order ([`plan`]):
//!
//! | PCR | type | data | digest |
//! |---|---|---|---|
//! | 0 | `EV_POST_CODE` | `tvp-firmware` | the firmware ELF file (PCR 23's `firmware-image`) |
//! | 0 | `EV_POST_CODE` | `ACPI DATA` | the ACPI region (PCR 23's `acpi-tables`) |
//! | 1 | `EV_PLATFORM_CONFIG_FLAGS` | `tvp-config-page` | the configuration page (`config-page`) |
//! | 1 | `EV_PLATFORM_CONFIG_FLAGS` | `tvp-boot-region` | the boot region (`boot-region`) |
//! | 4 | `EV_IPL` | `tvp-workload` | the verified workload's payload (the HANDOVER digest) |
//! | 0..=7 | `EV_SEPARATOR` | 4 zero bytes | SHA-256 of those 4 bytes |
//!
//! The first four at start, the rest after the workload verified and loaded, just
//! before the handover.

use crate::measure::{extend, sha256};
use crate::{wr_u16, wr_u32};

/// `EV_POST_CODE`: platform firmware code (and, by the profile, its ACPI tables).
pub const EV_POST_CODE: u32 = 0x1;
/// `EV_NO_ACTION`: not extended (the log header).
pub const EV_NO_ACTION: u32 = 0x3;
/// `EV_SEPARATOR`: the end of the pre-OS measurements of a PCR.
pub const EV_SEPARATOR: u32 = 0x4;
/// `EV_PLATFORM_CONFIG_FLAGS`: platform configuration.
pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0xa;
/// `EV_IPL`: the code the firmware loads and runs next (the initial program loader).
pub const EV_IPL: u32 = 0xd;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000b;

/// The firmware's PCR: its own code and the ACPI tables.
pub const PCR_FIRMWARE: u32 = 0;
/// The platform configuration's PCR: the configuration page and the boot region.
pub const PCR_CONFIG: u32 = 1;
/// The workload's PCR.
pub const PCR_WORKLOAD: u32 = 4;
/// PCRs `0..SEPARATED_PCRS` get an `EV_SEPARATOR` before the handover.
pub const SEPARATED_PCRS: u32 = 8;

/// The data of the firmware event.
pub const FIRMWARE_DATA: &[u8] = b"tvp-firmware";
/// The data of the ACPI tables event (the profile's string for ACPI tables).
pub const ACPI_DATA: &[u8] = b"ACPI DATA";
/// The data of the configuration page event.
pub const CONFIG_PAGE_DATA: &[u8] = b"tvp-config-page";
/// The data of the boot region event.
pub const BOOT_REGION_DATA: &[u8] = b"tvp-boot-region";
/// The data of the workload event.
pub const WORKLOAD_DATA: &[u8] = b"tvp-workload";
/// The data of a separator (success: four zero bytes).
pub const SEPARATOR_DATA: [u8; 4] = [0; 4];

/// Length of the log header (`TCG_PCR_EVENT` with the 33-byte Spec ID event).
pub const HEADER_LEN: usize = 32 + SPEC_ID_LEN;
/// Length of the Spec ID event data with one algorithm and no vendor data.
const SPEC_ID_LEN: usize = 16 + 4 + 4 + 4 + 4 + 1;

/// The log header: the `TCG_PCR_EVENT` carrying "Spec ID Event03" (platform class
/// client, spec 2.0 errata 0, UINTN 64-bit, one algorithm: SHA-256 of 32 bytes).
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    // pcrIndex 0, eventType EV_NO_ACTION, digest: 20 zero bytes.
    wr_u32(&mut h, 4, EV_NO_ACTION);
    wr_u32(&mut h, 28, SPEC_ID_LEN as u32);
    let s = &mut h[32..];
    s[..16].copy_from_slice(b"Spec ID Event03\0");
    wr_u32(s, 16, 0); // platformClass: client
    s[20] = 0; // specVersionMinor
    s[21] = 2; // specVersionMajor
    s[22] = 0; // specErrata
    s[23] = 2; // uintnSize: UINT64
    wr_u32(s, 24, 1); // numberOfAlgorithms
    wr_u16(s, 28, TPM_ALG_SHA256);
    wr_u16(s, 30, 32);
    s[32] = 0; // vendorInfoSize
    h
}

/// Length of a `TCG_PCR_EVENT2` with one SHA-256 digest and `data_len` bytes of data.
pub const fn event_len(data_len: usize) -> usize {
    4 + 4 + 4 + 2 + 32 + 4 + data_len
}

/// Writes one `TCG_PCR_EVENT2` at the start of `out`; returns its length, or `None`
/// if it does not fit.
pub fn encode_event(
    pcr: u32,
    event_type: u32,
    digest: &[u8; 32],
    data: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let n = event_len(data.len());
    let e = out.get_mut(..n)?;
    wr_u32(e, 0, pcr);
    wr_u32(e, 4, event_type);
    wr_u32(e, 8, 1);
    wr_u16(e, 12, TPM_ALG_SHA256);
    e[14..46].copy_from_slice(digest);
    wr_u32(e, 46, data.len() as u32);
    e[50..].copy_from_slice(data);
    Some(n)
}

/// One event of the firmware's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedEvent {
    /// The PCR it extends.
    pub pcr: u32,
    /// Its TCG event type.
    pub event_type: u32,
    /// The SHA-256 digest extended.
    pub digest: [u8; 32],
    /// Its event data in the log.
    pub data: &'static [u8],
}

/// The four events the firmware measures at start, from the digests PCR 23 holds too
/// (`tvp_abi::measure`'s `firmware-image`, `acpi-tables`, `config-page`, `boot-region`).
pub fn start_events(
    firmware: [u8; 32],
    acpi_tables: [u8; 32],
    config_page: [u8; 32],
    boot_region: [u8; 32],
) -> [PlannedEvent; 4] {
    [
        PlannedEvent {
            pcr: PCR_FIRMWARE,
            event_type: EV_POST_CODE,
            digest: firmware,
            data: FIRMWARE_DATA,
        },
        PlannedEvent {
            pcr: PCR_FIRMWARE,
            event_type: EV_POST_CODE,
            digest: acpi_tables,
            data: ACPI_DATA,
        },
        PlannedEvent {
            pcr: PCR_CONFIG,
            event_type: EV_PLATFORM_CONFIG_FLAGS,
            digest: config_page,
            data: CONFIG_PAGE_DATA,
        },
        PlannedEvent {
            pcr: PCR_CONFIG,
            event_type: EV_PLATFORM_CONFIG_FLAGS,
            digest: boot_region,
            data: BOOT_REGION_DATA,
        },
    ]
}

/// The events before the handover: the workload's payload digest into PCR 4, then a
/// separator into each of PCRs 0..=7.
pub fn handover_events(workload: [u8; 32]) -> [PlannedEvent; 1 + SEPARATED_PCRS as usize] {
    let sep = sha256(&SEPARATOR_DATA);
    let mut ev = [PlannedEvent {
        pcr: 0,
        event_type: EV_SEPARATOR,
        digest: sep,
        data: &SEPARATOR_DATA,
    }; 1 + SEPARATED_PCRS as usize];
    ev[0] = PlannedEvent {
        pcr: PCR_WORKLOAD,
        event_type: EV_IPL,
        digest: workload,
        data: WORKLOAD_DATA,
    };
    for (i, e) in ev[1..].iter_mut().enumerate() {
        e.pcr = i as u32;
    }
    ev
}

/// PCRs 0 and 1 of a VM's own TPM after the start events, before the handover's:
/// what the firmware quotes at step 4 of the boot protocol (the VtpmQuote frame).
pub fn start_pcrs(
    firmware: [u8; 32],
    acpi_tables: [u8; 32],
    config_page: [u8; 32],
    boot_region: [u8; 32],
) -> [[u8; 32]; 2] {
    let mut pcrs = [[0u8; 32]; 2];
    for e in start_events(firmware, acpi_tables, config_page, boot_region) {
        if let Some(p) = pcrs.get_mut(e.pcr as usize) {
            *p = extend(p, &e.digest);
        }
    }
    pcrs
}

/// [`start_pcrs`] of a VM that booted `firmware` (the ELF file) with `config_page`, the
/// digests computed as the firmware and `tvp-vmm` do (PCR 23's `firmware-image`,
/// `acpi-tables`, `config-page`, `boot-region`).
pub fn expected_start_pcrs(
    firmware: &[u8],
    config_page: &[u8],
) -> Result<[[u8; 32]; 2], crate::measure::MeasureError> {
    let cfg = crate::config::decode(config_page).map_err(crate::measure::MeasureError::Config)?;
    Ok(start_pcrs(
        sha256(firmware),
        crate::measure::acpi_tables_digest(cfg.vcpus, cfg.tpm.is_some())?,
        sha256(config_page),
        crate::measure::boot_region_digest(cfg.mem_size()),
    ))
}

/// PCRs 0..=7 of a VM's own TPM at the handover, from the same digests as
/// [`start_events`] and the workload's.
pub fn expected_pcrs(
    firmware: [u8; 32],
    acpi_tables: [u8; 32],
    config_page: [u8; 32],
    boot_region: [u8; 32],
    workload: [u8; 32],
) -> [[u8; 32]; SEPARATED_PCRS as usize] {
    let mut pcrs = [[0u8; 32]; SEPARATED_PCRS as usize];
    let start = start_events(firmware, acpi_tables, config_page, boot_region);
    for e in start.iter().chain(handover_events(workload).iter()) {
        if let Some(p) = pcrs.get_mut(e.pcr as usize) {
            *p = extend(p, &e.digest);
        }
    }
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_pcrs_are_the_handover_pcrs_before_their_separators() {
        let (f, a, c, b, w) = ([1; 32], [2; 32], [3; 32], [4; 32], [5; 32]);
        let start = start_pcrs(f, a, c, b);
        let end = expected_pcrs(f, a, c, b, w);
        let sep = sha256(&SEPARATOR_DATA);
        assert_eq!(extend(&start[0], &sep), end[0]);
        assert_eq!(extend(&start[1], &sep), end[1]);
        assert_eq!(start[0], extend(&extend(&[0; 32], &f), &a));
    }

    #[test]
    fn the_header_is_a_spec_id_event03_for_sha256_only() {
        let h = header();
        assert_eq!(h.len(), 65);
        assert_eq!(&h[0..4], &[0; 4], "PCR 0");
        assert_eq!(&h[4..8], &3u32.to_le_bytes(), "EV_NO_ACTION");
        assert!(h[8..28].iter().all(|b| *b == 0), "SHA-1 sized zero digest");
        assert_eq!(&h[28..32], &33u32.to_le_bytes());
        assert_eq!(&h[32..48], b"Spec ID Event03\0");
        assert_eq!(&h[56..60], &1u32.to_le_bytes(), "one algorithm");
        assert_eq!(&h[60..64], &[0x0b, 0, 32, 0], "SHA-256, 32 bytes");
    }

    #[test]
    fn an_event_has_one_sha256_digest_and_its_data() {
        let mut out = [0xffu8; 80];
        let n = encode_event(4, EV_IPL, &[7; 32], b"abc", &mut out).unwrap();
        assert_eq!(n, 53);
        assert_eq!(
            &out[0..14],
            &[4, 0, 0, 0, 0xd, 0, 0, 0, 1, 0, 0, 0, 0x0b, 0]
        );
        assert_eq!(&out[14..46], &[7; 32]);
        assert_eq!(&out[46..53], &[3, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(out[53], 0xff, "nothing written beyond");
        assert_eq!(encode_event(0, 1, &[0; 32], b"abc", &mut out[..52]), None);
    }

    #[test]
    fn the_expected_pcrs_are_the_replay_of_the_plan() {
        let p = expected_pcrs([1; 32], [2; 32], [3; 32], [4; 32], [5; 32]);
        let sep = sha256(&[0; 4]);
        let r = |ds: &[[u8; 32]]| ds.iter().fold([0u8; 32], |a, d| extend(&a, d));
        assert_eq!(p[0], r(&[[1; 32], [2; 32], sep]));
        assert_eq!(p[1], r(&[[3; 32], [4; 32], sep]));
        assert_eq!(p[4], r(&[[5; 32], sep]));
        for i in [2, 3, 5, 6, 7] {
            assert_eq!(p[i], r(&[sep]));
        }
    }
}
