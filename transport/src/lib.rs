//! ACS networking (design §5) and the running system.
//!
//! - [`wire`]: the one codec: versioned, length-prefixed frames with per-type caps;
//! - [`tls`], [`certs`]: TLS on the ring provider, role names in certificates, `acs certs`;
//! - [`listener`]: guarded TLS listeners (connection cap, handshake timeout, shutdown);
//! - [`mpc`]: the engine's [`acs_engine::channel::Channel`] over mutual TLS between the
//!   three exchange servers, plus their coordination queue;
//! - [`db`]: the exchange server's crash-safe database (redb);
//! - [`relay`], [`relay_port`]: the entry relay and the exchange server's side of it;
//! - [`exchange`]: the exchange server (clock, collection, kgc intake, commit, server loop);
//! - [`client`], [`user`]: a user's relay connection and the user client; [`output`]: what
//!   a server seals to a user each round (its output share, or `retry`); [`keyring`]: a
//!   user's keys with each server across master-secret epochs;
//! - [`config`]: TOML configuration; [`check`]: `acs check`; [`demo`]: `acs demo`;
//! - [`metrics`]: Prometheus metrics and health checks (`/metrics`, `/healthz`).

pub mod certs;
pub mod check;
pub mod client;
pub mod config;
pub mod db;
pub mod demo;
pub mod exchange;
pub mod keyring;
pub mod listener;
pub mod metrics;
pub mod mpc;
pub mod output;
pub mod relay;
pub mod relay_port;
pub mod tls;
pub mod user;
pub mod wire;

#[cfg(test)]
mod testkit;
