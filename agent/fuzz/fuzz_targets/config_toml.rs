//! tvpd's configuration file text through its loader (`Config::from_toml`, then
//! `validate`, as `Config::load` does). Never panics; an accepted configuration's
//! canonical JSON (what the platform PCR measures) re-parses to the same
//! configuration and re-encodes to the same bytes, and its `--print-config` TOML
//! reloads to the same configuration; a refusal names the file or the key.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tvp_agent::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    // `Config::load` reads the file with `read_to_string`: not UTF-8 is a read error.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/tvp/tvpd.toml");
    let cfg = match Config::from_toml(text, path) {
        Ok(c) => c,
        Err(e) => {
            assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
            assert!(e.to_string().contains("/etc/tvp/tvpd.toml"), "{e}");
            return;
        }
    };
    let json = cfg.canonical_json();
    assert!(!json.is_empty(), "canonical JSON of {cfg:?} is empty");
    let back: Config = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("canonical JSON does not re-parse: {e}"));
    assert_eq!(
        back, cfg,
        "canonical JSON re-parses to another configuration"
    );
    assert_eq!(
        back.canonical_json(),
        json,
        "canonical JSON is not canonical"
    );
    let toml = cfg.to_toml();
    let again = Config::from_toml(&toml, path)
        .unwrap_or_else(|e| panic!("--print-config output does not reload: {e}\n{toml}"));
    assert_eq!(
        again, cfg,
        "--print-config output reloads to another configuration"
    );
    if let Err(e) = cfg.validate() {
        match &e {
            ConfigError::Invalid { key, message } => {
                assert!(!message.is_empty(), "{e:?}");
                assert!(json_has_key(&json, key), "refusal names unknown key {key}");
            }
            other => panic!("validate returned {other:?}"),
        }
    }
});

fn json_has_key(json: &[u8], key: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get(key).cloned())
        .is_some()
}
