//! The operators' tier on real `acs` processes (issue 14): `/metrics` and `/healthz`
//! scraped over HTTP from every role, `acs check` on broken configurations, and the
//! relay identity rules (a duplicate relay process, an unknown relay certificate that
//! SIGHUP then admits, a relay pointed at a peer port), each with the log lines it
//! produces and no tight reconnect loops.

#[path = "common/system.rs"]
mod system;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use system::{wait_until, Deployment, Options, Proc, ACS};

/// Process tests run one at a time (2-core machines).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `GET path` over plain HTTP: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// The value of the sample `series` (name with labels, as printed) in a scrape.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

/// Prints the lines of `log` that contain one of `what` (for the record: run with
/// `--nocapture`).
fn show(name: &str, log: &str, what: &[&str]) {
    println!("--- {name}");
    for l in log.lines().filter(|l| what.iter().any(|w| l.contains(w))) {
        println!("{l}");
    }
}

fn lines_with(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

fn opts(entries: u32) -> Options {
    Options {
        entries,
        metrics: true,
        ..Options::default()
    }
}

#[test]
fn metrics_and_health_are_served_by_every_role_of_a_live_deployment() {
    let _g = serial();
    let d = Deployment::write(opts(1));
    let mut sys = d.start();
    sys.wait_committed(3, Duration::from_secs(60));
    for i in 0..3 {
        let (code, body) = get(d.metrics_addr(i), "/healthz");
        assert_eq!(code, 200, "server {i}: {body}");
        assert!(body.starts_with("ok: serving rounds"), "{body}");
        let (code, m) = get(d.metrics_addr(i), "/metrics");
        assert_eq!(code, 200);
        assert!(
            sample(&m, "acs_rounds_committed_total").unwrap() >= 3.0,
            "{m}"
        );
        assert_eq!(sample(&m, "acs_online_users"), Some(0.0), "{m}");
        assert_eq!(
            sample(&m, "acs_relay_connected{relay=\"0\"}"),
            Some(1.0),
            "{m}"
        );
        for peer in [(i + 1) % 3, (i + 2) % 3] {
            assert_eq!(
                sample(&m, &format!("acs_peer_connected{{peer=\"{peer}\"}}")),
                Some(1.0),
                "{m}"
            );
        }
        assert!(sample(&m, "acs_db_bytes").unwrap() > 0.0, "{m}");
        assert_eq!(
            sample(&m, "acs_rounds_aborted_total{reason=\"vote\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&m, "acs_envelopes_rejected_total{reason=\"OpenFailed\"}"),
            Some(0.0)
        );
        assert!(
            m.contains("acs_round_duration_seconds_bucket{le=\"0.01\",phase=\"engine\"}")
                || m.contains("acs_round_duration_seconds_bucket{phase=\"engine\",le=\"0.01\"}"),
            "{m}"
        );
    }
    let (code, body) = get(d.metrics_addr(3), "/healthz");
    assert_eq!(code, 200, "{body}");
    let (_, m) = get(d.metrics_addr(3), "/metrics");
    for l in 0..3 {
        assert_eq!(
            sample(&m, &format!("acs_exchange_connected{{server=\"{l}\"}}")),
            Some(1.0),
            "{m}"
        );
    }
    assert!(sample(&m, "acs_relay_batches_total").unwrap() >= 3.0, "{m}");
    assert_eq!(get(d.metrics_addr(0), "/nothing").0, 404);

    // Server 2 gone: its peers and the relay report unhealthy, with the reason.
    sys.exchanges[2].kill();
    for i in [0usize, 1] {
        wait_until(Duration::from_secs(20), "server unhealthy", || {
            get(d.metrics_addr(i), "/healthz").0 == 503
        })
        .unwrap();
        let (_, body) = get(d.metrics_addr(i), "/healthz");
        assert!(body.contains("peer"), "{body}");
        let (_, m) = get(d.metrics_addr(i), "/metrics");
        assert_eq!(
            sample(&m, "acs_peer_connected{peer=\"2\"}"),
            Some(0.0),
            "{m}"
        );
    }
    wait_until(Duration::from_secs(20), "relay unhealthy", || {
        get(d.metrics_addr(3), "/healthz").0 == 503
    })
    .unwrap();
    let (_, body) = get(d.metrics_addr(3), "/healthz");
    assert!(body.contains("[2]"), "{body}");
}

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(ACS)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn acs_check_accepts_a_good_config_and_names_what_is_wrong_in_broken_ones() {
    let _g = serial();
    let d = Deployment::write(opts(1));
    let (ok, out) = check(&d.path("ex0.toml"));
    assert!(ok, "{out}");
    assert!(out.contains("exchange-0.acs, issued by the CA"), "{out}");
    assert!(out.contains("would run:"), "{out}");
    // The plan names the security mode the servers would run in.
    let mode = d.exchange_file(0).security;
    assert!(out.contains(&format!("security: {mode} (")), "{out}");
    let (ok, out) = check(&d.path("entry0.toml"));
    assert!(ok, "{out}");

    // Wrong index: the certificate is exchange-0's.
    let mut f = d.exchange_file(0);
    f.index = 1;
    d.write_exchange(0, &f);
    let (ok, out) = check(&d.path("ex0.toml"));
    assert!(!ok, "{out}");
    assert!(
        out.contains("the certificate is for exchange-0.acs, not exchange-1.acs"),
        "{out}"
    );
    println!("--- acs check, wrong index\n{out}");
    // ... and the server refuses to start with it.
    let mut p = d.start_exchange(0, "-bad");
    assert!(p
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| !s.success()));
    assert!(
        p.log_text().contains("configuration check failed"),
        "{}",
        p.log_text()
    );

    // Missing certificate.
    let mut f = d.exchange_file(0);
    f.cert = "certs/nope.pem".into();
    d.write_exchange(0, &f);
    let (ok, out) = check(&d.path("ex0.toml"));
    assert!(!ok, "{out}");
    assert!(out.contains("nope.pem"), "{out}");
    println!("--- acs check, missing certificate\n{out}");
    d.write_exchange(0, &d.exchange_file(0));

    // Server 1's descriptor next to server 0's master secret: clients would refuse it.
    let ours = std::fs::read(d.path("master-0.key.descriptor")).unwrap();
    std::fs::copy(
        d.path("master-1.key.descriptor"),
        d.path("master-0.key.descriptor"),
    )
    .unwrap();
    let (ok, out) = check(&d.path("ex0.toml"));
    assert!(!ok, "{out}");
    assert!(out.contains("pins another TLS certificate"), "{out}");
    assert!(out.contains("was not made from"), "{out}");
    std::fs::write(d.path("master-0.key.descriptor"), ours).unwrap();
    assert!(check(&d.path("ex0.toml")).0);

    // A relay pointed at a peer port: found by the probe once server 1 runs.
    let _ex1 = d.start_exchange(1, "");
    wait_until(Duration::from_secs(20), "server 1 listening", || {
        std::net::TcpStream::connect(d.peer_addr(1)).is_ok()
    })
    .unwrap();
    let mut e = d.entry_file(0);
    e.exchanges[1] = d.peer_addr(1);
    let cfg = d.write_entry("entry-peer.toml", &e);
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("exchange-1.acs answers there, but it is not its relay port"),
        "{out}"
    );
    println!("--- acs check, relay pointed at a peer port\n{out}");

    // RUST_LOG that hides everything is refused, not swallowed.
    let out = Command::new(ACS)
        .args(["entry", "--config"])
        .arg(d.path("entry0.toml"))
        .env("RUST_LOG", "verbose")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RUST_LOG=\"verbose\""), "{err}");
}

