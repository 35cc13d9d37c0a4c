//! What the tvpd fuzz targets share: framing raw HTTP request bytes the way hyper does
//! before tvpd sees them, the checks of a parsed request, and the seed documents.

use tvp_agent::api::{ApiError, ApiRequest};
use tvp_agent::vm::VmId;

/// One HTTP request as tvpd's server hands it to `api::request::parse`: the method,
/// the path with its query (hyper's `path_and_query`) and the body.
#[derive(Debug)]
pub struct Framed {
    /// Method token (`GET`, `POST`, or any extension method hyper accepts).
    pub method: String,
    /// Path and query string.
    pub path: String,
    /// The body (`Content-Length` bytes after the head).
    pub body: Vec<u8>,
}

/// Frame `raw` (head and body) as hyper would: `None` where hyper itself answers (an
/// incomplete or malformed head, an invalid URI or method, a body shorter than its
/// `Content-Length`, a chunked body) and tvpd's parser is never called.
pub fn frame(raw: &[u8]) -> Option<Framed> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let method = http::Method::from_bytes(req.method?.as_bytes()).ok()?;
    let uri: http::Uri = req.path?.parse().ok()?;
    let path = uri.path_and_query()?.as_str().to_string();
    let mut length = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
        }
    }
    let rest = &raw[head_len..];
    let body = rest.get(..length)?.to_vec();
    Some(Framed {
        method: method.as_str().to_string(),
        path,
        body,
    })
}

fn nonce_ok(n: &[u8]) -> bool {
    (1..=32).contains(&n.len())
}

/// The VM id segment of a `/v1/vms/{id}...` path.
fn id_segment(path: &str) -> Option<&str> {
    let p = path.split('?').next()?;
    p.strip_prefix("/v1/vms/")?.split('/').next()
}

/// A refusal is a 4xx with a code and a message a user can act on; a 405 names the
/// methods the path allows (and not the one used), nothing else carries `allow`.
pub fn check_refusal(method: &str, e: &ApiError) {
    assert!((400..500).contains(&e.status), "refusal {e:?} is not a 4xx");
    assert!(!e.code.is_empty(), "refusal without a code: {e:?}");
    assert!(
        !e.message.trim().is_empty(),
        "refusal without a message: {e:?}"
    );
    match e.allow {
        Some(allow) => {
            assert_eq!(e.status, 405, "{e:?}");
            assert!(!allow.split(", ").any(|m| m == method), "{e:?}");
        }
        None => assert_ne!(e.status, 405, "405 without allow: {e:?}"),
    }
}

/// An accepted request re-validates: every VM id obeys the `VmId` rule and is the
/// path's id segment; nonces are 1..=32 bytes; PCR lists non-empty with indexes
/// <= 23; credential buffers 1..=1024 bytes; image paths absolute; an operation
/// carries exactly its parameter keys; a GET carries no body and changes nothing.
pub fn check_accepted(method: &str, path: &str, body: &[u8], r: &ApiRequest) {
    if method == "GET" {
        assert!(body.is_empty(), "GET with a body accepted: {r:?}");
        assert!(r.read_only(), "GET {path} changes state: {r:?}");
    }
    if let Some(vm) = r.vm() {
        if !matches!(r, ApiRequest::CreateVm(_)) {
            let id = VmId::parse(vm).unwrap_or_else(|e| panic!("accepted VM id {vm:?}: {e}"));
            assert_eq!(id.as_str(), vm);
            assert_eq!(id_segment(path), Some(vm), "{path} -> {r:?}");
        }
    }
    if r.root_only() {
        assert!(path.starts_with("/v1/audit"), "{path} -> {r:?}");
    }
    match r {
        ApiRequest::Quote { nonce, pcrs } => {
            assert!(nonce_ok(nonce), "{r:?}");
            if let Some(p) = pcrs {
                assert!(!p.is_empty() && p.iter().all(|&i| i <= 23), "{r:?}");
            }
        }
        ApiRequest::CertifyBindingKey { nonce } | ApiRequest::CertifyAuditAnchor { nonce } => {
            assert!(nonce_ok(nonce), "{r:?}")
        }
        ApiRequest::GetVmAudit { nonce, .. } => {
            assert!(nonce.as_deref().is_none_or(nonce_ok), "{r:?}")
        }
        ApiRequest::ActivateCredential {
            credential_blob,
            secret,
        } => {
            for b in [credential_blob, secret] {
                assert!((1..=1024).contains(&b.len()), "{r:?}");
            }
        }
        ApiRequest::VerifyImage { image, kms_socket } => {
            assert!(image.is_absolute() && kms_socket.is_absolute(), "{r:?}")
        }
        ApiRequest::VmOperation { op, params, .. } => {
            assert_ne!(op.name(), "delete");
            let keys: Vec<&str> = params.keys().map(String::as_str).collect();
            let mut want = op.param_keys().to_vec();
            want.sort_unstable();
            assert_eq!(keys, want, "{r:?}");
            for v in params.values() {
                assert!(!v.is_empty() && !v.chars().any(char::is_control), "{r:?}");
            }
        }
        _ => {}
    }
}

