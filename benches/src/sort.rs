//! `acs-bench sort`.

use crate::net::{run_parties, Net};
use acs_engine::share::{reconstruct, reconstruct_keys, xor_share};
use acs_engine::sort::{bitonic_sort, quicksort};
use acs_engine::SharedKeys;
use acs_engine::{SecurityMode, VerifyStats};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Barrier};
use std::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Algo {
    /// Shuffle, then quicksort opening only comparison bits.
    Quick,
    /// Bitonic sorting network, opens nothing.
    Bitonic,
}

#[derive(Args, Debug)]
pub struct SortArgs {
    /// Number of records.
    #[arg(long)]
    n: usize,
    /// Key width in bits (1..=64).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=64))]
    key_bits: u32,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Sorting algorithm.
    #[arg(long, value_enum, default_value_t = Algo::Quick)]
    algo: Algo,
    /// Worker threads for local parallel work (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed for the random inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How the three parties are connected: in-memory channels in one process, or the
    /// mutual-TLS mesh of `acs exchange` on loopback (one runtime per party).
    #[arg(long, value_enum, default_value_t = Net::Inproc)]
    net: Net,
    /// Security mode of the three parties: `semi-honest`, or `malicious` (every AND gate
    /// verified before the next opening; security with abort).
    #[arg(long, default_value = "semi-honest")]
    security: SecurityMode,
    /// Print one JSON object on stdout instead of a readable line.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    net: Net,
    algo: &'static str,
    n: usize,
    key_bits: u32,
    payload: usize,
    threads: usize,
    seconds: f64,
    /// CPU seconds of the whole process (all three parties and the shared pool) from the
    /// first party's start to the last party's end; `null` without `/proc`.
    cpu_seconds: Option<f64>,
    /// Peak resident memory of the process (all three parties and the harness) when the
    /// report is written; `null` without `/proc`.
    peak_rss_bytes: Option<u64>,
    bytes_per_party: u64,
    /// Bytes each party sent (party 0 sends more in a shuffle than the two others).
    bytes_by_party: [u64; 3],
    rounds: u64,
    levels: usize,
    verified: bool,
    /// `semi-honest` or `malicious`.
    security: SecurityMode,
    /// What the verification did (party 0's counters; zero in semi-honest mode).
    verify: VerifyStats,
}

pub fn run(args: &SortArgs) -> Result<bool, String> {
    let threads = crate::set_threads(args.threads)?;
    let n = args.n;
    let key_bits = args.key_bits as usize;
    let payload_words = args.payload.div_ceil(8);
    eprintln!(
        "acs-bench sort: n={n} key_bits={key_bits} payload={}B algo={:?} threads={threads}: preparing inputs",
        args.payload, args.algo
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let key_mask = if key_bits == 64 {
        u64::MAX
    } else {
        (1u64 << key_bits) - 1
    };
    let keys: Vec<u64> = (0..n).map(|_| rng.gen::<u64>() & key_mask).collect();
    // Payload bytes beyond `payload` in the last word stay zero.
    let tail_mask = match args.payload % 8 {
        0 => u64::MAX,
        r => (1u64 << (8 * r)) - 1,
    };
    let payload: Vec<u64> = (0..n * payload_words)
        .map(|i| {
            let w = rng.gen::<u64>();
            if (i + 1) % payload_words == 0 {
                w & tail_mask
            } else {
                w
            }
        })
        .collect();
    let key_words: Vec<u64> = keys.iter().flat_map(|k| [*k, 0]).collect();
    let key_shares = Arc::new(xor_share(&key_words, &mut rng));
    let payload_shares = Arc::new(xor_share(&payload, &mut rng));
    let barrier = Arc::new(Barrier::new(3));
    let algo = args.algo;
    let security = args.security;
    eprintln!("acs-bench sort: running three parties ({security})");
    let results = run_parties(args.net, move |p| {
        p.set_security(security)?;
        let i = p.id().index();
        let k = p.input_from_xor(key_shares[i].clone())?;
        let pl = p.input_from_xor(payload_shares[i].clone())?;
        let k = SharedKeys::from_words(&k);
        let before = p.stats();
        barrier.wait();
        let start = Instant::now();
        let cpu_start = crate::process_cpu_seconds();
        let sorted = match algo {
            Algo::Quick => quicksort(p, &k, key_bits, &pl, payload_words)?,
            Algo::Bitonic => bitonic_sort(p, &k, key_bits, &pl, payload_words)?,
        };
        // Release point: everything still pending is verified (the sorts verify their
        // own gates before returning, so this is a no-op unless they change).
        p.verify_pending()?;
        let secs = start.elapsed().as_secs_f64();
        let cpu_end = crate::process_cpu_seconds();
        let after = p.stats();
        Ok((
            sorted,
            secs,
            after.bytes_sent - before.bytes_sent,
            after.rounds - before.rounds,
            p.verify_stats(),
            cpu_start.zip(cpu_end),
        ))
    })?;
    let mut parts = Vec::new();
    for r in results {
        parts.push(r.map_err(|e| format!("party failed: {e}"))?);
    }
    let seconds = parts.iter().map(|p| p.1).fold(0.0, f64::max);
    let cpu_seconds = crate::cpu_span(parts.iter().map(|p| p.5));
    let bytes = parts.iter().map(|p| p.2).max().unwrap_or(0);
    let bytes_by_party = [parts[0].2, parts[1].2, parts[2].2];
    let rounds = parts.iter().map(|p| p.3).max().unwrap_or(0);
    let levels = parts[0].0.levels;
    let verify = parts[0].4;
    eprintln!("acs-bench sort: sorted in {seconds:.3} s; verifying against a plaintext sort");

    let got_keys = reconstruct_keys([&parts[0].0.keys, &parts[1].0.keys, &parts[2].0.keys]);
    let got_payload = reconstruct([
        &parts[0].0.payload,
        &parts[1].0.payload,
        &parts[2].0.payload,
    ]);
    let mut expect: Vec<(u64, &[u64])> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, &payload[i * payload_words..(i + 1) * payload_words]))
        .collect();
    expect.sort_unstable();
    let mut got: Vec<(u64, &[u64])> = got_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                *k as u64,
                &got_payload[i * payload_words..(i + 1) * payload_words],
            )
        })
        .collect();
    let keys_ascending =
        got_keys.windows(2).all(|w| w[0] <= w[1]) && got_keys.iter().all(|k| *k >> 64 == 0);
    got.sort_unstable();
    let verified = keys_ascending && got == expect;

    let report = Report {
        net: args.net,
        algo: match algo {
            Algo::Quick => "quick",
            Algo::Bitonic => "bitonic",
        },
        n,
        key_bits: args.key_bits,
        payload: args.payload,
        threads,
        seconds,
        cpu_seconds,
        peak_rss_bytes: crate::peak_rss_bytes(),
        bytes_per_party: bytes,
        bytes_by_party,
        rounds,
        levels,
        verified,
        security,
        verify,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "{} {} n={} key_bits={} payload={}B threads={}: {:.3} s ({}, {}), {:.1} MB/party, {} rounds, {} levels, verified={}",
            report.algo, security, n, key_bits, args.payload, threads, seconds, crate::cpu_text(cpu_seconds), crate::peak_text(report.peak_rss_bytes), bytes as f64 / 1e6, rounds, levels, verified
        );
    }
    Ok(verified)
}
