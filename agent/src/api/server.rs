//! Serving the API on a Unix socket: caller identity and role at accept, connection
//! slots, limits, timeouts, aggregated refusals, shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{info, warn};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::denials::Denials;
use super::error::ApiError;
use super::gate::{self, Received};
use super::handlers::AppState;
use super::peer::{Caller, Role, SharedPolicy};
use super::slots::{SlotLimits, Slots};
use super::{access, request};

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's headers, and separately its body.
    pub request_timeout: Duration,
    /// Largest body.
    pub max_body: usize,
    /// Connection slots: in all, per uid, reserved for managers.
    pub slots: SlotLimits,
    /// How often refused requests are written to the audit trail (in aggregate).
    pub denial_flush_interval: Duration,
}

/// Largest request head (request line and headers), as documented in `docs/api.md`.
pub const MAX_HEAD: usize = 64 * 1024;

/// How long tvpd keeps reading (and discarding) from a connection it refused at
/// accept, so that the client can finish sending and read the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Most refused connections lingering at once; beyond, they are closed at once.
const MAX_LINGERING: usize = 256;

/// How long in-flight requests may take to finish after shutdown is requested.
const GRACE: Duration = Duration::from_secs(5);

/// Accept and serve connections until `shutdown` resolves. Each connection's caller
/// is identified (SO_PEERCRED) and given its role as it is accepted: a caller without
/// a role, or without a free slot ([`Slots`]), is answered (403 or 503) and closed
/// at once, without a slot and without reading a request. Refusals are audited in
/// aggregate ([`Denials`]), flushed every `denial_flush_interval` and at the end.
pub async fn serve(
    listener: UnixListener,
    state: Arc<AppState>,
    policy: Arc<SharedPolicy>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Slots::new(limits.slots);
    let denials = Arc::new(Denials::new());
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let mut tasks = JoinSet::new();
    let flusher = tokio::spawn(flush_denials(
        state.clone(),
        denials.clone(),
        limits.denial_flush_interval,
    ));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        // Reap finished connection tasks.
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = e.to_string(); "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let caller = match stream.peer_cred() {
            Ok(c) => Caller {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                warn!(error = e.to_string(); "cannot identify API caller (SO_PEERCRED); closing");
                continue;
            }
        };
        let admitted = access::check_caller(&policy.current(), &caller)
            .and_then(|role| slots.take(caller.uid, role).map(|slot| (role, slot)));
        let (role, slot) = match admitted {
            Ok(a) => a,
            Err(e) => {
                log_refusal("connect", "", &caller, &e);
                denials.count(caller.uid, "connect", &e);
                refuse_at_accept(stream, &e, &lingering);
                continue;
            }
        };
        let (state, denials) = (state.clone(), denials.clone());
        tasks.spawn(async move {
            serve_connection(stream, state, denials, caller, role, limits).await;
            drop(slot);
        });
    }
    info!(in_flight = tasks.len(); "API shutting down");
    let _ = tokio::time::timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    flusher.abort();
    if let Err(e) = denials.flush(&state.audit).await {
        warn!(error = e.to_string(), refused = denials.pending(); "refused requests not recorded at shutdown");
    }
}

/// Write the denial counts every `every` (when there are any).
async fn flush_denials(state: Arc<AppState>, denials: Arc<Denials>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = denials.flush(&state.audit).await {
            warn!(error = e.to_string(), refused = denials.pending(); "refused requests not recorded yet; retrying");
        }
    }
}

/// Answer a connection refused at accept with `e` and close it; the client gets
/// [`REFUSAL_LINGER`] to finish sending (what it sends is discarded), if fewer than
/// [`MAX_LINGERING`] refused connections linger already.
fn refuse_at_accept(stream: UnixStream, e: &ApiError, lingering: &Arc<Semaphore>) {
    let body = serde_json::to_vec(&e.body()).unwrap_or_default();
    let reason = hyper::StatusCode::from_u16(e.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Refused");
    let mut answer = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        e.status,
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    // A fresh socket's send buffer holds this; if not, the client gets nothing.
    let _ = stream.try_write(&answer);
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        drop(permit);
    });
}

fn log_refusal(method: &str, path: &str, caller: &Caller, e: &ApiError) {
    let pid = caller.pid.unwrap_or(-1);
    log::log!(refusal_level(e), method = method, path = path, status = e.status, code = e.code, uid = caller.uid, gid = caller.gid, pid = pid, reason = e.message.as_str(); "request refused");
}

