//! `tvp-boot-server`: the tenant's Secure Trusted boot server (reference
//! implementation, `docs/boot-protocol.md`, `docs/boot-server.md`).
//!
//! Modules: [`reservations`] (the (I, U) reservations with the tenant's expectations,
//! spent only by a delivery, failed attempts bounded), [`ledger`] (what happened to
//! them, on disk, so a restart forgets neither), [`expect`] (those expectations
//! against the VM's page and management binding), [`protocol`] (frames of the boot
//! protocol), [`tls`] (the rustls server configuration and the tunnel-measurement
//! exporter), [`attest`] (the evidence checks), [`deep`] (the host's evidence and the
//! VM's own TPM's quote as one), [`workload`] (signed workloads),
//! [`server`] (a thread per connection, JSON-lines report of every decision).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod attest;
pub mod deep;
pub mod expect;
pub mod ledger;
pub mod protocol;
pub mod reservations;
pub mod server;
pub mod tls;
pub mod workload;
