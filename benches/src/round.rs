//! `acs-bench round`: one exchange round (or a few) at scale, verified against the ideal
//! round.

use crate::net::{run_parties, Net};
use acs_engine::round::consistency::KeyNotary;
use acs_engine::round::ideal::{ideal_round, stored_items, StoredItem};
use acs_engine::round::input::PartyInputs;
use acs_engine::round::mpc::RoundResult;
use acs_engine::round::mpc::{exchange_round, SharedStore};
use acs_engine::round::outputs::reconstruct_checked;
use acs_engine::round::{Block, Role, RoundConfig};
use acs_engine::EngineError;
use acs_engine::{SecurityMode, VerifyStats};
use clap::Args;
use rand::{Rng, SeedableRng};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::Instant;

/// One round's work for one party.
struct Job {
    round: u32,
    inputs: PartyInputs,
}

/// One party's round: its result, seconds, bytes sent, communication rounds,
/// verification counters and process CPU seconds at its start and end.
type PartyRound = (RoundResult, f64, u64, u64, VerifyStats, Option<(f64, f64)>);

#[derive(Args, Debug)]
pub struct RoundArgs {
    /// Online users per round.
    #[arg(long)]
    users: usize,
    /// Message (payload) size in bytes.
    #[arg(long, default_value_t = 256)]
    msg_size: usize,
    /// Store capacity C (default: a tenth of the users, at least 16).
    #[arg(long)]
    store: Option<usize>,
    /// Rounds a stored item survives.
    #[arg(long, default_value_t = 4)]
    expiry: u32,
    /// Registered-but-offline users, as a fraction of the online ones; messages to them
    /// are stored.
    #[arg(long, default_value_t = 0.25)]
    offline: f64,
    /// Consecutive rounds to run (the store carries over); the figures are the last
    /// round's.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Worker threads for local parallel work (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed for the workload.
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
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    net: Net,
    users: usize,
    msg_size: usize,
    store: usize,
    threads: usize,
    seconds: f64,
    seconds_per_round: Vec<f64>,
    /// CPU seconds of the whole process (all three parties and the shared pool) from the
    /// first party's start to the last party's end of the last round, and of every
    /// round; `null` without `/proc`.
    cpu_seconds: Option<f64>,
    cpu_seconds_per_round: Vec<Option<f64>>,
    /// Peak resident memory of the process (all three parties and the harness) over all
    /// rounds; `null` without `/proc`.
    peak_rss_bytes: Option<u64>,
    bytes_per_party: u64,
    /// Bytes each party sent (party 0 sends more in a shuffle than the two others).
    bytes_by_party: [u64; 3],
    rounds: u64,
    verified: bool,
    /// `semi-honest` or `malicious`.
    security: SecurityMode,
    /// What the verification did (party 0's counters; zero in semi-honest mode).
    verify: VerifyStats,
    /// Seconds per phase of the last round (slowest party).
    phases: Vec<(&'static str, f64)>,
}

pub fn run(args: &RoundArgs) -> Result<bool, String> {
    let threads = crate::set_threads(args.threads)?;
    if !(0.0..=10.0).contains(&args.offline) {
        return Err("--offline must be between 0 and 10".into());
    }
    let n = args.users;
    let cfg = RoundConfig {
        payload_words: args.msg_size.div_ceil(8),
        store_capacity: args.store.unwrap_or((n / 10).max(16)),
        expiry_rounds: args.expiry,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    // Population: online users plus offline ones (targets only), registered users:
    // non-zero, distinct addresses.
    let total = n + (n as f64 * args.offline) as usize;
    let population = acs_engine::testing::random_pseudonyms(&mut rng, total);
    let mut shuffled = population.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.gen_range(0..=i));
    }
    let mut online: Vec<u64> = shuffled[..n].to_vec();
    online.sort_unstable();
    let online = Arc::new(online);

