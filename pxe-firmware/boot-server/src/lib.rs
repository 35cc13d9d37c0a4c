//! `tvp-boot-server`: the tenant's Secure Trusted boot server (reference
//! implementation, `docs/boot-protocol.md`).
//!
//! Modules: [`reservations`] (the (I, U) reservations, single use), [`protocol`] (the
//! boot request and the reply lines), [`tls`] (the rustls server configuration and the
//! tunnel-measurement exporter), [`server`] (one connection at a time, JSON-lines
//! report of every decision).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod protocol;
pub mod reservations;
pub mod server;
pub mod tls;
