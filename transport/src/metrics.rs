//! Operators' view of a running process: Prometheus metrics and a health check, served
//! over plain HTTP at `metrics_listen` (`/metrics`, `/healthz`).
//!
//! Only public quantities are exported (`docs/leakage.md`, "What the metrics show"):
//! round numbers and outcomes, phase timings, the size of the online set `|O_r|`,
//! counts of envelopes this server itself rejected, link states, and the database size.
//! Nothing per user, and nothing that depends on the secret-shared contents of a round
//! (a metric of delivered or stored messages would be a leak, and there is none).
//!
//! The metrics are [`prometheus_client`] types; the HTTP side is a few lines of tokio
//! (two GET endpoints, bounded request size and time) rather than a web framework.

use crate::listener::ShutdownRx;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One label, `reason`, from a closed set of values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// One label, `phase`: `open`, `engine`, `commit`, `outputs`, or `total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The round phase.
    pub phase: String,
}

/// One label, `peer`: the index of a peer exchange server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's index.
    pub peer: String,
}

/// Why a round was aborted (the `reason` label of `acs_rounds_aborted_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// A server voted abort or the votes did not arrive in time.
    Vote,
    /// The peer mesh or the engine failed while the round ran.
    PeerFailure,
    /// A round prepared before a failure was aborted when the mesh came back.
    Recovery,
}

impl AbortReason {
    fn label(self) -> &'static str {
        match self {
            AbortReason::Vote => "vote",
            AbortReason::PeerFailure => "peer_failure",
            AbortReason::Recovery => "recovery",
        }
    }
}

/// What a health check answers: healthy or not, and one line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// 200 if true, 503 if not.
    pub ok: bool,
    /// The body.
    pub detail: String,
}

/// A process that serves `/metrics` and `/healthz`.
pub trait Observed: Send + Sync + 'static {
    /// The metrics in the Prometheus text format.
    fn render(&self) -> String;
    /// The health check.
    fn health(&self) -> Health;
}

fn unix_ms() -> u64 {
    crate::exchange::clock::now_unix_ms()
}

fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Live state an exchange server's metrics read when scraped (set once the server runs).
#[derive(Default)]
struct ExchangeLive {
    port: Option<crate::relay_port::RelayPortHandle>,
    relays: Option<crate::relay_port::RelaySet>,
    db_path: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ExchangeLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeLive").finish_non_exhaustive()
    }
}

/// Reads [`ExchangeLive`] at scrape time: `acs_relay_connected` and `acs_db_bytes`.
#[derive(Debug, Clone, Default)]
struct ExchangeCollector(Arc<Mutex<ExchangeLive>>);

