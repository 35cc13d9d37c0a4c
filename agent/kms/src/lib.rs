//! tvp-kms: a reference key-management service for tenants (docs/kms.md).
//!
//! It holds the tenant's key-management private key and releases an image key to a
//! host only when (1) the host answers a nonce this service issued, once, recently;
//! (2) its evidence verifies against the inventory (known AK, optionally bound to its
//! EK, platform PCRs as expected); (3) its binding key is certified by that AK with
//! the same nonce, is TPM-resident and usable only under PolicyPCR over exactly the
//! expected platform values. Then the image key is unwrapped here and re-wrapped to
//! the binding key, so only that TPM, on that unchanged platform, can unwrap it.
//! (4) The quote also commits to the VM that will receive the key (its configuration
//! page, firmware and management binding: [`key_use`]), and that VM satisfies the
//! image's [`release_policy`] (tenant CA, management key and policy, firmware).
//! Every decision is logged with its reason.

pub mod inventory;
pub mod key_use;
pub mod protocol;
pub mod release;
pub mod release_policy;

pub use inventory::{HostEntry, Inventory};
pub use key_use::{KeyUse, ParsedUse};
pub use protocol::{Request, Response};
pub use release::{Kms, Refusal};
pub use release_policy::ReleasePolicy;
