//! Serving the API on a Unix socket: caller identity, limits, timeouts, shutdown.

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

use super::error::ApiError;
use super::gate::{self, Received};
use super::handlers::AppState;
use super::peer::{AccessPolicy, Caller};
use super::{access, request};

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's headers, and separately its body.
    pub request_timeout: Duration,
    /// Largest body.
    pub max_body: usize,
    /// Most concurrent connections.
    pub max_connections: usize,
}

/// How long in-flight requests may take to finish after shutdown is requested.
const GRACE: Duration = Duration::from_secs(5);

/// Accept and serve connections until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    state: Arc<AppState>,
    policy: Arc<AccessPolicy>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let sem = Arc::new(Semaphore::new(limits.max_connections));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
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
        let (state, policy) = (state.clone(), policy.clone());
        tasks.spawn(async move {
            serve_connection(stream, state, policy, limits).await;
            drop(permit);
        });
    }
    info!(in_flight = tasks.len(); "API shutting down");
    let _ = tokio::time::timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
}

async fn serve_connection(
    stream: UnixStream,
    state: Arc<AppState>,
    policy: Arc<AccessPolicy>,
    limits: Limits,
) {
    let caller = match stream.peer_cred() {
        Ok(c) => Caller {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        },
        Err(e) => {
            warn!(error = e.to_string(); "cannot identify API caller (SO_PEERCRED); closing");
            return;
        }
    };
    let svc = service_fn(move |req| {
        let (state, policy) = (state.clone(), policy.clone());
        async move { Ok::<_, Infallible>(handle(req, caller, state, &policy, limits).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        // A client may shut down its write side and wait for the answer; its request
        // still runs (and is audited) to the end.
        .half_close(true)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        log::debug!(error = e.to_string(), uid = caller.uid; "API connection ended with an error");
    }
}

async fn handle(
    req: Request<Incoming>,
    caller: Caller,
    state: Arc<AppState>,
    policy: &AccessPolicy,
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
    // Every request, even one refused before parsing, is audited by the gate.
    let received = receive(req, caller, policy, limits).await;
    // Audit, decide, execute in a task of its own: a client that goes away cannot
    // cancel it between its decision and result records.
    let m = method.clone();
    let gated = tokio::spawn(async move {
        gate::run(&state, caller, &m, &full_path, received, token.as_deref()).await
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
            json_response(reply.status, reply.body, None)
        }
        Err(e) => {
            let level = if e.status == 403 || e.status >= 500 {
                log::Level::Warn
            } else {
                log::Level::Info
            };
            log::log!(level, method = method.as_str(), path = path.as_str(), status = e.status, code = e.code, uid = caller.uid, gid = caller.gid, pid = pid, reason = e.message.as_str(); "request refused");
            let body = serde_json::to_vec(&e.body()).unwrap_or_default();
            json_response(e.status, body, e.allow)
        }
    }
}

/// Receive and parse one request (no execution: that is [`gate::run`]). A caller
/// who may not use the API is refused before anything else.
async fn receive(
    req: Request<Incoming>,
    caller: Caller,
    policy: &AccessPolicy,
    limits: Limits,
) -> Received {
    access::check_caller(policy, &caller)?;
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
    Ok((parsed, bytes))
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