impl Collector for ExchangeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(port), Some(relays)) = (&live.port, &live.relays) {
            let connected = port.connected();
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(
                "acs_relay_connected",
                "Whether each configured entry relay is connected to this server's relay port (1) or not (0).",
                None,
                gauge.metric_type(),
            )?;
            for j in relays.get() {
                let up = i64::from(connected.contains(&j));
                let labels = [("relay", j.to_string())];
                ConstGauge::new(up).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(path) = &live.db_path {
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let gauge = ConstGauge::new(bytes as i64);
            let metric = encoder.encode_descriptor(
                "acs_db_bytes",
                "Size of the exchange server's database file in bytes.",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// An exchange server's metrics and health. Cheap to share (`Arc`); the server updates
/// it as rounds go by, `/metrics` and `/healthz` read it.
#[derive(Debug)]
pub struct ExchangeMetrics {
    registry: Registry,
    live: ExchangeCollector,
    /// `acs_rounds_committed_total`.
    pub rounds_committed: Counter,
    /// `acs_rounds_aborted_total{reason}`.
    pub rounds_aborted: Family<ReasonLabel, Counter>,
    /// `acs_round_duration_seconds{phase}`.
    pub round_duration: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    /// `acs_online_users`: `|O_r|` of the last committed round.
    pub online_users: Gauge,
    /// `acs_last_committed_round`.
    pub last_committed_round: Gauge,
    /// `acs_envelopes_rejected_total{reason}`.
    pub envelopes_rejected: Family<ReasonLabel, Counter>,
    /// `acs_peer_connected{peer}`.
    pub peer_connected: Family<PeerLabel, Gauge>,
    /// `acs_relay_reloads_total`.
    pub relay_reloads: Counter,
    index: AtomicU64,
    session_up: AtomicBool,
    /// When the mesh came up or the last round committed (Unix ms), whichever is later.
    last_progress_ms: AtomicU64,
    /// Healthy only while a round committed (or the mesh came up) within this time.
    stale_after_ms: AtomicU64,
}

fn duration_histogram() -> Histogram {
    // 10 ms to ~80 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 14,
    ))
}

impl Default for ExchangeMetrics {
    fn default() -> Self {
        ExchangeMetrics::new()
    }
}

impl ExchangeMetrics {
    /// Metrics with every series registered and zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = ExchangeMetrics {
            registry: Registry::default(),
            live: ExchangeCollector::default(),
            rounds_committed: Counter::default(),
            rounds_aborted: Family::default(),
            round_duration: Family::new_with_constructor(duration_histogram),
            online_users: Gauge::default(),
            last_committed_round: Gauge::default(),
            envelopes_rejected: Family::default(),
            peer_connected: Family::default(),
            relay_reloads: Counter::default(),
            index: AtomicU64::new(0),
            session_up: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(0),
            stale_after_ms: AtomicU64::new(120_000),
        };
        registry.register(
            "acs_rounds_committed",
            "Rounds this exchange server committed",
            m.rounds_committed.clone(),
        );
        registry.register(
            "acs_rounds_aborted",
            "Rounds aborted (users told to retry), by reason: vote, peer_failure, recovery",
            m.rounds_aborted.clone(),
        );
        registry.register(
            "acs_round_duration_seconds",
            "Time per round phase of committed rounds (open, engine, commit, outputs) and from the submission deadline to outputs sent (total)",
            m.round_duration.clone(),
        );
        registry.register(
            "acs_online_users",
            "Size of the agreed online set of the last committed round (public: |O_r|)",
            m.online_users.clone(),
        );
        registry.register(
            "acs_last_committed_round",
            "Number of the last round this server committed",
            m.last_committed_round.clone(),
        );
        registry.register(
            "acs_envelopes_rejected",
            "Envelopes this server rejected while opening, by reason: Malformed, UnknownTag, Replay, OpenFailed, WrongSize, RetiredEpoch, UnknownEpoch",
            m.envelopes_rejected.clone(),
        );
        registry.register(
            "acs_peer_connected",
            "Whether the link to each peer exchange server is up (1) or not (0)",
            m.peer_connected.clone(),
        );
        registry.register(
            "acs_relay_reloads",
            "Reloads of the relays list (SIGHUP) applied",
            m.relay_reloads.clone(),
        );
        registry.register_collector(Box::new(m.live.clone()));
        // Start every labelled series at zero so that dashboards see them before the
        // first event.
        for r in [
            AbortReason::Vote,
            AbortReason::PeerFailure,
            AbortReason::Recovery,
        ] {
            let _ = m.rounds_aborted.get_or_create(&ReasonLabel {
                reason: r.label().into(),
            });
        }
        for reason in [
            "Malformed",
            "UnknownTag",
            "Replay",
            "OpenFailed",
            "WrongSize",
            "RetiredEpoch",
            "UnknownEpoch",
        ] {
            let _ = m.envelopes_rejected.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        ExchangeMetrics { registry, ..m }
    }

    /// Which server this is (for the peer labels), and how long without progress makes
    /// it unhealthy.
    pub fn configure(&self, index: u8, stale_after: Duration) {
        self.index.store(u64::from(index), Ordering::Relaxed);
        self.stale_after_ms
            .store(stale_after.as_millis() as u64, Ordering::Relaxed);
        self.set_session(false);
    }

    /// Hands the metrics the live state they read at scrape time.
    pub fn attach(
        &self,
        port: crate::relay_port::RelayPortHandle,
        relays: crate::relay_port::RelaySet,
        db_path: std::path::PathBuf,
    ) {
        let mut live = self.live.0.lock().unwrap_or_else(|e| e.into_inner());
        live.port = Some(port);
        live.relays = Some(relays);
        live.db_path = Some(db_path);
    }

    /// The peer mesh came up (`true`) or failed (`false`).
    pub fn set_session(&self, up: bool) {
        let me = self.index.load(Ordering::Relaxed);
        for peer in [(me + 1) % 3, (me + 2) % 3] {
            self.peer_connected
                .get_or_create(&PeerLabel {
                    peer: peer.to_string(),
                })
                .set(i64::from(up));
        }
        self.session_up.store(up, Ordering::Relaxed);
        if up {
            self.last_progress_ms.store(unix_ms(), Ordering::Relaxed);
        }
    }

    /// A round committed.
    pub fn committed(&self, round: u64, online: usize, phases: &[(&str, f64)]) {
        self.rounds_committed.inc();
        self.online_users.set(online as i64);
        self.last_committed_round.set(round as i64);
        for (phase, secs) in phases {
            self.round_duration
                .get_or_create(&PhaseLabel {
                    phase: (*phase).into(),
                })
                .observe(*secs);
        }
        self.last_progress_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// A round was aborted.
    pub fn aborted(&self, why: AbortReason) {
        self.rounds_aborted
            .get_or_create(&ReasonLabel {
                reason: why.label().into(),
            })
            .inc();
    }

    /// Envelopes rejected while opening a round, by reason.
    pub fn rejected(&self, reasons: impl IntoIterator<Item = String>) {
        for reason in reasons {
            self.envelopes_rejected
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
    }
}

impl Observed for ExchangeMetrics {
    fn render(&self) -> String {
        render(&self.registry)
    }

    fn health(&self) -> Health {
        if !self.session_up.load(Ordering::Relaxed) {
            return Health {
                ok: false,
                detail: "unavailable: not connected to both peer exchange servers".into(),
            };
        }
        let idle = unix_ms().saturating_sub(self.last_progress_ms.load(Ordering::Relaxed));
        let stale = self.stale_after_ms.load(Ordering::Relaxed);
        if idle > stale {
            return Health {
                ok: false,
                detail: format!(
                    "unavailable: no round committed for {:.1} s",
                    idle as f64 / 1000.0
                ),
            };
        }
        Health {
            ok: true,
            detail: format!(
                "ok: serving rounds (last committed round {})",
                self.last_committed_round.get()
            ),
        }
    }
}

/// Reads a relay's counters at scrape time.
#[derive(Debug, Clone)]
struct RelayCollector(Arc<crate::relay::RelayStats>);

impl Collector for RelayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let counters: [(&str, &str, &AtomicU64); 4] = [
            (
                "acs_relay_envelopes",
                "Envelopes this relay accepted into a batch",
                &s.envelopes,
            ),
            (
                "acs_relay_batches",
                "Batches this relay sent to exchange servers",
                &s.batches,
            ),
            (
                "acs_relay_outputs",
                "Output shares this relay delivered to user connections",
                &s.outputs,
            ),
            (
                "acs_relay_outputs_dropped",
                "Output shares this relay could not deliver (user gone or slow)",
                &s.outputs_dropped,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v.load(Ordering::Relaxed));
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        let g = ConstGauge::new(s.user_connections.load(Ordering::Relaxed) as i64);
        let m = encoder.encode_descriptor(
            "acs_relay_user_connections",
            "User connections open at this relay",
            None,
            g.metric_type(),
        )?;
        g.encode(m)?;
        let mut family = encoder.encode_descriptor(
            "acs_exchange_connected",
            "Whether this relay's link to each exchange server is up (1) or not (0)",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (l, up) in s.exchange_connected.iter().enumerate() {
            let labels = [("server", l.to_string())];
            ConstGauge::new(i64::from(up.load(Ordering::Relaxed)))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// An entry relay's metrics and health.
#[derive(Debug)]
pub struct RelayMetrics {
    registry: Registry,
    stats: Arc<crate::relay::RelayStats>,
}

impl RelayMetrics {
    /// Over a running relay's counters.
    pub fn new(stats: Arc<crate::relay::RelayStats>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RelayCollector(stats.clone())));
        RelayMetrics { registry, stats }
    }
}

impl Observed for RelayMetrics {
    fn render(&self) -> String {
        render(&self.registry)
    }

    fn health(&self) -> Health {
        let down: Vec<usize> = (0..3)
            .filter(|&l| !self.stats.exchange_connected[l].load(Ordering::Relaxed))
            .collect();
        if down.is_empty() {
            Health {
                ok: true,
                detail: "ok: connected to exchange servers 0, 1, 2".into(),
            }
        } else {
            Health {
                ok: false,
                detail: format!("unavailable: not connected to exchange server(s) {down:?}"),
            }
        }
    }
}

/// Concurrent metrics requests served; more wait in the kernel backlog.
const MAX_HTTP_CONNECTIONS: usize = 16;
/// A request must arrive in full within this time and size.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_MAX_REQUEST: usize = 8 * 1024;

/// Serves `GET /metrics` and `GET /healthz` (HTTP/1.1, one request per connection) on
/// `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, target: Arc<dyn Observed>, mut shutdown: ShutdownRx) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = crate::listener::shutdown_signalled(&mut shutdown) => return,
        };
        let (mut tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::listener::shutdown_signalled(&mut shutdown) => return,
        };
        let target = target.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let response =
                match tokio::time::timeout(HTTP_READ_TIMEOUT, read_request(&mut tcp)).await {
                    Ok(Some(path)) => respond(&path, target.as_ref()),
                    Ok(None) => http_response(400, "text/plain", "bad request\n"),
                    Err(_) => return,
                };
            let _ = tcp.write_all(&response).await;
            let _ = tcp.shutdown().await;
        });
    }
}

