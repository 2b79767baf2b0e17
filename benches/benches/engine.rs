//! acs-engine micro-benchmarks: PRG throughput, AND gates/s and comparisons/s with the
//! three parties in this process (in-memory channels), oblivious shuffle throughput, and
//! the output commitment.
//!
//! `cargo bench -p acs-benches --bench engine`
//!
//! The three-party benches time whole protocol calls on all three parties (the parties
//! run on their own threads and share rayon's pool), so their figures are the system's
//! throughput on this machine, communication included.

use acs_engine::circuits::less_than;
use acs_engine::prg::{Prg, Purpose, Seed};
use acs_engine::share::Shared;
use acs_engine::testing::run_three;
use acs_engine::transpose::blocks;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};

fn prg(c: &mut Criterion) {
    let mut group = c.benchmark_group("prg");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    let p = Prg::new(&Seed::from_bytes([1; 32]), Purpose::ZeroSharing);
    for words in [84usize, 1 << 10, 1 << 16] {
        let mut out = vec![0u64; words];
        group.throughput(Throughput::Bytes(8 * words as u64));
        group.bench_with_input(BenchmarkId::new("fill_at", words), &words, |b, _| {
            b.iter(|| p.fill_at(black_box(3), &mut out))
        });
    }
    group.finish();
}

/// Times `iters` runs of `op` on all three parties, each run started together, and
/// returns the slowest party's total. One untimed run first: a party keeps its buffers
/// between protocol calls, so the timed runs see the steady state a long-lived server
/// sees, not the first-touch page faults of a fresh party.
fn time_three<F>(iters: u64, op: F) -> Duration
where
    F: Fn(&mut acs_engine::Party) -> Result<(), acs_engine::EngineError> + Send + Sync + 'static,
{
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let results = run_three(move |p| {
        op(p)?;
        barrier.wait();
        let start = Instant::now();
        for _ in 0..iters {
            op(p)?;
        }
        Ok(start.elapsed())
    });
    results
        .into_iter()
        .map(|r| r.expect("party failed"))
        .max()
        .expect("three")
}

fn random_shared(words: usize, seed: u8) -> Shared {
    // Any words are a valid (if inconsistent across parties) operand for timing: the
    // AND gate's cost does not depend on the values.
    let p = Prg::new(&Seed::from_bytes([seed; 32]), Purpose::Mask);
    let mut a = vec![0u64; words];
    let mut b = vec![0u64; words];
    p.fill_at(0, &mut a);
    p.fill_at(words as u64, &mut b);
    Shared { a, b }
}

fn and_gates(c: &mut Criterion) {
    let mut group = c.benchmark_group("and");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(10);
    for words in [1usize << 10, 1 << 16, 1 << 20] {
        group.throughput(Throughput::Elements(64 * words as u64));
        group.bench_with_input(
            BenchmarkId::new("gates", 64 * words),
            &words,
            |b, &words| {
                b.iter_custom(|iters| {
                    let x = random_shared(words, 1);
                    let y = random_shared(words, 2);
                    time_three(iters, move |p| {
                        black_box(p.and(&x, &y)?);
                        Ok(())
                    })
                })
            },
        );
    }
    group.finish();
}

fn comparisons(c: &mut Criterion) {
    let mut group = c.benchmark_group("less_than");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(10);
    let w = 84;
    for n in [1usize << 12, 1 << 16, 1 << 20] {
        let nb = blocks(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("w84", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let x = random_shared(w * nb, 3);
                let y = random_shared(w * nb, 4);
                time_three(iters, move |p| {
                    black_box(less_than(p, &x, &y, w, nb)?);
                    Ok(())
                })
            })
        });
    }
    group.finish();
}

fn shuffle(c: &mut Criterion) {
    let mut group = c.benchmark_group("shuffle");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(10);
    let row_words = 32; // 256-byte rows
    for n in [1usize << 12, 1 << 16, 1 << 18] {
        group.throughput(Throughput::Bytes((n * row_words * 8) as u64));
        group.bench_with_input(BenchmarkId::new("rows_256B", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let t = random_shared(n * row_words, 5);
                time_three(iters, move |p| {
                    black_box(p.shuffle(&t, row_words)?);
                    Ok(())
                })
            })
        });
    }
    group.finish();
}

/// The commitment to one output component each party computes twice per user per round
/// (`round::outputs::commit`): 36 words, a 256-byte message's output.
fn output_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("output_commit");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    let words: Vec<u64> = (0..36).collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("w36", |b| {
        b.iter(|| {
            acs_engine::round::outputs::commit(
                black_box(7),
                black_box(42),
                acs_engine::PartyId::ALL[1],
                &[3; acs_engine::round::outputs::NONCE_BYTES],
                black_box(&words),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, prg, and_gates, comparisons, shuffle, output_commit);
criterion_main!(benches);
