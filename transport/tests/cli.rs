//! The `acs` binary: `certs`, `entry` (start and graceful SIGTERM), and a small `demo`.

use acs_transport::config::{
    ClientFile, EntryFile, ExchangeFile, LimitsFile, RelayAddr, TimingFile,
};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ACS: &str = env!("CARGO_BIN_EXE_acs");

/// Runs `acs demo` with `args` (and `--json`), asserts that it succeeded, and returns its
/// standard output and the JSON report on its last line.
fn demo_json(args: &[&str]) -> (String, serde_json::Value) {
    let out = Command::new(ACS)
        .arg("demo")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    (stdout, v)
}

/// The numbers in column `name` (`received`, `stored`, ...) of the demo's round lines.
fn round_column<'a>(stdout: &'a str, name: &'a str) -> impl Iterator<Item = u64> + 'a {
    stdout
        .lines()
        .filter(|l| l.starts_with("round "))
        .filter_map(move |l| l.split(name).nth(1)?.split(',').next()?.trim().parse().ok())
}

#[test]
fn a_small_demo_delivers_every_message_and_ends_with_json() {
    let (stdout, v) = demo_json(&["--users", "5", "--rounds", "2", "--entries", "2"]);
    let last = stdout.lines().last().unwrap();
    for key in [
        "sent",
        "delivered",
        "expired_reported",
        "dropped_reported",
        "lost_silently",
        "rounds",
        "users",
        "p50_round_seconds",
        "p99_round_seconds",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {last}");
    }
    assert_eq!(v["sent"], v["delivered"]);
    assert_eq!(v["lost_silently"], 0);
    assert_eq!(v["bad_deliveries"], 0);
    assert_eq!(v["fate_mismatches"], 0);
    // The per-round `received` column counts arrivals, drain rounds included: its sum
    // is every message.
    let received: u64 = round_column(&stdout, "received").sum();
    assert_eq!(Some(received), v["delivered"].as_u64(), "{stdout}");
}

#[test]
fn a_demo_where_stored_messages_expire_tells_every_sender_its_messages_fate() {
    let (stdout, v) = demo_json(&[
        "--users",
        "12",
        "--rounds",
        "4",
        "--offline",
        "0.6",
        "--expiry-rounds",
        "1",
        "--entries",
        "1",
        "--seed",
        "3",
    ]);
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {stdout}"));
    assert_eq!(n("lost_silently"), 0, "{stdout}");
    assert_eq!(n("fate_mismatches"), 0, "{stdout}");
    assert_eq!(n("bad_deliveries"), 0, "{stdout}");
    assert_eq!(
        n("sent"),
        n("delivered") + n("expired_reported") + n("dropped_reported") + n("lost_silently"),
        "{stdout}"
    );
    assert!(
        n("expired_reported") > 0,
        "the workload lets messages expire: {stdout}"
    );
    assert!(stdout.contains("drain: everyone online"), "{stdout}");
}

