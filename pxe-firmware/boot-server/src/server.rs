//! Serving boot requests: accept, TLS handshake, one request line, the reservation
//! check, the reply; every decision is reported as one JSON line.

use crate::protocol::{parse_request, REQUEST_MAX};
use crate::reservations::Reservations;
use crate::tls::tunnel_measurement;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client may take for the handshake and its request.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The server state.
pub struct BootServer {
    config: Arc<ServerConfig>,
    reservations: Reservations,
    report: Box<dyn Write + Send>,
    client_timeout: Duration,
}

impl BootServer {
    /// A server with its TLS configuration, reservations and report sink.
    pub fn new(
        config: Arc<ServerConfig>,
        reservations: Reservations,
        report: Box<dyn Write + Send>,
    ) -> Self {
        BootServer {
            config,
            reservations,
            report,
            client_timeout: CLIENT_TIMEOUT,
        }
    }

    /// Sets how long a client may stall the handshake or its request.
    pub fn with_client_timeout(mut self, t: Duration) -> Self {
        self.client_timeout = t;
        self
    }

    fn report(&mut self, v: serde_json::Value) {
        let _ = writeln!(self.report, "{v}");
        let _ = self.report.flush();
    }

    /// Serves `max` connections (or forever with `None`), one at a time.
    pub fn serve(&mut self, listener: &TcpListener, max: Option<usize>) {
        let mut served = 0;
        while max.is_none_or(|m| served < m) {
            let (tcp, peer) = match listener.accept() {
                Ok(c) => c,
                Err(e) => {
                    self.report(json!({"event": "accept-failed", "error": e.to_string()}));
                    continue;
                }
            };
            served += 1;
            let t0 = Instant::now();
            let outcome = self.handle(tcp);
            let mut v = outcome;
            v["peer"] = json!(peer.to_string());
            v["millis"] = json!(t0.elapsed().as_millis() as u64);
            self.report(v);
        }
    }

    /// One connection; returns its report.
    fn handle(&mut self, tcp: TcpStream) -> serde_json::Value {
        let _ = tcp.set_read_timeout(Some(self.client_timeout));
        let _ = tcp.set_write_timeout(Some(self.client_timeout));
        let conn = match ServerConnection::new(self.config.clone()) {
            Ok(c) => c,
            Err(e) => {
                return json!({"event": "refused", "reason": "tls-setup", "error": e.to_string()})
            }
        };
        let mut tls = StreamOwned::new(conn, tcp);
        let mut line = String::new();
        let read = BufReader::new((&mut tls).take_limited()).read_line(&mut line);
        if let Err(e) = read {
            return json!({"event": "refused", "reason": "tls-failed", "error": e.to_string()});
        }
        let Some(req) = parse_request(&line) else {
            let _ = tls.write_all(b"REFUSED bad-request\n");
            return json!({"event": "refused", "reason": "bad-request"});
        };
        let measurement = match tunnel_measurement(&tls.conn, &req.auth_code) {
            Ok(m) => m,
            Err(e) => {
                return json!({"event": "refused", "reason": "exporter", "error": e.to_string()})
            }
        };
        if let Err(e) = self.reservations.claim(&req.auth_code, req.vip) {
            let _ = tls.write_all(format!("REFUSED {}\n", e.code()).as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return json!({"event": "refused", "reason": e.code(), "vip": req.vip.to_string()});
        }
        let _ = tls.write_all(b"OK reservation accepted\n");
        tls.conn.send_close_notify();
        let _ = tls.flush();
        json!({
            "event": "tunnel",
            "vip": req.vip.to_string(),
            "firmware": req.firmware,
            "tunnel_measurement": hex::encode(measurement),
        })
    }
}

/// Reads at most [`REQUEST_MAX`] + 1 bytes (one request line) from a stream.
trait TakeLimited: std::io::Read + Sized {
    fn take_limited(self) -> std::io::Take<Self> {
        self.take(REQUEST_MAX as u64 + 1)
    }
}

impl<R: std::io::Read> TakeLimited for R {}
