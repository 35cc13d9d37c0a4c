//! A small blocking HTTP/1.1 client for tvpd's Unix socket (one request per
//! connection, `Connection: close`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest response accepted.
const MAX_RESPONSE: u64 = 64 << 20;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket cannot be reached.
    #[error(
        "cannot connect to tvpd at {path}: {source} (is tvpd running? use --socket or TVP_SOCKET)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("talking to tvpd: {0}")]
    Io(#[from] std::io::Error),
    /// The reply is not HTTP as expected.
    #[error("malformed reply from tvpd: {0}")]
    Protocol(String),
}

/// A reply: status and body.
#[derive(Debug)]
pub struct HttpReply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Send one request and read the whole reply.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<HttpReply, ClientError> {
    request_with_token(socket, method, path, body, None)
}

/// [`request`] with a tenant authorization token in the `X-Tvp-Authorization` header
/// (base64url text; anything else is refused here).
pub fn request_with_token(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
) -> Result<HttpReply, ClientError> {
    let token = token.map(str::trim);
    if let Some(t) = token {
        if t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ClientError::Protocol(
                "the authorization token is not base64url text (tvpctl authorize prints one)"
                    .into(),
            ));
        }
    }
    let mut s = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: tvpd\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        head.push_str(&format!("X-Tvp-Authorization: {t}\r\n"));
    }
    head.push_str("\r\n");
    // tvpd may answer before reading the whole body (413 from the declared length)
    // and close: then the write fails, but the reply is waiting to be read.
    let wrote = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let raw = read_reply(&mut s).map_err(|e| match wrote {
        Err(w) => ClientError::from(w),
        Ok(()) => e.into(),
    })?;
    parse_reply(&raw)
}

/// Reads the reply until EOF (at most [`MAX_RESPONSE`] bytes). A reset after some
/// bytes ends the reply too: a server that closes with part of our request unread
/// makes the kernel report ECONNRESET once its reply has been read.
fn read_reply(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while (raw.len() as u64) < MAX_RESPONSE {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    raw.truncate(MAX_RESPONSE as usize);
    Ok(raw)
}

fn parse_reply(raw: &[u8]) -> Result<HttpReply, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ClientError::Protocol(
                "reply ended inside the headers".into(),
            ))
        }
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let status = resp
        .code
        .ok_or_else(|| ClientError::Protocol("no status code".into()))?;
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let rest = &raw[n..];
    let body = match len {
        Some(l) if l <= rest.len() => rest[..l].to_vec(),
        Some(l) => {
            return Err(ClientError::Protocol(format!(
                "body truncated: {} of {l} bytes",
                rest.len()
            )))
        }
        None => rest.to_vec(),
    };
    Ok(HttpReply { status, body })
}