fn refusal_level(e: &ApiError) -> log::Level {
    if e.status == 403 || e.status >= 500 {
        log::Level::Warn
    } else {
        log::Level::Info
    }
}

async fn serve_connection(
    stream: UnixStream,
    state: Arc<AppState>,
    denials: Arc<Denials>,
    caller: Caller,
    role: Role,
    limits: Limits,
) {
    let svc = service_fn(move |req| {
        let (state, denials) = (state.clone(), denials.clone());
        async move { Ok::<_, Infallible>(handle(req, caller, role, state, denials, limits).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        // A client may shut down its write side and wait for the answer; its request
        // still runs (and is audited) to the end.
        .half_close(true)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        log::debug!(error = e.to_string(), uid = caller.uid; "API connection ended with an error");
    }
}

async fn handle(
    req: Request<Incoming>,
    caller: Caller,
    role: Role,
    state: Arc<AppState>,
    denials: Arc<Denials>,
    limits: Limits,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let full_path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let token = req
        .headers()
        .get("x-tvp-authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    // Every request goes to the gate: a refusal is counted, the others recorded.
    let received = receive(req, caller, role, state.platform_pcr, limits).await;
    let receive_us = started.elapsed().as_micros() as u64;
    // Audit, decide, execute in a task of its own: a client that goes away cannot
    // cancel it between its decision and result records.
    let m = method.clone();
    let gated = tokio::spawn(async move {
        gate::run(
            &state,
            &denials,
            caller,
            &m,
            &full_path,
            received,
            token.as_deref(),
        )
        .await
    })
    .await;
    let result = gated.unwrap_or_else(|e| {
        Err(ApiError::internal(format!(
            "the request's task failed: {e}"
        )))
    });
    let pid = caller.pid.unwrap_or(-1);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok((name, reply)) => {
            info!(op = name, method = method.as_str(), path = path.as_str(), status = reply.status, uid = caller.uid, pid = pid, ms = format!("{ms:.2}"); "request");
            let r = json_response(reply.status, reply.body, None);
            log::debug!(op = name, receive_us = receive_us, total_us = started.elapsed().as_micros() as u64; "request timing");
            r
        }
        Err(e) => {
            log_refusal(&method, &path, &caller, &e);
            let body = serde_json::to_vec(&e.body()).unwrap_or_default();
            json_response(e.status, body, e.allow)
        }
    }
}

/// Receive and parse one request (no execution: that is [`gate::run`]) of a caller
/// in `role`: a head over [`MAX_HEAD`] is refused before the body is read, a request
/// the role does not cover once parsed.
async fn receive(
    req: Request<Incoming>,
    caller: Caller,
    role: Role,
    platform_pcr: u32,
    limits: Limits,
) -> Received {
    let head = head_len(&req);
    if head > MAX_HEAD {
        return Err(ApiError {
            status: 431,
            code: "head_too_large",
            message: format!(
                "the request line and headers are {head} bytes; at most {MAX_HEAD} are accepted"
            ),
            allow: None,
        });
    }
    if let Some(ct) = req.headers().get(hyper::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("?");
        if !ct.starts_with("application/json") {
            return Err(ApiError::unsupported_media(ct));
        }
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(ApiError::too_large(limits.max_body));
    }
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let body = Limited::new(req.into_body(), limits.max_body);
    let bytes = match tokio::time::timeout(limits.request_timeout, body.collect()).await {
        Err(_) => {
            return Err(ApiError::timeout(format!(
                "request body not received within {} ms",
                limits.request_timeout.as_millis()
            )))
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(ApiError::too_large(limits.max_body));
            }
            return Err(ApiError::invalid_argument(format!(
                "cannot read request body: {e}"
            )));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let parsed = request::parse(&method, &path, &bytes)?;
    access::check_role(role, &caller, &parsed, platform_pcr)?;
    Ok((parsed, bytes))
}

/// The size of a request's head as sent: request line and header lines.
fn head_len<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
        + 2
}

fn json_response(status: u16, body: Vec<u8>, allow: Option<&'static str>) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(a) = allow {
        b = b.header(hyper::header::ALLOW, a);
    }
    b.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
