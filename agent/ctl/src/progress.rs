//! Progress of a long image operation on stderr: bytes done of the total, MB/s and the
//! time left. On a terminal one line is redrawn in place a few times a second; when
//! asked for with `--progress` on a pipe or file, a line is written every few seconds.
//! Nothing here ever writes to stdout, which stays for the result (JSON with `--json`).

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

/// Whether to show progress: asked for, or stderr is a terminal and the caller did not
/// ask for JSON (machines read stdout, and a terminal's redraws are no use to them).
pub fn wanted(flag: bool, json: bool) -> bool {
    flag || (!json && std::io::stderr().is_terminal())
}

/// A progress meter over passes of `per_pass` bytes each (the encryptor reads its
/// input twice); each line shows the current pass's bytes, the rate, and the time left
/// for all passes.
#[derive(Debug)]
pub struct Meter {
    passes: Vec<&'static str>,
    pass: usize,
    per_pass: u64,
    total: u64,
    done: u64,
    started: Instant,
    last: Option<Instant>,
    tty: bool,
}

fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Meter {
    /// A meter for `passes` (each pass's name is shown) over `per_pass` bytes each.
    pub fn new(passes: Vec<&'static str>, per_pass: u64) -> Self {
        let now = Instant::now();
        let per_pass = per_pass.max(1);
        let m = Meter {
            total: per_pass.saturating_mul(passes.len().max(1) as u64),
            passes,
            pass: 0,
            per_pass,
            done: 0,
            started: now,
            last: Some(now),
            tty: std::io::stderr().is_terminal(),
        };
        m.draw(false);
        m
    }

    fn line(&self, finished: bool) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        };
        let name = self.passes.get(self.pass).copied().unwrap_or("working");
        let in_pass = self
            .done
            .saturating_sub(self.per_pass.saturating_mul(self.pass as u64))
            .min(self.per_pass);
        let pct = (in_pass as f64 * 100.0 / self.per_pass as f64).floor();
        let mbps = if self.done == 0 {
            "-- MB/s".to_string()
        } else {
            format!("{:.0} MB/s", rate / 1e6)
        };
        let tail = if finished {
            format!("done in {}", clock(secs))
        } else if rate > 0.0 {
            format!(
                "ETA {}",
                clock(self.total.saturating_sub(self.done) as f64 / rate)
            )
        } else {
            "ETA --".to_string()
        };
        format!(
            "{name}: {} / {} ({pct:.0}%), {mbps}, {tail}",
            human(in_pass),
            human(self.per_pass)
        )
    }

    fn draw(&self, finished: bool) {
        let line = self.line(finished);
        let mut e = std::io::stderr().lock();
        // Progress is advisory: a closed stderr does not fail the operation.
        let _ = if self.tty {
            write!(e, "\r\x1b[2K{line}{}", if finished { "\n" } else { "" })
        } else {
            writeln!(e, "{line}")
        };
        let _ = e.flush();
    }

    /// `n` more bytes done; redraws when enough time has passed.
    pub fn add(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        let now = Instant::now();
        let due = match self.last {
            None => true,
            Some(t) => now.duration_since(t) >= every,
        };
        if due {
            self.last = Some(now);
            self.draw(false);
        }
    }

    /// The next pass begins.
    pub fn next_pass(&mut self) {
        if self.pass + 1 < self.passes.len() {
            self.pass += 1;
            self.done = self.per_pass.saturating_mul(self.pass as u64);
        }
    }

    /// The work is complete: the final line (with the total time).
    pub fn finish(&mut self) {
        self.done = self.total;
        self.draw(true);
    }

    /// The work failed: end the redrawn line so the error starts on its own.
    pub fn abandon(&mut self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// A reader that reports the bytes read through it to an optional meter; a seek back
/// to the start (the encryptor's second pass) starts the meter's next pass.
#[derive(Debug)]
pub struct Metered<R> {
    inner: R,
    meter: Option<Meter>,
}

impl<R> Metered<R> {
    /// Wrap `inner`; with `None` this is a plain pass-through.
    pub fn new(inner: R, meter: Option<Meter>) -> Self {
        Metered { inner, meter }
    }

    /// Everything was read and written: the meter's final line.
    pub fn finish(&mut self) {
        if let Some(m) = self.meter.as_mut() {
            m.finish();
        }
    }

    /// The operation failed: end the meter's line before the error is printed.
    pub fn abandon(&mut self) {
        if let Some(m) = self.meter.as_mut() {
            m.abandon();
        }
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(m) = self.meter.as_mut() {
            m.add(n as u64);
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for Metered<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let p = self.inner.seek(pos)?;
        if p == 0 {
            if let Some(m) = self.meter.as_mut() {
                m.next_pass();
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_bytes_rate_and_eta() {
        let mut m = Meter::new(vec!["hashing", "encrypting"], 2 << 20);
        m.done = 1 << 20;
        m.started = Instant::now() - Duration::from_secs(1);
        let l = m.line(false);
        // 3 MiB of the two passes' 4 MiB left at 1 MiB/s.
        assert!(
            l.starts_with("hashing: 1.0 MiB / 2.0 MiB (50%), 1 MB/s, ETA 3s"),
            "{l}"
        );
        m.next_pass();
        let l = m.line(false);
        assert!(l.starts_with("encrypting: 0 B / 2.0 MiB (0%)"), "{l}");
        m.done = 4 << 20;
        let l = m.line(true);
        assert!(l.starts_with("encrypting: 2.0 MiB / 2.0 MiB (100%)"), "{l}");
        assert!(l.contains("done in 1s"), "{l}");
        assert_eq!(clock(3725.0), "1h02m");
        assert_eq!(human(1023), "1023 B");
    }
}
