//! TLS 1.3 to the boot server: rustls (no_std, unbuffered API, ring provider) over
//! [`TcpStream`]. Trusts only the tenant CA from the configuration page, checks the
//! boot server's name, takes the time from the configuration page (plus the time since
//! boot), and uses the firmware RNG ([`crate::entropy`]) through ring's `getrandom`.
//!
//! The tunnel measurement is the TLS exporter (RFC 8446 §7.5) with label
//! [`EXPORTER_LABEL`], context U, 32 bytes. rustls' unbuffered connections do not
//! offer `export_keying_material`, so the firmware computes it from the exporter
//! master secret, which rustls hands to its [`KeyLog`] hook (label `EXPORTER_SECRET`);
//! the secret never leaves this module. Only SHA-256 cipher suites are offered, so the
//! exporter's hash is SHA-256. The boot server computes the same value with rustls'
//! own exporter (tests compare both).

use crate::clock;
use crate::net::Net;
use crate::tcp::{TcpError, TcpStream};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use rustls::client::{UnbufferedClientConnection, WebPkiServerVerifier};
use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::time_provider::TimeProvider;
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, KeyLog, RootCertStore};
use spinning_top::Spinlock;
use tvp_abi::config::Config;

/// The exporter label of the tunnel measurement.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-tvp-tunnel-measurement";

/// Why TLS failed.
#[derive(Debug)]
pub enum TlsError {
    /// The configuration (CA certificate, server name) is unusable.
    Config,
    /// The server's certificate was rejected.
    Certificate(rustls::Error),
    /// Another TLS protocol error.
    Protocol(rustls::Error),
    /// The TCP connection failed.
    Tcp(TcpError),
    /// The peer closed the connection.
    Closed,
    /// The exporter could not be computed.
    Exporter,
}

impl From<TcpError> for TlsError {
    fn from(e: TcpError) -> Self {
        TlsError::Tcp(e)
    }
}

fn protocol(e: rustls::Error) -> TlsError {
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsError::Certificate(e)
        }
        e => TlsError::Protocol(e),
    }
}

/// Wall-clock time: the configuration page's time plus the time since boot.
#[derive(Debug)]
struct ConfigTime {
    base_secs: u64,
    base_ms: u64,
}

impl TimeProvider for ConfigTime {
    fn current_time(&self) -> Option<UnixTime> {
        let since = clock::now_ms().saturating_sub(self.base_ms) / 1000;
        Some(UnixTime::since_unix_epoch(core::time::Duration::from_secs(
            self.base_secs.saturating_add(since),
        )))
    }
}

/// Keeps the TLS 1.3 exporter master secret rustls reports.
#[derive(Debug, Default)]
struct ExporterSecret(Spinlock<Option<Vec<u8>>>);

impl KeyLog for ExporterSecret {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == "EXPORTER_SECRET" {
            *self.0.lock() = Some(secret.to_vec());
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == "EXPORTER_SECRET"
    }
}

/// What a [`Tls::run`] pass is for.
enum Want<'a> {
    Handshake,
    Send(&'a [u8]),
    /// Send and put on the wire, without waiting for the peer's acknowledgement.
    SendUnacknowledged(&'a [u8]),
    Recv,
}

/// A TLS client connection on a TCP stream.
pub struct Tls {
    conn: UnbufferedClientConnection,
    tcp: TcpStream,
    incoming: Vec<u8>,
    used: usize,
    outgoing: Vec<u8>,
    out_len: usize,
    plaintext: Vec<u8>,
    secret: Arc<ExporterSecret>,
    timeout_ms: u64,
}

/// The client configuration for `cfg`: TLS 1.3, SHA-256 suites, the tenant CA only.
fn client_config(cfg: &Config<'_>, secret: Arc<ExporterSecret>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(cfg.ca_cert_der.to_vec()))
        .map_err(|_| TlsError::Config)?;
    let mut p = provider::default_provider();
    p.cipher_suites = vec![
        provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let p = Arc::new(p);
    let time = Arc::new(ConfigTime {
        base_secs: cfg.time_unix_secs,
        base_ms: clock::now_ms(),
    });
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), p.clone())
        .build()
        .map_err(|_| TlsError::Config)?;
    let mut c = ClientConfig::builder_with_details(p, time)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| TlsError::Config)?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    c.key_log = secret;
    Ok(c)
}

impl Tls {
    /// Runs the TLS 1.3 handshake with the boot server named in `cfg` over `tcp`.
    pub fn connect(
        net: &mut Net,
        tcp: TcpStream,
        cfg: &Config<'_>,
        timeout_ms: u64,
    ) -> Result<Self, TlsError> {
        let secret = Arc::new(ExporterSecret::default());
        let config = Arc::new(client_config(cfg, secret.clone())?);
        let name = ServerName::try_from(cfg.server_name)
            .map_err(|_| TlsError::Config)?
            .to_owned();
        let conn = UnbufferedClientConnection::new(config, name).map_err(protocol)?;
        let mut t = Tls {
            conn,
            tcp,
            incoming: vec![0; 32 * 1024],
            used: 0,
            outgoing: vec![0; 32 * 1024],
            out_len: 0,
            plaintext: Vec::new(),
            secret,
            timeout_ms,
        };
        match t.run(net, Want::Handshake) {
            Ok(()) => Ok(t),
            Err(e) => {
                // Close the TCP connection (FIN) so the boot server learns at once that
                // the handshake failed instead of waiting for its timeout.
                t.tcp.close(net);
                Err(e)
            }
        }
    }