    let notaries = Arc::new(KeyNotary::three_random([0; 32]));
    // The three parties live for the whole run, as an exchange server's party does: what
    // a party keeps between rounds (message pools, verification buffers) is warm from
    // the second round on. Each round's inputs reach a party through its job channel,
    // and its result comes back with its index.
    let (job_tx, job_rx): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel::<Job>()).unzip();
    let job_rx: Arc<Vec<Mutex<mpsc::Receiver<Job>>>> =
        Arc::new(job_rx.into_iter().map(Mutex::new).collect());
    let (result_tx, result_rx) = mpsc::channel::<(usize, Result<PartyRound, EngineError>)>();
    let barrier = Arc::new(Barrier::new(3));
    let security = args.security;
    let net = args.net;
    let party_threads = {
        let notaries = notaries.clone();
        let on = online.clone();
        let store0 = SharedStore::empty(&cfg);
        std::thread::spawn(move || {
            run_parties(net, move |p| {
                p.set_security(security)?;
                let i = p.id().index();
                let mut store = store0.clone();
                loop {
                    let job = job_rx[i].lock().expect("job lock").recv();
                    let Ok(Job { round, inputs }) = job else {
                        return Ok(());
                    };
                    let before = p.stats();
                    barrier.wait();
                    let start = Instant::now();
                    let cpu_start = crate::process_cpu_seconds();
                    let r = exchange_round(p, &cfg, round, &on, inputs, &store, &notaries[i])
                        .and_then(|r| {
                            // Release point: in malicious mode every gate the round
                            // computed is verified before its outputs would go to users
                            // (a no-op in semi-honest mode).
                            p.verify_pending()?;
                            Ok(r)
                        });
                    let secs = start.elapsed().as_secs_f64();
                    let cpu = cpu_start.zip(crate::process_cpu_seconds());
                    let after = p.stats();
                    let failed = r.is_err();
                    let out = r.map(|r| {
                        store = r.store.clone();
                        (
                            r,
                            secs,
                            after.bytes_sent - before.bytes_sent,
                            after.rounds - before.rounds,
                            p.verify_stats(),
                            cpu,
                        )
                    });
                    if result_tx.send((i, out)).is_err() || failed {
                        return Ok(());
                    }
                }
            })
        })
    };
    let mut ideal_store: Vec<StoredItem> = Vec::new();
    let mut verified = true;
    let mut per_round = Vec::new();
    let mut cpu_per_round = Vec::new();
    let mut last_bytes = 0;
    let mut bytes_by_party = [0u64; 3];
    let mut last_rounds = 0;
    let mut last_verify = VerifyStats::default();
    let mut phases: Vec<(&'static str, f64)> = Vec::new();
    for round in 1..=args.rounds {
        eprintln!(
            "acs-bench round: round {round}/{}: {n} users, {} B messages, store {}: preparing blocks",
            args.rounds, args.msg_size, cfg.store_capacity
        );
        let blocks: Vec<Block> = online
            .iter()
            .map(|_| match rng.gen_range(0..3) {
                0 => Block::cover(&cfg),
                k => Block {
                    role: if k == 1 { Role::Send } else { Role::Request },
                    dst: population[rng.gen_range(0..population.len())],
                    payload: (0..cfg.payload_words).map(|_| rng.gen()).collect(),
                },
            })
            .collect();
        // Each party gets its own input (moved, not cloned), so the harness holds no copy
        // of the inputs while the round runs: peak memory is the round's.
        let per_party = PartyInputs::share_all(&cfg, round as u64, &online, &blocks, &mut rng);
        eprintln!("acs-bench round: round {round}: running three parties ({security})");
        for (tx, inputs) in job_tx.iter().zip(per_party) {
            tx.send(Job { round, inputs })
                .map_err(|_| "a party stopped before its round".to_string())?;
        }
        let mut parts: [Option<PartyRound>; 3] = [None, None, None];
        for _ in 0..3 {
            let (i, r) = result_rx
                .recv()
                .map_err(|_| "a party stopped without a result".to_string())?;
            parts[i] = Some(r.map_err(|e| format!("party failed: {e}"))?);
        }
        let parts = parts.map(|p| p.expect("one result per party"));
        let secs = parts.iter().map(|p| p.1).fold(0.0, f64::max);
        per_round.push(secs);
        cpu_per_round.push(crate::cpu_span(parts.iter().map(|p| p.5)));
        last_bytes = parts.iter().map(|p| p.2).max().unwrap_or(0);
        bytes_by_party = [parts[0].2, parts[1].2, parts[2].2];
        last_rounds = parts.iter().map(|p| p.3).max().unwrap_or(0);
        last_verify = parts[0].4;
        phases = parts[0]
            .0
            .phases
            .iter()
            .enumerate()
            .map(|(k, (name, _))| {
                let slowest = parts.iter().map(|p| p.0.phases[k].1).fold(0.0, f64::max);
                (*name, slowest)
            })
            .collect();
        eprintln!("acs-bench round: round {round}: {secs:.3} s; verifying against the ideal round");
        if parts.iter().any(|p| p.0.online != *online) {
            eprintln!("acs-bench round: the input check removed honest users");
            verified = false;
            break;
        }

        let inputs: Vec<(u64, Block)> = online.iter().copied().zip(blocks).collect();
        let (want, want_store) = ideal_round(&cfg, round, &inputs, &ideal_store);
        for (u, w) in want.iter().enumerate() {
            let got = reconstruct_checked(
                round,
                online[u],
                [
                    &parts[0].0.outputs.share(u),
                    &parts[1].0.outputs.share(u),
                    &parts[2].0.outputs.share(u),
                ],
                &cfg,
            )
            .map(|c| (c.liar, c.output));
            if got.as_ref() != Ok(&(None, w.clone())) {
                eprintln!(
                    "acs-bench round: user {} got {got:?}, expected {w:?}",
                    online[u]
                );
                verified = false;
                break;
            }
        }
        let store_words = acs_engine::share::reconstruct([
            &parts[0].0.store.rows,
            &parts[1].0.store.rows,
            &parts[2].0.store.rows,
        ]);
        let got_store = stored_items(&store_words, &cfg);
        if got_store != want_store {
            eprintln!("acs-bench round: store differs from the ideal store after round {round}");
            verified = false;
        }
        ideal_store = want_store;
        if !verified {
            break;
        }
    }
    drop(job_tx);
    for r in party_threads
        .join()
        .map_err(|_| "a party thread panicked".to_string())??
    {
        r.map_err(|e| format!("party failed: {e}"))?;
    }
    let report = Report {
        net: args.net,
        users: n,
        msg_size: args.msg_size,
        store: cfg.store_capacity,
        threads,
        seconds: per_round.last().copied().unwrap_or(0.0),
        seconds_per_round: per_round,
        cpu_seconds: cpu_per_round.last().copied().flatten(),
        cpu_seconds_per_round: cpu_per_round,
        peak_rss_bytes: crate::peak_rss_bytes(),
        bytes_per_party: last_bytes,
        bytes_by_party,
        rounds: last_rounds,
        verified,
        security: args.security,
        verify: last_verify,
        phases,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "round {} users={} msg={}B store={} threads={}: {:.3} s ({}, {}), {:.1} MB/party, {} rounds, verified={}",
            args.security, n, args.msg_size, report.store, threads, report.seconds, crate::cpu_text(report.cpu_seconds), crate::peak_text(report.peak_rss_bytes), last_bytes as f64 / 1e6, last_rounds, verified
        );
        for (name, secs) in &report.phases {
            println!("  {name:<24} {secs:>8.3} s");
        }
    }
    Ok(verified)
}