/// The path of a `GET` request, once its head has arrived.
async fn read_request(tcp: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > HTTP_MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = std::str::from_utf8(&buf).ok()?;
    let mut parts = head.lines().next()?.split_whitespace();
    let (method, target) = (parts.next()?, parts.next()?);
    if method != "GET" {
        return None;
    }
    Some(target.split('?').next().unwrap_or(target).to_string())
}

fn respond(path: &str, target: &dyn Observed) -> Vec<u8> {
    match path {
        "/metrics" => http_response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &target.render(),
        ),
        "/healthz" => {
            let h = target.health();
            http_response(
                if h.ok { 200 } else { 503 },
                "text/plain",
                &(h.detail + "\n"),
            )
        }
        _ => http_response(404, "text/plain", "not found: try /metrics or /healthz\n"),
    }
}

fn http_response(code: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Binds `addr` for metrics and serves `target` there; the error names the address.
pub async fn start(
    addr: std::net::SocketAddr,
    target: Arc<dyn Observed>,
    shutdown: ShutdownRx,
) -> Result<std::net::SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics_listen {addr}: cannot bind: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("metrics_listen {addr}: {e}"))?;
    tokio::spawn(serve(listener, target, shutdown));
    Ok(bound)
}

/// A plain HTTP GET on loopback, for tests and `acs check`: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Stub(bool);

    impl Observed for Stub {
        fn render(&self) -> String {
            "stub_total 1\n".into()
        }
        fn health(&self) -> Health {
            Health {
                ok: self.0,
                detail: if self.0 {
                    "ok: stub"
                } else {
                    "unavailable: stub"
                }
                .into(),
            }
        }
    }

    async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(request).await;
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn endpoints_answer_and_bad_requests_are_refused() {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let any = "127.0.0.1:0".parse().unwrap();
        let up = start(any, Arc::new(Stub(true)), rx.clone()).await.unwrap();
        let down = start(any, Arc::new(Stub(false)), rx).await.unwrap();
        assert_eq!(
            http_get(up, "/metrics").await.unwrap(),
            (200, "stub_total 1\n".into())
        );
        assert_eq!(
            http_get(up, "/healthz?verbose").await.unwrap(),
            (200, "ok: stub\n".into())
        );
        assert_eq!(
            http_get(down, "/healthz").await.unwrap(),
            (503, "unavailable: stub\n".into())
        );
        assert_eq!(http_get(up, "/other").await.unwrap().0, 404);
        assert!(raw(up, b"POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400"));
        // A request head over the cap gets no metrics.
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 2 * HTTP_MAX_REQUEST));
        assert!(!raw(up, &huge).await.contains("stub_total"));
        // A bind error names the address.
        let taken = start(
            up,
            Arc::new(Stub(true)),
            tokio::sync::watch::channel(false).1,
        )
        .await
        .unwrap_err();
        assert!(taken.contains(&up.to_string()), "{taken}");
    }

    #[test]
    fn exchange_metrics_render_every_series_and_health_follows_the_session() {
        let m = ExchangeMetrics::new();
        m.configure(1, Duration::from_secs(60));
        assert!(!m.health().ok);
        m.set_session(true);
        assert!(m.health().ok, "{:?}", m.health());
        m.committed(7, 12, &[("engine", 0.5), ("total", 0.8)]);
        m.aborted(AbortReason::Vote);
        m.rejected(["Replay".to_string()]);
        let text = m.render();
        for line in [
            "acs_rounds_committed_total 1",
            "acs_online_users 12",
            "acs_last_committed_round 7",
            "acs_rounds_aborted_total{reason=\"vote\"} 1",
            "acs_rounds_aborted_total{reason=\"recovery\"} 0",
            "acs_envelopes_rejected_total{reason=\"Replay\"} 1",
            "acs_envelopes_rejected_total{reason=\"OpenFailed\"} 0",
            "acs_peer_connected{peer=\"2\"} 1",
            "acs_peer_connected{peer=\"0\"} 1",
            "acs_round_duration_seconds_count{phase=\"engine\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        m.set_session(false);
        assert!(!m.health().ok);
        assert!(m.render().contains("acs_peer_connected{peer=\"2\"} 0"));
    }
}
