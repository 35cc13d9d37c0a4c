//! The configuration page (`docs/config-page.md`), read through `tvp_abi`.

use tvp_abi::config::{self, Config, ConfigError};
use tvp_abi::layout::CONFIG_PAGE_GPA;
use tvp_abi::PAGE_SIZE;

/// The configuration page as mapped by the stub (user, read-only).
pub fn page() -> &'static [u8; PAGE_SIZE] {
    // SAFETY: the stub maps the configuration page at CONFIG_PAGE_GPA user read-only,
    // and the VMM's KVM slot for it is read-only: its contents never change while the
    // firmware runs, so a shared 'static reference is sound.
    unsafe { &*(CONFIG_PAGE_GPA as *const [u8; PAGE_SIZE]) }
}

/// Decodes and validates the configuration page.
pub fn read() -> Result<Config<'static>, ConfigError> {
    config::decode(page())
}
