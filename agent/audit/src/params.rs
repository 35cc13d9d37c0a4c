//! The digest of an operation's parameters, bound into authorization tokens and audit
//! records: SHA-256 over `tvp-params-v1\0`, the number of parameters (u32), then each
//! `key`, `value` pair as length-prefixed UTF-8, sorted by key. Keys are unique.

use std::collections::BTreeMap;

use crate::encode::Encoder;
use crate::Digest32;

/// Why a parameter list cannot be digested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// `k=v` expected.
    #[error("parameter '{0}' is not of the form key=value")]
    NotKeyValue(String),
    /// The same key twice.
    #[error("parameter '{0}' is given twice; give each key once")]
    Duplicate(String),
    /// Empty key.
    #[error("a parameter has an empty key")]
    EmptyKey,
}

/// The canonical parameters of an operation.
pub type Params = BTreeMap<String, String>;

/// Parse `k=v` strings (as `tvpctl authorize --param` takes them).
pub fn parse_kv(items: &[String]) -> Result<Params, ParamsError> {
    let mut out = Params::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .ok_or_else(|| ParamsError::NotKeyValue(it.clone()))?;
        if k.is_empty() {
            return Err(ParamsError::EmptyKey);
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ParamsError::Duplicate(k.to_string()));
        }
    }
    Ok(out)
}

/// The digest of `params` (empty map allowed).
pub fn digest(params: &Params) -> Digest32 {
    let mut e = Encoder::new("tvp-params-v1");
    e.u32(params.len() as u32);
    for (k, v) in params {
        e.str(k).str(v);
    }
    e.sha256()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_value_sensitive() {
        let a = parse_kv(&["b=2".into(), "a=1".into()]).unwrap();
        let b = parse_kv(&["a=1".into(), "b=2".into()]).unwrap();
        assert_eq!(digest(&a), digest(&b));
        let c = parse_kv(&["a=1".into(), "b=3".into()]).unwrap();
        assert_ne!(digest(&a), digest(&c));
        // "a=1,b" vs "a" = "1b" cannot collide thanks to length prefixes.
        let d = parse_kv(&["ab=".into()]).unwrap();
        let e = parse_kv(&["a=b".into()]).unwrap();
        assert_ne!(digest(&d), digest(&e));
        assert_eq!(
            parse_kv(&["a=1".into(), "a=2".into()]),
            Err(ParamsError::Duplicate("a".into()))
        );
        assert!(matches!(
            parse_kv(&["x".into()]),
            Err(ParamsError::NotKeyValue(_))
        ));
    }
}
