//! Structured logging through the `log` facade: key-value pairs travel with each
//! record and are printed as `key=value` (text, for people) or as fields of one JSON
//! object per line (json, for collectors). Output goes to stderr (journald on hosts).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Output format of log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-22T10:00:00.123Z INFO tvpd::api: message key=value`
    Text,
    /// `{"ts":"...","level":"INFO","target":"...","msg":"...","key":"value"}`
    Json,
}

struct Logger {
    level: LevelFilter,
    format: LogFormat,
}

/// Install the logger. `level` and `format` are validated config strings.
pub fn init(level: &str, format: &str) {
    let level = match level {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => LevelFilter::Info,
    };
    let format = if format == "json" {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    if log::set_boxed_logger(Box::new(Logger { level, format })).is_ok() {
        log::set_max_level(level);
    }
}

/// RFC 3339 UTC timestamp with milliseconds, now.
pub fn timestamp() -> String {
    rfc3339(SystemTime::now())
}

/// RFC 3339 UTC timestamp with milliseconds of `t`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct Collect(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Dependencies only speak up for warnings and errors; our own crates at the
        // configured level.
        if record.level() > Level::Warn && !record.target().starts_with("tvp") {
            return;
        }
        let mut kv = Collect(Vec::new());
        let _ = record.key_values().visit(&mut kv);
        let line = match self.format {
            LogFormat::Text => {
                let mut s = format!(
                    "{} {:5} {}: {}",
                    timestamp(),
                    record.level(),
                    record.target(),
                    record.args()
                );
                for (k, v) in &kv.0 {
                    if v.contains(' ') || v.is_empty() {
                        s.push_str(&format!(" {k}={v:?}"));
                    } else {
                        s.push_str(&format!(" {k}={v}"));
                    }
                }
                s
            }
            LogFormat::Json => {
                let mut m = serde_json::Map::new();
                m.insert("ts".into(), timestamp().into());
                m.insert("level".into(), record.level().as_str().into());
                m.insert("target".into(), record.target().into());
                m.insert("msg".into(), record.args().to_string().into());
                for (k, v) in kv.0 {
                    m.insert(k, v.into());
                }
                serde_json::Value::Object(m).to_string()
            }
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