#[test]
fn certs_refuses_to_overwrite_and_issues_one_more_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = |args: &[&str]| {
        Command::new(ACS)
            .arg("certs")
            .args(args)
            .arg(dir.path())
            .output()
            .unwrap()
    };
    assert!(certs(&["--entries", "1", "--out"]).status.success());
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let out = certs(&["--entries", "1", "--out"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
    let out = certs(&["issue", "--entry", "5", "--ca"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("entry-5.pem").exists());
    assert!(dir.path().join("entry-5-key.pem").exists());
    let out = certs(&["issue", "--entry", "5", "--ca"]);
    assert!(!out.status.success());
}

#[test]
fn the_demo_refuses_nonsense_options() {
    for args in [
        &["demo", "--users", "1"][..],
        &["demo", "--users", "4", "--store-capacity", "0"][..],
    ] {
        let out = Command::new(ACS).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
    }
}

#[test]
fn a_demo_with_a_store_smaller_than_its_stored_messages_still_delivers_every_message() {
    // Half the users offline each round and a store of two slots: messages to offline
    // users outnumber the slots, so some are dropped and sent again.
    let (stdout, v) = demo_json(&[
        "--users",
        "24",
        "--rounds",
        "4",
        "--offline",
        "0.5",
        "--store-capacity",
        "2",
    ]);
    assert_eq!(v["sent"], v["delivered"], "{stdout}");
    assert_eq!(v["lost_silently"], 0);
    assert_eq!(v["bad_deliveries"], 0);
    assert_eq!(v["fate_mismatches"], 0);
    let stored_max = round_column(&stdout, "stored").max();
    assert!(stored_max.is_some_and(|m| m <= 2), "{stdout}");
}

#[test]
fn certs_refuses_other_than_three_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ACS)
        .args(["certs", "--exchanges", "4", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[cfg(unix)]
#[test]
fn entry_relay_starts_from_its_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ACS)
        .args(["certs", "--entries", "2", "--out"])
        .arg(dir.path().join("certs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("certs/entry-1-key.pem").exists());
    let cfg = dir.path().join("entry.toml");
    // Nothing listens on ports 9, 10, 11: the relay starts anyway and keeps re-dialling.
    let entry = entry_file(1, "127.0.0.1:0", [9, 10, 11]);
    std::fs::write(&cfg, entry.to_toml().unwrap()).unwrap();
    let mut child = Command::new(ACS)
        .args(["entry", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    loop {
        let line = lines.next().expect("relay exited early").unwrap();
        if line.contains("entry relay listening") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "relay did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

#[test]
fn entry_relay_reports_a_bad_config_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("entry.toml");
    std::fs::write(&cfg, "index = \"zero\"\n").unwrap();
    let out = Command::new(ACS)
        .args(["entry", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entry.toml"), "{err}");
}

#[cfg(unix)]
fn free_port() -> u16 {
    // Bound and released at once: another process could take it, a small risk for a test.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed if the test fails before stopping it.
#[cfg(unix)]
struct Proc(std::process::Child);

#[cfg(unix)]
impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[cfg(unix)]
fn term(proc: &Proc) {
    Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
}

#[cfg(unix)]
fn term_and_wait(proc: Proc) -> std::process::ExitStatus {
    term(&proc);
    wait(proc)
}

#[cfg(unix)]
fn wait(mut proc: Proc) -> std::process::ExitStatus {
    let child = &mut proc.0;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "process did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to all three servers, then wait. A server exits 0 on its own signal, or
/// non-zero when a peer's shutdown reached it first (it cannot run without its peers).
#[cfg(unix)]
fn stop_all(servers: Vec<Proc>, d: &std::path::Path, suffix: &str) {
    for s in &servers {
        term(s);
    }
    for (i, s) in servers.into_iter().enumerate() {
        let st = wait(s);
        let log = std::fs::read_to_string(d.join(format!("ex{i}{suffix}.log"))).unwrap();
        assert!(
            st.success() || log.contains("peer link closed"),
            "server {i}: {st:?}\n{log}"
        );
    }
}

/// Writes a deployment into `d`: certificates, three master secrets with descriptors,
/// `ex{0,1,2}.toml` and `entry.toml` (the relay listening on `entry_listen`).
#[cfg(unix)]
fn write_deployment(d: &std::path::Path, entry_listen: &str) {
    assert!(Command::new(ACS)
        .args(["certs", "--entries", "1", "--out"])
        .arg(d.join("certs"))
        .output()
        .unwrap()
        .status
        .success());
    for i in 0..3 {
        let out = Command::new(ACS)
            .args(["master", "--out"])
            .arg(d.join(format!("master-{i}.key")))
            .arg("--cert")
            .arg(d.join(format!("certs/exchange-{i}.pem")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let relay_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..3 {
        let f = ExchangeFile {
            index: i as u8,
            deployment: "cli-test".into(),
            relay_listen: local(relay_ports[i]),
            peer_listen: local(peer_ports[i]),
            next_peer: local(peer_ports[(i + 1) % 3]),
            relays: vec![0],
            ca: "certs/ca.pem".into(),
            cert: format!("certs/exchange-{i}.pem").into(),
            key: format!("certs/exchange-{i}-key.pem").into(),
            master: format!("master-{i}.key").into(),
            db: format!("ex{i}.redb").into(),
            metrics_listen: None,
            security: Default::default(),
            round: ROUND,
            timing: TimingFile {
                submit_window_ms: 150,
                collect_grace_ms: 100,
                ..TimingFile::default()
            },
            limits: LimitsFile::default(),
            epochs: Vec::new(),
        };
        std::fs::write(d.join(format!("ex{i}.toml")), f.to_toml().unwrap()).unwrap();
    }
    let entry = entry_file(
        0,
        entry_listen,
        [relay_ports[0], relay_ports[1], relay_ports[2]],
    );
    std::fs::write(d.join("entry.toml"), entry.to_toml().unwrap()).unwrap();
}

/// The exchange parameters of the deployments written here.
const ROUND: acs_engine::round::RoundConfig = acs_engine::round::RoundConfig {
    payload_words: 2,
    store_capacity: 4,
    expiry_rounds: 5,
    receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
};

/// Entry relay `j` listening on `listen`, dialling the relay ports `exchanges` on
/// 127.0.0.1 (paths relative to the configuration file).
fn entry_file(j: u32, listen: &str, exchanges: [u16; 3]) -> EntryFile {
    EntryFile {
        index: j,
        listen: listen.parse().unwrap(),
        exchanges: exchanges.map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p))),
        ca: "certs/ca.pem".into(),
        cert: format!("certs/entry-{j}.pem").into(),
        key: format!("certs/entry-{j}-key.pem").into(),
        max_envelopes_per_round: 1_000_000,
        metrics_listen: None,
        limits: LimitsFile::default(),
    }
}

/// Three `acs exchange` processes and one `acs entry` from `acs certs` and `acs master`
/// output: rounds commit, SIGTERM stops everything cleanly, and a restart goes on from
/// the database with a round number never used before.
#[cfg(unix)]
#[test]
fn exchange_servers_run_as_processes_and_resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_deployment(d, "127.0.0.1:0");
    let spawn = |args: &[&str], cfg: &str, log: &str| {
        Proc(
            Command::new(ACS)
                .args(args)
                .arg(d.join(cfg))
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join(log)).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let committed = |log: &str| -> Vec<u64> {
        std::fs::read_to_string(d.join(log))
            .unwrap()
            .lines()
            .filter(|l| l.contains("round committed"))
            .filter_map(|l| {
                let i = l.find("round=")? + 6;
                l[i..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let wait_rounds = |log: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while committed(log).len() < n {
            assert!(
                Instant::now() < deadline,
                "rounds did not commit:\n{}",
                std::fs::read_to_string(d.join(log)).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let entry = spawn(&["entry", "--config"], "entry.toml", "entry.log");
    let servers: Vec<_> = (0..3)
        .map(|i| {
            spawn(
                &["exchange", "--config"],
                &format!("ex{i}.toml"),
                &format!("ex{i}.log"),
            )
        })
        .collect();
    wait_rounds("ex1.log", 3);
    stop_all(servers, d, "");
    let first: Vec<u64> = committed("ex2.log");
    let servers: Vec<_> = (0..3)
        .map(|i| {
            spawn(
                &["exchange", "--config"],
                &format!("ex{i}.toml"),
                &format!("ex{i}.b.log"),
            )
        })
        .collect();
    wait_rounds("ex1.b.log", 2);
    stop_all(servers, d, ".b");
    assert!(term_and_wait(entry).success());
    let second = committed("ex2.b.log");
    assert!(
        second[0] > *first.last().unwrap(),
        "restart reused a round: {first:?} then {second:?}"
    );
}

/// `acs <args> <d/cfg>` in the background, stderr to `d/log`.
#[cfg(unix)]
fn spawn_acs(d: &std::path::Path, args: &[&str], cfg: &str, log: &str, stdout: Stdio) -> Proc {
    Proc(
        Command::new(ACS)
            .args(args)
            .arg(d.join(cfg))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(stdout)
            .stderr(std::fs::File::create(d.join(log)).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The pseudonym line `acs client` prints first.
#[cfg(unix)]
fn pseudonym_in(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("pseudonym "))
        .unwrap_or_else(|| panic!("no pseudonym line in {out:?}"))
        .trim()
        .to_string()
}

/// Two `acs client` processes against three `acs exchange` processes and one `acs entry`:
/// a message from one reaches the other with its source and content.
#[cfg(unix)]
#[test]
fn a_client_message_reaches_another_client_through_the_running_system() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let entry_port = free_port();
    write_deployment(d, &format!("127.0.0.1:{entry_port}"));
    for name in ["alice", "bob"] {
        let f = ClientFile {
            ca: "certs/ca.pem".into(),
            identity: format!("{name}.identity").into(),
            descriptors: [0, 1, 2].map(|i| format!("master-{i}.key.descriptor").into()),
            relays: vec![RelayAddr {
                index: 0,
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], entry_port)),
            }],
            round: ROUND,
            timeout_ms: 20_000,
        };
        std::fs::write(d.join(format!("{name}.toml")), f.to_toml().unwrap()).unwrap();
    }
    let entry = spawn_acs(
        d,
        &["entry", "--config"],
        "entry.toml",
        "entry.log",
        Stdio::null(),
    );
    let servers: Vec<_> = (0..3)
        .map(|i| {
            spawn_acs(
                d,
                &["exchange", "--config"],
                &format!("ex{i}.toml"),
                &format!("ex{i}.log"),
                Stdio::null(),
            )
        })
        .collect();
    // Register Bob (0 rounds), retrying while the servers come up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let bob = loop {
        let out = Command::new(ACS)
            .args(["client", "--rounds", "0", "--config"])
            .arg(d.join("bob.toml"))
            .output()
            .unwrap();
        if out.status.success() {
            break pseudonym_in(&String::from_utf8_lossy(&out.stdout));
        }
        assert!(
            Instant::now() < deadline,
            "bob could not register: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let bob_run = spawn_acs(
        d,
        &["client", "--rounds", "8", "--config"],
        "bob.toml",
        "bob.log",
        Stdio::from(std::fs::File::create(d.join("bob.out")).unwrap()),
    );
    let out = Command::new(ACS)
        .args(["client", "--rounds", "3", "--send"])
        .arg(format!("{bob}=hi bob!"))
        .arg("--config")
        .arg(d.join("alice.toml"))
        .output()
        .unwrap();
    let alice_out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{alice_out}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alice = pseudonym_in(&alice_out);
    assert!(
        alice_out.contains("delivered") || alice_out.contains("stored"),
        "{alice_out}"
    );
    let st = wait(bob_run);
    let bob_out = std::fs::read_to_string(d.join("bob.out")).unwrap();
    assert!(
        st.success(),
        "{bob_out}\n{}",
        std::fs::read_to_string(d.join("bob.log")).unwrap()
    );
    assert!(
        bob_out.contains(&format!("Send from {alice}: hi bob!")),
        "bob did not get the message:\n{bob_out}\nalice:\n{alice_out}"
    );
    // The identity file is private and reused: Bob kept his pseudonym.
    assert_eq!(pseudonym_in(&bob_out), bob);

    // Misconfigured clients (issue 15): each gives up within its `timeout_ms`, exits
    // non-zero and names what is wrong.
    let base = ClientFile::load(&d.join("alice.toml")).unwrap();
    let mut swapped = base.clone();
    swapped.identity = "carol.identity".into();
    swapped.descriptors.swap(0, 1);
    swapped.timeout_ms = 4_000;
    let mut wider = base.clone();
    wider.identity = "dave.identity".into();
    wider.round.payload_words += 1;
    wider.timeout_ms = 4_000;
    for (name, f, says) in [
        ("carol", swapped, "descriptor"),
        ("dave", wider, "payload_words"),
    ] {
        std::fs::write(d.join(format!("{name}.toml")), f.to_toml().unwrap()).unwrap();
        let started = Instant::now();
        let out = Command::new(ACS)
            .args(["client", "--rounds", "2", "--send"])
            .arg(format!("{bob}=never"))
            .arg("--config")
            .arg(d.join(format!("{name}.toml")))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        eprintln!(
            "{name}: {:?} after {:?}\n{err}",
            out.status,
            started.elapsed()
        );
        assert!(!out.status.success(), "{name} exited 0:\n{err}");
        assert!(err.contains(says), "{name} does not name {says}:\n{err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("bob.identity"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
    stop_all(servers, d, "");
    assert!(term_and_wait(entry).success());
}
