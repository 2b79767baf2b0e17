//! ACS networking (design §5): length-prefixed versioned frames ([`wire`]), TLS
//! everywhere with tokio-rustls on the ring provider ([`tls`], [`certs`]), guarded
//! listeners ([`listener`]), the engine's [`acs_engine::channel::Channel`] over mutual TLS
//! ([`mpc`]), the exchange server's crash-safe database ([`db`]), the entry relay
//! ([`relay`]) and the exchange server's relay-facing port ([`relay_port`]).

pub mod certs;
pub mod client;
pub mod config;
pub mod db;
pub mod demo;
pub mod exchange;
pub mod listener;
pub mod mpc;
pub mod relay;
pub mod relay_port;
pub mod tls;
pub mod user;
pub mod wire;

#[cfg(test)]
mod testkit;
