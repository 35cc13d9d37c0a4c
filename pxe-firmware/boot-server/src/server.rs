//! Serving network boots, each connection on its own thread (at most
//! [`MAX_SESSIONS`] at once, so a stalled VM cannot hold up the others): TLS handshake,
//! boot request, reservation claim and configuration-page checks against the
//! reservation's expectations, attestation request with a fresh nonce, evidence
//! verification, the management binding, the quote of the VM's own TPM (deep evidence,
//! [`crate::deep`]), signed workload. The reservation is spent
//! only when the workload was sent; any other ending frees it with one more failed
//! attempt counted. Every connection ends with one JSON line in the report
//! (`docs/boot-server.md`).

use crate::attest::{self, Expectation};
use crate::deep::{self, DeepExpectation};
use crate::expect::{self, ManagementError, Mismatch, TenantManagement};
use crate::protocol::{read_frame, read_frame_of, write_frame, BootRequest, MsgType};
use crate::reservations::{Claim, Ending, Reservations};
use crate::tls::tunnel_measurement;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tvp_boot_protocol::{NONCE_LEN, STATUS_HANDOVER};
use tvp_kms::inventory::Inventory;

/// How long a client may take for each step (handshake, request, evidence).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most sessions served at once; further connections wait in the listen backlog.
pub const MAX_SESSIONS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the tenant trusts and serves.
pub struct Tenant {
    /// The provider's host inventory (AKs, platform PCRs).
    pub inventory: Inventory,
    /// The reference firmware image the VMs must run (for the expected PCR 23).
    pub firmware: Vec<u8>,
    /// The tenant CA certificate (DER) the VMs' configuration pages must carry.
    pub ca_der: Vec<u8>,
    /// This server's TLS name, which the configuration pages must carry.
    pub server_name: String,
    /// The signed workload container to deliver.
    pub workload: Vec<u8>,
    /// The management key and policy this tenant gives its VMs (reservations with
    /// `management=tenant`): tvpd extends their digest into PCR 23 after the VMM's
    /// events, so a VM created with another key or policy does not match.
    pub management: TenantManagement,
}

/// The server state.
pub struct BootServer {
    config: Arc<ServerConfig>,
    /// Claimed and finished under the lock: one session per reservation at a time,
    /// spent by the first delivery.
    reservations: Mutex<Reservations>,
    tenant: Tenant,
    /// One whole line per session, under the lock.
    report: Mutex<Box<dyn Write + Send>>,
    client_timeout: Duration,
    rng: SystemRandom,
    /// Sessions running, and the signal that one ended.
    sessions: (Mutex<usize>, Condvar),
    /// Said in the `listening` report (e.g. what the reservation ledger held).
    start_fields: serde_json::Map<String, Value>,
}

/// A refusal: the reason code sent to the firmware and the report's fields.
struct Refusal {
    /// Reason code (sent in the `Refused` frame, `None` if the peer cannot be told).
    code: String,
    tell_peer: bool,
    detail: String,
}

fn refusal(code: impl Into<String>, detail: impl Into<String>) -> Refusal {
    Refusal {
        code: code.into(),
        tell_peer: true,
        detail: detail.into(),
    }
}

fn mismatch(m: &Mismatch, fields: &mut serde_json::Map<String, Value>) -> Refusal {
    fields.insert("field".into(), json!(m.field));
    fields.insert("expected".into(), json!(m.expected));
    fields.insert("found".into(), json!(m.found));
    refusal(m.code(), m.to_string())
}

fn broken(code: impl Into<String>, detail: impl ToString) -> Refusal {
    Refusal {
        code: code.into(),
        tell_peer: false,
        detail: detail.to_string(),
    }
}

impl BootServer {
    /// A server with its TLS configuration, reservations, tenant material and report sink.
    pub fn new(
        config: Arc<ServerConfig>,
        reservations: Reservations,
        tenant: Tenant,
        report: Box<dyn Write + Send>,
    ) -> Self {
        BootServer {
            config,
            reservations: Mutex::new(reservations),
            tenant,
            report: Mutex::new(report),
            client_timeout: CLIENT_TIMEOUT,
            rng: SystemRandom::new(),
            sessions: (Mutex::new(0), Condvar::new()),
            start_fields: serde_json::Map::new(),
        }
    }

    /// Adds `key: value` to the `listening` report.
    pub fn with_start_field(mut self, key: &str, value: Value) -> Self {
        self.start_fields.insert(key.to_string(), value);
        self
    }

    /// Sets how long a client may stall each step.
    pub fn with_client_timeout(mut self, t: Duration) -> Self {
        self.client_timeout = t;
        self
    }

