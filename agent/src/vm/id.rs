//! The VM id: one type, one rule, for every place an id enters tvpd (a create
//! request's `id`, the `{id}` of `/v1/vms/{id}...` routes).
//!
//! The rule is the one VMs are created with: 1 to [`MAX_LEN`] characters of `a-z`,
//! `0-9` and `-`, not starting with `-`. An id is also a file and TAP name stem, so
//! nothing else (no upper case, dots, slashes or percent escapes) is accepted.

use std::fmt;

/// Longest VM id.
pub const MAX_LEN: usize = 64;

/// A VM id that follows the rule (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(String);

/// An id that breaks the rule; the message states the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("use 1-64 characters of a-z, 0-9 and '-', not starting with '-'")]
pub struct VmIdError;

impl VmId {
    /// Check `text` against the rule.
    pub fn parse(text: &str) -> Result<Self, VmIdError> {
        let ok = (1..=MAX_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-');
        if ok {
            Ok(VmId(text.to_string()))
        } else {
            Err(VmIdError)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::str::FromStr for VmId {
    type Err = VmIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VmId::parse(s)
    }
}

impl AsRef<str> for VmId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_rule() {
        for good in ["a", "vm-1", "0", "a-", &"x".repeat(MAX_LEN)] {
            assert_eq!(VmId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "-a",
            "Vm",
            "a_b",
            "a.b",
            "a/b",
            "a%2f",
            "a b",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert_eq!(VmId::parse(bad), Err(VmIdError), "{bad:?}");
        }
    }
}
