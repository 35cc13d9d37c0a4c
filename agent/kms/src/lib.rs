//! tvp-kms: a reference key-management service for tenants (docs/kms.md).
//!
//! It holds the tenant's key-management private key and releases an image key to a
//! host only when (1) the host answers a nonce this service issued, once, recently;
//! (2) its evidence verifies against the inventory (known AK, optionally bound to its
//! EK, platform PCRs as expected); (3) its binding key is certified by that AK with
//! the same nonce, is TPM-resident and usable only under PolicyPCR over exactly the
//! expected platform values. Then the image key is unwrapped here and re-wrapped to
//! the binding key, so only that TPM, on that unchanged platform, can unwrap it.
//! Every decision is logged with its reason.

pub mod inventory;
pub mod protocol;
pub mod release;

pub use inventory::{HostEntry, Inventory};
pub use protocol::{Request, Response};
pub use release::{Kms, Refusal};
