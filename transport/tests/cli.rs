//! The `acs` binary: `certs`, `entry` (start and graceful SIGTERM), and a small `demo`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ACS: &str = env!("CARGO_BIN_EXE_acs");

#[test]
fn a_small_demo_delivers_every_message_and_ends_with_json() {
    let out = Command::new(ACS)
        .args([
            "demo",
            "--users",
            "5",
            "--rounds",
            "2",
            "--entries",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    for key in [
        "sent",
        "delivered",
        "rounds",
        "users",
        "p50_round_seconds",
        "p99_round_seconds",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {last}");
    }
    assert_eq!(v["sent"], v["delivered"]);
    assert_eq!(v["lost"], 0);
    assert_eq!(v["bad_deliveries"], 0);
}

#[test]
fn the_demo_refuses_nonsense_options() {
    let out = Command::new(ACS)
        .args(["demo", "--users", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
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
    std::fs::write(
        &cfg,
        r#"index = 1
listen = "127.0.0.1:0"
exchanges = ["127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9"]
ca = "certs/ca.pem"
cert = "certs/entry-1.pem"
key = "certs/entry-1-key.pem"
"#,
    )
    .unwrap();
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
