//! ACS networking (design §5): length-prefixed versioned frames, TLS everywhere
//! (tokio-rustls), entry relays, exchange servers, clients, and the `acs` binary.
//!
//! Not built yet: see the transport issue. The engine it will drive is `acs-engine`.
