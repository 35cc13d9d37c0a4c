//! The local API: HTTP/1.1 + JSON on a Unix socket (`docs/api.md`, `docs/openapi.yaml`).
//!
//! The path of a request, one way: [`server`] accepts connections, identifies the
//! caller (SO_PEERCRED, [`peer`]), enforces size and time limits and turns each HTTP
//! request into one typed [`request::ApiRequest`] (route and body parsing; [`query`]
//! parses query strings and nonces) or an [`ApiError`]; [`gate::run`] describes it,
//! decides it ([`access`]: every access rule), records the decision and result in the
//! audit trail (`crate::audit`) and calls [`handlers::execute`], the single place that
//! runs requests, only if allowed.

pub mod access;
pub mod denials;
pub mod error;
pub mod gate;
pub mod handlers;
pub mod peer;
pub mod query;
pub mod request;
pub mod server;
pub mod slots;
pub mod types;

pub use error::ApiError;
pub use request::ApiRequest;
