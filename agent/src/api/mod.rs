//! The local API: HTTP/1.1 + JSON on a Unix socket (`docs/api.md`, `docs/openapi.yaml`).
//!
//! [`server`] accepts connections, identifies the caller (SO_PEERCRED, [`peer`]),
//! enforces size and time limits and turns each HTTP request into one typed
//! [`request::ApiRequest`]; [`handlers::execute`] is the single place that runs them.

pub mod audit_routes;
pub mod audited;
pub mod error;
pub mod handlers;
pub mod peer;
pub mod request;
pub mod server;
pub mod types;

pub use error::ApiError;
pub use request::ApiRequest;
