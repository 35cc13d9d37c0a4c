//! The TPM 2.0 CRB interface's register map (TCG PC Client Platform TPM Profile, "CRB
//! interface", locality 0): one definition for the device (tvp-vmm's `tpm_crb`) and
//! the firmware's driver. The window is at [`crate::layout::TPM_CRB_GPA`].

/// Register offsets in the locality-0 window.
pub mod reg {
    pub const LOC_STATE: u64 = 0x00;
    pub const LOC_CTRL: u64 = 0x08;
    pub const LOC_STS: u64 = 0x0c;
    pub const INTF_ID: u64 = 0x30;
    pub const INTF_ID_HI: u64 = 0x34;
    pub const CTRL_EXT: u64 = 0x38;
    pub const CTRL_REQ: u64 = 0x40;
    pub const CTRL_STS: u64 = 0x44;
    pub const CTRL_CANCEL: u64 = 0x48;
    pub const CTRL_START: u64 = 0x4c;
    pub const INT_ENABLE: u64 = 0x50;
    pub const INT_STS: u64 = 0x54;
    pub const CMD_SIZE: u64 = 0x58;
    pub const CMD_LADDR: u64 = 0x5c;
    pub const CMD_HADDR: u64 = 0x60;
    pub const RSP_SIZE: u64 = 0x64;
    pub const RSP_ADDR: u64 = 0x68;
    pub const RSP_ADDR_HI: u64 = 0x6c;
}

/// `LOC_STATE`: tpmEstablished (bit 0), locAssigned (bit 1), tpmRegValidSts (bit 7).
pub const LOC_STATE_ESTABLISHED: u32 = 1;
pub const LOC_STATE_ASSIGNED: u32 = 1 << 1;
pub const LOC_STATE_VALID: u32 = 1 << 7;
/// `LOC_CTRL`: requestAccess (bit 0), relinquish (bit 1).
pub const LOC_CTRL_REQUEST: u32 = 1;
pub const LOC_CTRL_RELINQUISH: u32 = 1 << 1;
/// `LOC_STS`: granted (bit 0).
pub const LOC_STS_GRANTED: u32 = 1;
/// `CTRL_REQ`: cmdReady (bit 0), goIdle (bit 1).
pub const REQ_CMD_READY: u32 = 1;
pub const REQ_GO_IDLE: u32 = 1 << 1;
/// `CTRL_STS`: tpmSts (bit 0, fatal error), tpmIdle (bit 1).
pub const STS_FATAL: u32 = 1;
pub const STS_IDLE: u32 = 1 << 1;
