//! acs-kgc micro-benchmarks: user-key extraction, both sides of the key agreement (each
//! one pairing, done once per user and server and then cached), the per-round tag index,
//! and seal/open throughput for 256 B, 1 KB and 8 KB shares.
//!
//! `cargo bench -p acs-benches --bench kgc -- --measurement-time 3`

use acs_kgc::{Direction, Kgc, LongTermKey, MasterSecret, Registry, RegistryEntry, UserIdentity};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn agreement(c: &mut Criterion) {
    let kgc = Kgc::new(MasterSecret::from_seed([1; 32]));
    let alice = UserIdentity::from_seed([2; 32]).unwrap().pseudonym();
    let secret = kgc.extract(alice);
    let mut group = c.benchmark_group("kgc");
    group.bench_function("extract_user_key", |b| {
        b.iter(|| kgc.extract(black_box(alice)))
    });
    group.bench_function("agree_server_side", |b| {
        b.iter(|| kgc.agree(black_box(alice)))
    });
    group.bench_function("agree_user_side", |b| b.iter(|| black_box(&secret).agree()));
    group.finish();
}

fn tag_index(c: &mut Criterion) {
    let kgc = Kgc::new(MasterSecret::from_seed([1; 32]));
    let mut registry = Registry::new(kgc.server());
    let users = 10_000u32;
    for i in 0..users {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        let who = UserIdentity::from_seed(seed).unwrap();
        // A stand-in long-term key: the index costs the same for any key bytes, and
        // 10^4 pairings would only slow the set-up.
        let key = LongTermKey::from_bytes(who.pseudonym(), kgc.server(), [i as u8; 32]);
        registry
            .insert(RegistryEntry::new(&who.public_key(), 0, key))
            .unwrap();
    }
    let mut group = c.benchmark_group("kgc");
    group.throughput(Throughput::Elements(u64::from(users)));
    group.bench_function("tag_index_10k_users", |b| {
        b.iter(|| registry.tag_index(black_box(7), Direction::UserToServer))
    });
    group.finish();
}

fn seal_open(c: &mut Criterion) {
    let kgc = Kgc::new(MasterSecret::from_seed([1; 32]));
    let alice = UserIdentity::from_seed([2; 32]).unwrap().pseudonym();
    let key = kgc.agree(alice);
    let mut rng = StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group("kgc_share");
    for size in [256usize, 1024, 8192] {
        let share = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &share, |b, share| {
            b.iter(|| {
                key.seal(7, Direction::UserToServer, share, &mut rng)
                    .unwrap()
            })
        });
        let envelope = key
            .seal(7, Direction::UserToServer, &share, &mut rng)
            .unwrap();
        group.bench_with_input(BenchmarkId::new("open", size), &envelope, |b, envelope| {
            b.iter(|| key.open(7, Direction::UserToServer, envelope).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, agreement, tag_index, seal_open);
criterion_main!(benches);
