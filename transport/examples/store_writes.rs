//! Bytes the exchange server's database writes per round (issue 15): opens a database in
//! a temporary directory, commits `ROUNDS` active rounds (each replacing the whole store
//! of `C` records of `4 + payload_words` words, both components, as the server does) and
//! `ROUNDS` idle ones (no store), and prints the bytes written to disk per round
//! (`/proc/self/io` `write_bytes`, Linux) and the file size; and times the two store
//! commitments such a round computes.
//!
//! `cargo run --release -p acs-transport --example store_writes [C] [payload_words] [rounds]`

use acs_transport::db::{Db, RoundEffects};

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("write_bytes: ")
                        .map(|v| v.trim().parse().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let capacity = args.first().copied().unwrap_or(10_000);
    let payload_words = args.get(1).copied().unwrap_or(32);
    let rounds = args.get(2).copied().unwrap_or(20) as u64;
    let store_words = 4 + payload_words;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.redb");
    let db = Db::open(&path).expect("open");
    let blob_bytes = capacity * store_words * 2 * 8;
    let outputs = vec![7u8; 100 * (2 + payload_words) * 8 * 3];
    let mut round = 0u64;
    let run = |active: bool, n: u64, round: &mut u64| {
        let w0 = write_bytes();
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            *round += 1;
            let fill = *round as u8;
            let effects = RoundEffects {
                round: *round,
                store: active.then(|| store_of(capacity, store_words, fill)),
                record: vec![fill; 40],
                outputs: if active { outputs.clone() } else { Vec::new() },
            };
            db.prepare(&effects).expect("prepare");
            db.commit(*round).expect("commit");
        }
        let per = (write_bytes() - w0) / n;
        println!(
            "{} rounds: {} bytes written per round ({:.1} x the store's {} bytes), {:.1} ms per round",
            if active { "active" } else { "idle" },
            per,
            per as f64 / blob_bytes as f64,
            blob_bytes,
            t0.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    };
    // Warm up (first allocation of the file), then measure.
    run(true, 3, &mut round);
    run(true, rounds, &mut round);
    run(false, rounds, &mut round);
    run(true, rounds, &mut round);
    // The store commitments a round that writes the store adds (both components).
    let component: Vec<u64> = (0..(capacity * store_words) as u64).collect();
    let t0 = std::time::Instant::now();
    for j in 0..2u8 {
        std::hint::black_box(acs_transport::exchange::rejoin::commitment(
            round, j, &[7; 32], &component,
        ));
    }
    println!(
        "store commitments (two components of {} bytes): {:.1} ms per round",
        component.len() * 8,
        t0.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "database file: {} bytes after {round} rounds",
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
    );
}

/// One blob: every record's two components, as the server writes it.
fn store_of(capacity: usize, store_words: usize, fill: u8) -> Vec<u8> {
    vec![fill; capacity * store_words * 2 * 8]
}