    fn report(&self, v: Value) {
        let mut out = lock(&self.report);
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    /// Serves `max` connections (or forever with `None`), each on its own thread, at
    /// most [`MAX_SESSIONS`] at once; returns when the last of them is reported.
    /// Reports `{"event": "listening"}` first.
    pub fn serve(&self, listener: &TcpListener, max: Option<usize>) {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut listening = serde_json::Map::new();
        listening.insert("event".into(), json!("listening"));
        listening.insert("addr".into(), json!(addr));
        listening.extend(self.start_fields.clone());
        self.report(Value::Object(listening));
        std::thread::scope(|scope| {
            let mut served = 0;
            while max.is_none_or(|m| served < m) {
                self.wait_for_a_free_session();
                let (tcp, peer) = match listener.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        self.report(json!({"event": "accept-failed", "error": e.to_string()}));
                        continue;
                    }
                };
                served += 1;
                *lock(&self.sessions.0) += 1;
                scope.spawn(move || {
                    self.session_report(tcp, peer);
                    *lock(&self.sessions.0) -= 1;
                    self.sessions.1.notify_all();
                });
            }
        });
    }

    fn wait_for_a_free_session(&self) {
        let mut n = lock(&self.sessions.0);
        while *n >= MAX_SESSIONS {
            n = self.sessions.1.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Serves one connection and reports its outcome.
    fn session_report(&self, tcp: TcpStream, peer: std::net::SocketAddr) {
        let t0 = Instant::now();
        let mut fields = serde_json::Map::new();
        let outcome = self.handle(tcp, &mut fields);
        let mut v = match outcome {
            Ok(()) => json!({"event": "delivered"}),
            Err(r) => json!({"event": "refused", "reason": r.code, "detail": r.detail}),
        };
        if let Some(o) = v.as_object_mut() {
            o.extend(fields);
            o.insert("peer".into(), json!(peer.to_string()));
            o.insert("millis".into(), json!(t0.elapsed().as_millis() as u64));
        }
        self.report(v);
    }

    /// One connection. `fields` collects what the report should say besides the outcome.
    fn handle(
        &self,
        tcp: TcpStream,
        fields: &mut serde_json::Map<String, Value>,
    ) -> Result<(), Refusal> {
        let _ = tcp.set_read_timeout(Some(self.client_timeout));
        let _ = tcp.set_write_timeout(Some(self.client_timeout));
        let conn =
            ServerConnection::new(self.config.clone()).map_err(|e| broken("tls-setup", e))?;
        let mut tls = StreamOwned::new(conn, tcp);
        let t0 = Instant::now();
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| broken("tls-failed", e))?;
        }
        fields.insert(
            "handshake_millis".into(),
            json!(t0.elapsed().as_millis() as u64),
        );
        let result = self.session(&mut tls, fields);
        if let Err(r) = &result {
            if r.tell_peer {
                let _ = write_frame(&mut tls, MsgType::Refused, r.code.as_bytes());
            }
        }
        tls.conn.send_close_notify();
        let _ = tls.flush();
        result
    }

    fn session(
        &self,
        tls: &mut StreamOwned<ServerConnection, TcpStream>,
        fields: &mut serde_json::Map<String, Value>,
    ) -> Result<(), Refusal> {
        let payload =
            read_frame(tls, MsgType::BootRequest).map_err(|e| broken("bad-request", e))?;
        let req =
            BootRequest::parse(&payload).map_err(|e| refusal("bad-request", e.to_string()))?;
        let vip = Ipv4Addr::from(req.vip);
        fields.insert("vip".into(), json!(vip.to_string()));
        fields.insert("firmware".into(), json!(req.firmware_version));
        let measurement =
            tunnel_measurement(&tls.conn, req.auth_code).map_err(|e| broken("exporter", e))?;
        fields.insert("tunnel_measurement".into(), json!(hex::encode(measurement)));
        let claim = {
            let mut reservations = lock(&self.reservations);
            fields.insert("max_failures".into(), json!(reservations.max_failures()));
            reservations.claim(req.auth_code, vip)
        }
        .map_err(|e| refusal(e.code(), e.to_string()))?;
        fields.insert("failures_before".into(), json!(claim.failures));
        let mut sent = false;
        let result = self.claimed(tls, &req, &claim, measurement, &mut sent, fields);
        let ending = if sent {
            Ending::Delivered
        } else {
            Ending::Failed
        };
        let tally = lock(&self.reservations).finish(req.auth_code, ending);
        if let Some(t) = tally {
            fields.insert("failures".into(), json!(t.failures));
            fields.insert("spent".into(), json!(t.spent));
            if t.exhausted && !t.spent {
                fields.insert("exhausted".into(), json!(true));
            }
            if let Some(e) = t.ledger_error {
                fields.insert("ledger_error".into(), json!(e));
            }
        }
        result
    }

    /// The session after its claim: page, attestation, delivery. `sent` becomes true
    /// once the workload is written to the tunnel (the delivery that spends the
    /// reservation, whatever the firmware then says).
    fn claimed(
        &self,
        tls: &mut StreamOwned<ServerConnection, TcpStream>,
        req: &BootRequest<'_>,
        claim: &Claim,
        measurement: [u8; 32],
        sent: &mut bool,
        fields: &mut serde_json::Map<String, Value>,
    ) -> Result<(), Refusal> {
        let page = self.check_config_page(req)?;
        expect::check_page(&claim.expect, &page).map_err(|m| mismatch(&m, fields))?;
        self.check_workload_fits(&page, fields)?;

        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| broken("no-randomness", "the system RNG failed"))?;
        fields.insert("nonce".into(), json!(hex::encode(nonce)));
        write_frame(tls, MsgType::AttestRequest, &nonce).map_err(|e| broken("tls-failed", e))?;
        let evidence = read_frame(tls, MsgType::Evidence).map_err(|e| broken("no-evidence", e))?;
        let evidence = std::str::from_utf8(&evidence).map_err(|_| {
            fields.insert("check".into(), json!("evidence:format"));
            refusal(
                "attestation-rejected:evidence:format",
                "evidence is not UTF-8",
            )
        })?;
        let rejected = |r: attest::Rejection, fields: &mut serde_json::Map<String, Value>| {
            fields.insert("check".into(), json!(r.check));
            refusal(format!("attestation-rejected:{}", r.check), r.reason)
        };
        let verified = attest::verify(&self.tenant.inventory, evidence, &nonce)
            .map_err(|r| rejected(r, fields))?;
        // Never silent: the report says whether the host's runtime integrity was checked.
        fields.insert(
            "runtime_integrity".into(),
            json!(verified.runtime_integrity.name()),
        );
        fields.insert(
            "runtime_integrity_detail".into(),
            json!(verified.runtime_integrity.summary()),
        );
        let management = expect::management_digest(
            claim.expect.management,
            &self.tenant.management,
            verified.management.as_ref(),
        )
        .map_err(|e| match e {
            ManagementError::Mismatch(m) => mismatch(&m, fields),
            ManagementError::NoEvent => {
                fields.insert("check".into(), json!("management-event"));
                refusal("attestation-rejected:management-event", e.to_string())
            }
        })?;
        let pcr23 = tvp_abi::measure::expected_pcr23_managed(
            &self.tenant.firmware,
            req.config_page,
            &management,
        )
        .map_err(|e| refusal("config-page", e.to_string()))?;
        fields.insert("expected_pcr23".into(), json!(hex::encode(pcr23)));
        let attested = attest::check_pcrs(
            &verified,
            &Expectation {
                pcr23,
                tunnel_measurement: measurement,
            },
        )
        .map_err(|r| rejected(r, fields))?;
        fields.insert("host_id".into(), json!(attested.host_id));
        fields.insert("quoted_pcr16".into(), json!(hex::encode(attested.pcr16)));
        fields.insert("quoted_pcr23".into(), json!(hex::encode(attested.pcr23)));
        // Deep evidence: a VM with a TPM of its own sends that TPM's quote right after
        // the Evidence; it is checked with the host's result as one document.
        let (vtpm_quote, read_error) = if page.tpm.is_some() {
            match read_frame_of(tls, &[MsgType::VtpmQuote, MsgType::Status]) {
                Ok((MsgType::VtpmQuote, q)) => (Some(q), None),
                Ok((_, status)) => {
                    let code = status
                        .first_chunk::<4>()
                        .map_or(u32::MAX, |b| u32::from_le_bytes(*b));
                    fields.insert("firmware_reason".into(), json!(code));
                    return Err(broken(
                        format!("firmware-failed:{}", firmware_reason(code)),
                        format!(
                            "the firmware failed instead of sending its TPM's quote (reason code {code})"
                        ),
                    ));
                }
                Err(e) => (None, Some(e)),
            }
        } else {
            (None, None)
        };
        let deep = deep::verify_deep(
            attested,
            &DeepExpectation {
                firmware: &self.tenant.firmware,
                config_page: req.config_page,
                nonce: &nonce,
                tunnel_measurement: &measurement,
            },
            vtpm_quote.as_deref(),
        )
        .map_err(|mut r| {
            if let Some(e) = &read_error {
                r.reason = format!("{} ({e})", r.reason);
            }
            rejected(r, fields)
        })?;
        if let Some(v) = &deep.vtpm {
            fields.insert("vtpm_quote".into(), json!("verified"));
            fields.insert("vtpm_pcr0".into(), json!(hex::encode(v.pcr0)));
            fields.insert("vtpm_pcr1".into(), json!(hex::encode(v.pcr1)));
        }
        // The VM's incarnation: what the tenant's management tokens are bound to
        // (`tvpctl authorize --incarnation`, docs/audit.md §5.2).
        fields.insert(
            "incarnation".into(),
            json!(hex::encode(tvp_abi::measure::sha256(req.config_page))),
        );
        // The VM's own TPM as the attested page names it: the TPM names (SHA-256) of
        // its EK and AK, which a quote from inside the VM must be signed by
        // (docs/vtpm-identity.md).
        if let Some(t) = tvp_abi::config::decode(req.config_page)
            .ok()
            .and_then(|c| c.tpm)
        {
            fields.insert(
                "vtpm_ek_name".into(),
                json!(format!("000b{}", hex::encode(t.ek_public_digest))),
            );
            fields.insert(
                "vtpm_ak_name".into(),
                json!(format!("000b{}", hex::encode(t.ak_public_digest))),
            );
        }
        if let Some(d) = crate::workload::payload_digest(&self.tenant.workload) {
            fields.insert("workload_digest".into(), json!(hex::encode(d)));
        }
        // Spent on disk before the first byte goes out: a crash from here on leaves the
        // reservation spent, never deliverable twice (ledger.rs).
        lock(&self.reservations)
            .record_spend(req.auth_code)
            .map_err(|e| refusal("ledger-failed", e.to_string()))?;
        *sent = true;
        write_frame(tls, MsgType::Workload, &self.tenant.workload)
            .map_err(|e| broken("tls-failed", e))?;
        let status = read_frame(tls, MsgType::Status).map_err(|e| broken("no-status", e))?;
        let code = status
            .first_chunk::<4>()
            .map(|b| u32::from_le_bytes(*b))
            .ok_or_else(|| broken("no-status", "short status"))?;
        if code != STATUS_HANDOVER {
            fields.insert("firmware_reason".into(), json!(code));
            return Err(broken(
                format!("firmware-failed:{}", firmware_reason(code)),
                format!("the firmware refused the workload (reason code {code})"),
            ));
        }
        Ok(())
    }

    /// The signed workload must fit the VM's workload window (the page's memory, up to
    /// its image): a larger one is refused before attestation and transfer, not sent
    /// for the firmware to refuse (`docs/boot-protocol.md`).
    fn check_workload_fits(
        &self,
        page: &tvp_abi::config::Config<'_>,
        fields: &mut serde_json::Map<String, Value>,
    ) -> Result<(), Refusal> {
        let window_end = page.image.map_or(page.mem_size(), |i| i.gpa);
        let capacity = tvp_boot_protocol::workload_capacity(window_end);
        let len = self.tenant.workload.len() as u64;
        if len <= capacity {
            return Ok(());
        }
        fields.insert("workload_bytes".into(), json!(len));
        fields.insert("workload_capacity".into(), json!(capacity));
        Err(refusal(
            "workload-too-large",
            format!(
                "the signed workload is {len} bytes; this VM ({} MiB) takes at most {capacity} \
                 (its RAM from 32 MiB to its image or end): give it more memory",
                page.mem_size_mib
            ),
        ))
    }

    /// The configuration page the firmware says it booted with must decode and be
    /// this reservation's (U, I) and this tenant's (CA, server name). What the
    /// reservation expects of its other fields is checked by [`expect::check_page`];
    /// PCR 23, computed from this page, binds it to the quote.
    fn check_config_page<'p>(
        &self,
        req: &BootRequest<'p>,
    ) -> Result<tvp_abi::config::Config<'p>, Refusal> {
        let bad = |why: &str| refusal("config-page", why.to_string());
        let page = tvp_abi::config::decode(req.config_page)
            .map_err(|e| refusal("config-page", e.to_string()))?;
        if page.auth_code != req.auth_code || page.vip != req.vip {
            return Err(bad("the page's U or I is not the request's"));
        }
        if page.ca_cert_der != self.tenant.ca_der.as_slice() {
            return Err(bad("the page trusts another CA"));
        }
        if page.server_name != self.tenant.server_name {
            return Err(bad("the page names another boot server"));
        }
        Ok(page)
    }
}

/// The firmware's boot-failure reason names (`docs/firmware.md`) for the codes it can
/// report after receiving the workload.
pub fn firmware_reason(code: u32) -> &'static str {
    match code {
        11 => "bad-signature",
        15 => "bad-workload",
        19 => "workload-too-large",
        17 => "handover-refused",
        20 => "tpm-failed",
        _ => "other",
    }
}