/// A raw HTTP request with a JSON body.
fn post(path: &str, body: &str) -> Vec<u8> {
    with_body("POST", path, body)
}

/// A raw HTTP request with a JSON body and any method.
fn with_body(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: tvp\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A raw HTTP request without a body.
fn bodiless(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nhost: tvp\r\n\r\n").into_bytes()
}

/// Seeds of `api_request`: one valid request of every route (as `tvpctl` and curl
/// send them), and a few refusals.
pub fn api_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let create = r#"{"id":"vm-1","vip":"10.0.0.2/24","gateway":"10.0.0.1","mac":"02:00:00:00:00:01","auth_code":"secret","boot_server":"10.0.0.1:7000","boot_server_name":"boot.example","tenant_ca_pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","vcpus":1,"memory_mib":64,"management_public_key":"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n","policy":{"v":1}}"#;
    vec![
        ("get-host", bodiless("GET", "/v1/host")),
        ("list-vms", bodiless("GET", "/v1/vms")),
        ("create-vm", post("/v1/vms", create)),
        ("get-vm", bodiless("GET", "/v1/vms/vm-1")),
        ("delete-vm", bodiless("DELETE", "/v1/vms/vm-1")),
        (
            "vm-operation",
            post("/v1/vms/vm-1/operations", r#"{"op":"pause"}"#),
        ),
        (
            "vm-operation-params",
            post(
                "/v1/vms/vm-1/operations",
                r#"{"op":"snapshot-create","params":{"name":"s1"}}"#,
            ),
        ),
        (
            "quote",
            post("/v1/host/quote", r#"{"nonce":"0a0b0c0d","pcrs":[15,23]}"#),
        ),
        ("event-log", bodiless("GET", "/v1/host/event-log")),
        ("unmanaged-vms", bodiless("GET", "/v1/host/unmanaged-vms")),
        (
            "verify-image",
            post(
                "/v1/images/verify",
                r#"{"image":"/var/lib/tvp/images/a.img","kms_socket":"/run/kms.sock"}"#,
            ),
        ),
        (
            "binding-key",
            post("/v1/host/binding-key", r#"{"nonce":"00112233"}"#),
        ),
        (
            "activate-credential",
            post(
                "/v1/host/activate-credential",
                r#"{"credential_blob":"AAECAw==","secret":"BAUGBw=="}"#,
            ),
        ),
        ("audit", bodiless("GET", "/v1/audit?since=3")),
        (
            "audit-anchor",
            post("/v1/audit/anchor", r#"{"nonce":"ffee"}"#),
        ),
        (
            "vm-audit",
            bodiless("GET", "/v1/vms/vm-1/audit?since=2&nonce=0a0b"),
        ),
        (
            "absolute-form",
            bodiless("GET", "http://tvp/v1/vms/vm-1?x=1"),
        ),
        ("refused-method", bodiless("PUT", "/v1/host")),
        ("refused-bad-id", bodiless("GET", "/v1/vms/Bad_Id/audit")),
        ("refused-get-body", with_body("GET", "/v1/host", "{}")),
    ]
}

/// Seeds of `config_toml`: the shipped configuration file, a file setting every key,
/// and the empty file (all defaults).
pub fn config_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let every_key = r#"socket = "/run/tvp/t.sock"
socket_mode = "0o640"
socket_group = "tvp"
tcti = "swtpm:path=/run/swtpm.sock"
state_dir = "/var/lib/tvp2"
platform_pcr = 14
ek_handle = 0x81010001
ak_handle = 2164326402
audit_nv_index = 0x01500001
allowed_users = ["alice", "1001"]
allowed_groups = ["tvp"]
platform_artefacts = ["/usr/bin/tvp-vmm", "/etc/tvp/x"]
request_timeout_ms = 5000
max_body_bytes = 4096
max_connections = 8
log_level = "debug"
log_format = "json"
kvm_scan_interval_ms = 1000
vmm_binary = "/usr/local/bin/tvp-vmm"
firmware = "/usr/local/lib/tvp/firmware.elf"
tap_prefix = "tv-1"
vm_bridge = "br0"
image_dir = "/var/lib/tvp/images"
vmm_user = "1000:1000"
"#;
    vec![
        (
            "shipped",
            include_bytes!("../../../scripts/tvpd.toml").to_vec(),
        ),
        ("every-key", every_key.as_bytes().to_vec()),
        ("empty", Vec::new()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regenerate the seed corpora: `cargo test --manifest-path agent/fuzz/Cargo.toml
    /// -- --ignored write_seeds`.
    #[test]
    #[ignore]
    fn write_seeds() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus");
        for (target, seeds) in [
            ("api_request", api_seeds()),
            ("config_toml", config_seeds()),
        ] {
            let dir = format!("{root}/{target}");
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in seeds {
                std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
            }
        }
    }

    #[test]
    fn seeds_frame_and_valid_ones_parse() {
        for (name, raw) in api_seeds() {
            let f = frame(&raw).unwrap_or_else(|| panic!("{name} does not frame"));
            let r = tvp_agent::api::request::parse(&f.method, &f.path, &f.body);
            assert_eq!(r.is_ok(), !name.starts_with("refused"), "{name}: {r:?}");
        }
    }
}