/// A second relay process with the same certificate replaces the first's links (one
/// WARN line per replacement at the server), the first backs off rather than fighting in
/// a tight loop, and once the duplicate is gone the real relay is back in every round.
#[test]
fn a_duplicate_relay_process_replaces_the_link_cleanly_and_the_real_one_returns() {
    let _g = serial();
    let d = Deployment::write(opts(1));
    let mut sys = d.start();
    sys.wait_committed(2, Duration::from_secs(60));
    let mut dup_file = d.entry_file(0);
    dup_file.listen = SocketAddr::from(([127, 0, 0, 1], system::free_port()));
    dup_file.metrics_listen = None;
    let dup_cfg = d.write_entry("entry0-dup.toml", &dup_file);
    let mut dup = Proc::spawn(
        "entry-0-duplicate",
        &["entry", "--config"],
        &dup_cfg,
        &d.path("entry0-dup.log"),
    );
    wait_until(Duration::from_secs(20), "a replacement", || {
        sys.exchanges[0]
            .log_text()
            .contains("the new connection replaces the old one")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
    std::thread::sleep(Duration::from_secs(4));
    let t = Instant::now();
    let real = sys.entries[0].log_text();
    let dup_log = dup.log_text();
    let server = sys.exchanges[0].log_text();
    // Bounded: a handful of replacements in a few seconds, not thousands.
    let replaced_at_server = lines_with(&server, "replaces the old one");
    assert!(
        (1..=12).contains(&replaced_at_server),
        "{replaced_at_server}\n{server}"
    );
    let replaced_at_relays =
        lines_with(&real, "replaced this link") + lines_with(&dup_log, "replaced this link");
    assert!(replaced_at_relays >= 1, "{real}\n{dup_log}");
    assert!(
        real.lines().count() + dup_log.lines().count() < 80,
        "{real}\n{dup_log}"
    );
    show("exchange-0", &server, &["entry relay"]);
    show("entry-0", &real, &["exchange server"]);
    show("entry-0-duplicate", &dup_log, &["exchange server"]);
    dup.kill();
    // The real relay is back and every later round hears it.
    let back = sys.committed(0).last().copied().unwrap_or(0);
    wait_until(
        Duration::from_secs(60),
        "rounds after the duplicate left",
        || sys.committed(0).iter().filter(|&&r| r > back).count() >= 4,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
    let (_, m) = get(d.metrics_addr(0), "/metrics");
    assert_eq!(
        sample(&m, "acs_relay_connected{relay=\"0\"}"),
        Some(1.0),
        "{m}"
    );
    let server = sys.exchanges[0].log_text();
    let last = sys.committed(0).last().copied().unwrap();
    assert!(
        !server
            .lines()
            .any(|l| l.contains("relay batches missing") && system::field(l, "round") == Some(last)),
        "{server}"
    );
    println!(
        "duplicate relay: {:?} after the first replacement",
        t.elapsed()
    );
    sys.assert_healthy();
}

/// A relay whose certificate is not in the servers' `relays` list is refused with a
/// message naming it (once per outage at the relay, once a minute at a server), backs off
/// instead of looping, and is admitted by SIGHUP after the list is edited.
#[test]
fn an_unknown_relay_is_refused_clearly_then_admitted_by_sighup() {
    let _g = serial();
    let d = Deployment::write(Options {
        listed_relays: Some(vec![0]),
        ..opts(2)
    });
    let mut sys = d.start();
    sys.wait_committed(2, Duration::from_secs(60));
    wait_until(Duration::from_secs(10), "relay 1 refused", || {
        lines_with(
            &sys.entries[1].log_text(),
            "exchange server refused this relay",
        ) == 3
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
    std::thread::sleep(Duration::from_secs(6));
    let relay = sys.entries[1].log_text();
    assert_eq!(
        lines_with(&relay, "exchange server refused this relay"),
        3,
        "{relay}"
    );
    assert!(
        relay.contains("certificate entry-1.acs is not in exchange server 0's relays list [0]"),
        "{relay}"
    );
    assert!(relay.lines().count() < 15, "{relay}");
    let server = sys.exchanges[0].log_text();
    assert_eq!(lines_with(&server, "entry relay refused"), 1, "{server}");
    show("exchange-0", &server, &["entry relay"]);
    show("entry-1", &relay, &["exchange server"]);

    for i in 0..3 {
        let mut f = d.exchange_file(i);
        f.relays = vec![0, 1];
        d.write_exchange(i, &f);
        sys.exchanges[i].hup();
    }
    for i in 0..3 {
        wait_until(Duration::from_secs(10), "reload", || {
            sys.exchanges[i].log_text().contains("relays list reloaded")
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
    }
    wait_until(Duration::from_secs(45), "relay 1 admitted", || {
        lines_with(&sys.entries[1].log_text(), "connected to exchange server") == 3
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
    // Its first connections, though each follows an outage (the refusals).
    assert_eq!(
        lines_with(
            &sys.entries[1].log_text(),
            "connected to exchange server again"
        ),
        0,
        "{}",
        sys.logs()
    );
    wait_until(
        Duration::from_secs(10),
        "relay 1 connected in metrics",
        || {
            let (_, m) = get(d.metrics_addr(0), "/metrics");
            sample(&m, "acs_relay_connected{relay=\"1\"}") == Some(1.0)
        },
    )
    .unwrap();
    let (_, m) = get(d.metrics_addr(0), "/metrics");
    assert_eq!(sample(&m, "acs_relay_reloads_total"), Some(1.0), "{m}");
    show(
        "exchange-0 after SIGHUP",
        &sys.exchanges[0].log_text(),
        &["SIGHUP", "entry relay connected"],
    );
    show(
        "entry-1 after SIGHUP",
        &sys.entries[1].log_text(),
        &["again"],
    );

    // Removed again: disconnected at the next round, and told why.
    let refused = |log: &str| lines_with(log, "exchange server refused this relay");
    let before = refused(&sys.entries[1].log_text());
    for i in 0..3 {
        d.write_exchange(i, &d.exchange_file(i));
        sys.exchanges[i].hup();
    }
    wait_until(Duration::from_secs(20), "relay 1 removed", || {
        refused(&sys.entries[1].log_text()) >= before + 3
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", sys.logs()));
    let relay = sys.entries[1].log_text();
    assert!(
        relay.contains("was removed from this server's relays list"),
        "{relay}"
    );
    show("entry-1 after removal", &relay, &["removed"]);
    sys.assert_healthy();
}

/// A relay pointed at a peer port fails at once with one ERROR line per outage instead
/// of hanging silently.
#[test]
fn a_relay_pointed_at_a_peer_port_says_so_once() {
    let _g = serial();
    let d = Deployment::write(opts(1));
    let _ex: Vec<Proc> = (0..3).map(|i| d.start_exchange(i, "")).collect();
    let mut e = d.entry_file(0);
    e.exchanges[2] = d.peer_addr(2);
    let cfg = d.write_entry("entry0.toml", &e);
    let relay = Proc::spawn(
        "entry-0",
        &["entry", "--config"],
        &cfg,
        &d.path("entry0.log"),
    );
    // While the servers' mesh forms their peer ports answer TLS (without the relay
    // protocol); once it is up they answer nothing. Either way: said once, with the key
    // to fix.
    wait_until(Duration::from_secs(20), "the error", || {
        lines_with(&relay.log_text(), "check `exchanges`") >= 1
    })
    .unwrap_or_else(|err| panic!("{err}\n{}", relay.log_text()));
    std::thread::sleep(Duration::from_secs(8));
    let log = relay.log_text();
    let said = lines_with(&log, "check `exchanges`");
    assert!((1..=2).contains(&said), "{log}");
    assert!(log.lines().count() < 15, "{log}");
    show("entry-0", &log, &[""]);
    // acs check names the same mistake (the probe waits 3 s for a TLS answer).
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("exchanges[2]") && out.contains("not its relay port")
            || out.contains("not a relay port"),
        "{out}"
    );
}
