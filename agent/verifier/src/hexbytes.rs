//! Serde helpers for byte strings carried as lowercase hex or base64 in JSON.

use base64::Engine;
use serde::{Deserialize, Deserializer, Serializer};

/// Serialize bytes as lowercase hex.
pub fn ser_hex<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

/// Deserialize bytes from hex (either case).
pub fn de_hex<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    hex::decode(&s).map_err(|e| serde::de::Error::custom(format!("invalid hex: {e}")))
}

/// Serialize bytes as standard base64 (with padding).
pub fn ser_b64<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
}

/// Deserialize bytes from standard base64 (with padding).
pub fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
}

/// Serialize optional bytes as standard base64 (use with `skip_serializing_if = "Option::is_none"`).
pub fn ser_opt_b64<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser_b64(v, s),
        None => s.serialize_none(),
    }
}

/// Deserialize present optional bytes from standard base64 (use with `default`).
pub fn de_opt_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    de_b64(d).map(Some)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::de_hex")]
        h: Vec<u8>,
        #[serde(deserialize_with = "super::de_b64")]
        b: Vec<u8>,
    }

    #[test]
    fn owned_and_borrowed_strings_both_parse() {
        let text = r#"{"h":"0aff","b":"AQI="}"#;
        let borrowed: T = serde_json::from_str(text).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let owned: T = serde_json::from_value(value).unwrap();
        assert_eq!((borrowed.h, borrowed.b), (vec![10, 255], vec![1, 2]));
        assert_eq!((owned.h, owned.b), (vec![10, 255], vec![1, 2]));
    }
}
