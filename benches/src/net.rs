//! How the three parties of a bench run are connected (`--net`).
//!
//! - `inproc`: one process, three threads, in-memory channels (the engine's own
//!   `testing::run_three`). Measures the computation without any network stack.
//! - `tls`: three threads, each with its own tokio runtime and its own mutual-TLS
//!   endpoint, connected over loopback by exactly the mesh `acs exchange` uses
//!   (`acs_transport::mpc::establish`: TLS 1.3 with rustls/ring, client certificates from a
//!   throwaway development CA, length-prefixed frames, a writer and a reader task per
//!   link). This is the like-for-like setting for comparing with peers that run three
//!   processes over sockets: every message is encrypted, framed, written to a socket and
//!   read back by another runtime.

use acs_engine::channel::PartyId;
use acs_engine::{EngineError, Party};
use acs_transport::certs;
use acs_transport::listener::Limits;
use acs_transport::mpc::{self, MeshConfig};
use acs_transport::tls::{self, Identity, Role};
use acs_transport::wire::RoundStatus;
use clap::ValueEnum;
use std::sync::Arc;
use std::time::Duration;

/// How the parties talk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// In-memory channels in one process.
    #[default]
    Inproc,
    /// The mutual-TLS mesh on loopback, one tokio runtime per party.
    Tls,
}

/// Runs `f` as each of the three parties and returns the results in party order.
pub fn run_parties<T, F>(net: Net, f: F) -> Result<[Result<T, EngineError>; 3], String>
where
    T: Send + 'static,
    F: Fn(&mut Party) -> Result<T, EngineError> + Send + Sync + 'static,
{
    match net {
        Net::Inproc => Ok(acs_engine::testing::run_three(f)),
        Net::Tls => run_over_tls(f),
    }
}

fn run_over_tls<T, F>(f: F) -> Result<[Result<T, EngineError>; 3], String>
where
    T: Send + 'static,
    F: Fn(&mut Party) -> Result<T, EngineError> + Send + Sync + 'static,
{
    let pki = certs::generate(&certs::deployment_roles(3, 0)).map_err(|e| e.to_string())?;
    let roots = tls::roots_from_pem(&pki.ca.cert_pem).map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        addrs.push(l.local_addr().map_err(|e| e.to_string())?);
        listeners.push(l);
    }
    let mut configs = Vec::new();
    for i in 0..3 {
        let leaf = pki
            .leaf(Role::Exchange(i as u8))
            .ok_or("development CA lacks an exchange certificate")?;
        let identity =
            Identity::from_pem(&leaf.cert_pem, &leaf.key_pem).map_err(|e| e.to_string())?;
        let kgc = acs_kgc::Kgc::new(acs_kgc::MasterSecret::generate(&mut rand::rngs::OsRng));
        configs.push(MeshConfig {
            party: PartyId::new(i).expect("0..3"),
            deployment: "acs-bench".into(),
            next_addr: addrs[(i + 1) % 3],
            descriptor: mpc::descriptor_for(&kgc, &identity),
            identity,
            roots: roots.clone(),
            establish_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            status: RoundStatus::default(),
            config_digest: [0; 32],
        });
    }
    let f = Arc::new(f);
    let finished = Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
    let handles: Vec<_> = configs
        .into_iter()
        .zip(listeners)
        .map(|(cfg, listener)| {
            let f = f.clone();
            let finished = finished.clone();
            std::thread::Builder::new()
                .name(format!("party-{}-tls", cfg.party.index()))
                .spawn(move || -> Result<T, EngineError> {
                    // Two workers drive this party's TLS reader and writer tasks while the
                    // engine runs on this (non-runtime) thread.
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .map_err(|e| EngineError::InvalidInput(format!("tokio runtime: {e}")))?;
                    let mesh = rt
                        .block_on(async {
                            let l = tokio::net::TcpListener::from_std(listener)?;
                            mpc::establish(&cfg, l)
                                .await
                                .map_err(|e| std::io::Error::other(e.to_string()))
                        })
                        .map_err(|e| EngineError::InvalidInput(format!("mesh: {e}")))?;
                    let control = mesh.control;
                    let mut party = Party::setup(cfg.party, Box::new(mesh.channel))?;
                    let out = f(&mut party);
                    // A party that is done may still have messages in its writer queue
                    // that its peers need: on success, hold the links until all three
                    // are done (a failed party closes at once, so its peers stop
                    // waiting on it).
                    let (count, all_done) = &*finished;
                    let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
                    *n += 1;
                    all_done.notify_all();
                    match &out {
                        Ok(_) => {
                            let deadline = std::time::Instant::now() + Duration::from_secs(60);
                            while *n < 3 && std::time::Instant::now() < deadline {
                                n = all_done
                                    .wait_timeout(n, Duration::from_millis(100))
                                    .unwrap_or_else(|e| e.into_inner())
                                    .0;
                            }
                        }
                        Err(e) => eprintln!("acs-bench: party {} over TLS: {e}", cfg.party.index()),
                    }
                    drop(n);
                    drop(party);
                    control.close();
                    // Runtime shutdown drops the link tasks; give the writers a moment to
                    // send close_notify first.
                    std::thread::sleep(Duration::from_millis(50));
                    rt.shutdown_timeout(Duration::from_secs(1));
                    out
                })
                .expect("spawn party thread")
        })
        .collect();
    let mut out = handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a party thread panicked".to_string()));
    Ok([
        out.next().expect("three")?,
        out.next().expect("three")?,
        out.next().expect("three")?,
    ])
}