    /// The tunnel measurement: exporter(label, context = `u`, 32 bytes).
    pub fn tunnel_measurement(&self, u: &[u8]) -> Result<[u8; 32], TlsError> {
        let guard = self.secret.0.lock();
        let secret = guard.as_deref().ok_or(TlsError::Exporter)?;
        exporter(secret, EXPORTER_LABEL, u).ok_or(TlsError::Exporter)
    }

    /// Sends `data` as application data.
    pub fn send(&mut self, net: &mut Net, data: &[u8]) -> Result<(), TlsError> {
        self.run(net, Want::Send(data))
    }

    /// Sends `data` and puts it on the wire without waiting for the peer's
    /// acknowledgement: the firmware's last frame, after the handover, when tvp-vmm no
    /// longer delivers received frames to the firmware (it freezes the receive queue at
    /// the handover, `docs/vmm-boot.md`), so an acknowledgement would never arrive.
    pub fn send_unacknowledged(&mut self, net: &mut Net, data: &[u8]) -> Result<(), TlsError> {
        self.run(net, Want::SendUnacknowledged(data))
    }

    /// Receives application data (at least one record's worth).
    pub fn recv(&mut self, net: &mut Net) -> Result<Vec<u8>, TlsError> {
        if self.plaintext.is_empty() {
            self.run(net, Want::Recv)?;
        }
        Ok(core::mem::take(&mut self.plaintext))
    }

    /// Closes the TCP connection (TLS close_notify is not required by the protocol).
    pub fn close(self, net: &mut Net) {
        self.tcp.close(net);
    }

    fn run(&mut self, net: &mut Net, want: Want<'_>) -> Result<(), TlsError> {
        loop {
            let mut transmit = false;
            let mut need_read = false;
            let mut done = false;
            let t0 = crate::profile::cycles();
            let UnbufferedStatus { mut discard, state } = self
                .conn
                .process_tls_records(&mut self.incoming[..self.used]);
            match state.map_err(protocol)? {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        let rec = rec.map_err(protocol)?;
                        discard += rec.discard;
                        self.plaintext.extend_from_slice(rec.payload);
                    }
                    crate::profile::add(
                        crate::profile::Phase::Tls,
                        crate::profile::cycles().wrapping_sub(t0),
                    );
                    if matches!(want, Want::Recv) {
                        done = true;
                    }
                }
                ConnectionState::EncodeTlsData(mut e) => loop {
                    match e.encode(&mut self.outgoing[self.out_len..]) {
                        Ok(n) => {
                            self.out_len += n;
                            break;
                        }
                        Err(rustls::unbuffered::EncodeError::InsufficientSize(s)) => {
                            self.outgoing.resize(self.out_len + s.required_size, 0);
                        }
                        Err(_) => return Err(TlsError::Protocol(rustls::Error::EncryptError)),
                    }
                },
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    transmit = true;
                }
                ConnectionState::BlockedHandshake => need_read = true,
                ConnectionState::WriteTraffic(mut w) => match want {
                    Want::Handshake => done = true,
                    Want::Send(d) | Want::SendUnacknowledged(d) => {
                        let need = self.out_len + d.len() + 1024;
                        if self.outgoing.len() < need {
                            self.outgoing.resize(need, 0);
                        }
                        let n = w
                            .encrypt(d, &mut self.outgoing[self.out_len..])
                            .map_err(|_| TlsError::Protocol(rustls::Error::EncryptError))?;
                        self.out_len += n;
                        transmit = true;
                        done = true;
                    }
                    Want::Recv => {
                        if self.plaintext.is_empty() {
                            need_read = true;
                        } else {
                            done = true;
                        }
                    }
                },
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    if matches!(want, Want::Recv) && !self.plaintext.is_empty() {
                        done = true;
                    } else {
                        return Err(TlsError::Closed);
                    }
                }
                _ => need_read = true,
            }
            if discard > 0 {
                self.incoming.copy_within(discard..self.used, 0);
                self.used -= discard;
            }
            if transmit && self.out_len > 0 {
                self.tcp
                    .write_all(net, &self.outgoing[..self.out_len], self.timeout_ms)?;
                self.out_len = 0;
            }
            if done {
                if transmit && !matches!(want, Want::SendUnacknowledged(_)) {
                    self.tcp.flush(net, self.timeout_ms)?;
                }
                return Ok(());
            }
            if need_read {
                if self.incoming.len() - self.used < 16 * 1024 {
                    self.incoming.resize(self.used + 32 * 1024, 0);
                }
                let n = self
                    .tcp
                    .read(net, &mut self.incoming[self.used..], self.timeout_ms)?;
                if n == 0 {
                    return Err(TlsError::Closed);
                }
                self.used += n;
            }
        }
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with SHA-256.
fn expand_label(secret: &[u8], label: &[u8], context: &[u8], out: &mut [u8]) -> Option<()> {
    struct Len(usize);
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let full = 6 + label.len();
    if full > 255 || context.len() > 255 || out.len() > u16::MAX as usize {
        return None;
    }
    let len = (out.len() as u16).to_be_bytes();
    let info: [&[u8]; 6] = [
        &len,
        &[full as u8],
        b"tls13 ",
        label,
        &[context.len() as u8],
        context,
    ];
    let prk = ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, secret);
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

/// The TLS 1.3 exporter (RFC 8446 §7.5) from the exporter master secret, SHA-256.
pub fn exporter(secret: &[u8], label: &[u8], context: &[u8]) -> Option<[u8; 32]> {
    let empty_hash = tvp_abi::measure::sha256(b"");
    let mut derived = [0u8; 32];
    expand_label(secret, label, &empty_hash, &mut derived)?;
    let ctx_hash = tvp_abi::measure::sha256(context);
    let mut out = [0u8; 32];
    expand_label(&derived, b"exporter", &ctx_hash, &mut out)?;
    Some(out)
}
