//! Measured VMs: create (validated spec → configuration page → one `tvp-vmm` process
//! per VM), the PCR lease that serializes their attestation, supervision of each VMM's
//! channel, and destruction. See docs/vm-lifecycle.md.

pub mod boot;
pub mod id;
pub mod image;
pub mod lease;
pub mod management;
pub mod manager;
pub mod phase;
pub mod process;
pub mod spec;
pub mod state;
pub mod store;
pub mod tap;
pub mod vtpm;

pub use id::VmId;
pub use manager::{Manager, ManagerConfig, Op, VmError};
pub use spec::CreateVmRequest;
pub use state::{VmState, VmView};
