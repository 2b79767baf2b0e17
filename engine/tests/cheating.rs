//! A party that lies while opening (issue 7): the victim's check of that very opening
//! stops it and names the two senders, the other honest party's record points at the
//! liar, and nobody panics or hangs. Uses the `fault-injection` test instrument, which
//! the engine's own tests always compile in (see `engine/Cargo.toml`).

mod common;

use acs_engine::declassify::{
    resolve_complaint, AuditLog, Blame, LieKind, OpeningComplaint, OpeningFault, Reason,
};
use acs_engine::round::ideal::ideal_round;
use acs_engine::round::input::PartyInputs;
use acs_engine::round::mpc::{exchange_round, RoundResult, SharedStore};
use acs_engine::round::{Block, Output, Role, RoundConfig};
use acs_engine::share::{reconstruct_keys, SharedKeys};
use acs_engine::sort::{quicksort, Sorted};
use acs_engine::testing::run_three;
use acs_engine::{ChannelError, EngineError, Party, PartyId};
use rand::Rng;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

/// Each party's outcome and its audit log as it stood when it stopped.
type Outcome<T> = (Result<T, EngineError>, AuditLog);

/// Runs `f` on the three parties, `liar` (if any) with `fault` injected, and returns
/// each party's outcome and audit log. Fails the test if the parties take more than a
/// minute (a hang) or a party thread panics.
fn run_liar<T, F>(liar: Option<(PartyId, OpeningFault)>, f: F) -> [Outcome<T>; 3]
where
    T: Send + 'static,
    F: Fn(&mut Party) -> Result<T, EngineError> + Send + Sync + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = run_three(move |p| {
            if let Some((who, fault)) = liar {
                if p.id() == who {
                    p.inject_fault(fault);
                }
            }
            let result = f(p);
            Ok((result, p.audit_log().clone()))
        });
        let _ = tx.send(out.map(|r| r.expect("setup failed")));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out,
        Err(RecvTimeoutError::Timeout) => panic!("the parties hung"),
        Err(RecvTimeoutError::Disconnected) => panic!("a party thread panicked"),
    }
}

const KEY_BITS: usize = 32;

fn random_keys(n: usize, seed: u64) -> Vec<u128> {
    let mut rng = common::rng(seed);
    (0..n)
        .map(|_| rng.gen::<u128>() & ((1 << KEY_BITS) - 1))
        .collect()
}

/// Quicksort of `keys` (one payload word per row, naming its key) with an optional liar.
fn sort_with(keys: &[u128], liar: Option<(PartyId, OpeningFault)>) -> [Outcome<Sorted>; 3] {
    let key_words: Vec<u64> = keys.iter().flat_map(|k| [*k as u64, 0]).collect();
    let payload: Vec<u64> = keys.iter().map(|k| *k as u64 ^ 0x5a5a).collect();
    let ks = Arc::new(common::split_words(&key_words, 7));
    let ps = Arc::new(common::split_words(&payload, 8));
    run_liar(liar, move |p| {
        let i = p.id().index();
        let k = p.input_from_xor(ks[i].clone())?;
        let pl = p.input_from_xor(ps[i].clone())?;
        quicksort(p, &SharedKeys::from_words(&k), KEY_BITS, &pl, 1)
    })
}

/// The party other than `x` and `y`.
fn third(x: PartyId, y: PartyId) -> PartyId {
    PartyId::ALL
        .into_iter()
        .find(|&p| p != x && p != y)
        .expect("three parties")
}

/// Checks that `liar`'s lie of `kind` in opening `opening` was caught by its victim in
/// that opening, that the victim opened nothing from then on, that the other honest
/// party's record puts the liar in a pair with the victim, and that the other two stopped because the
/// victim went away. Returns the complaint.
fn assert_caught<T>(
    out: &[Outcome<T>; 3],
    liar: PartyId,
    kind: LieKind,
    opening: u64,
) -> OpeningComplaint {
    // A lie in the value reaches the party the liar sends values to (its previous
    // party); a lie in the check reaches its next party.
    let victim = match kind {
        LieKind::Value => liar.prev(),
        LieKind::Check => liar.next(),
    };
    let other = third(liar, victim);
    let c = match &out[victim.index()].0 {
        Err(EngineError::OpeningCheckFailed(c)) => *c,
        Err(e) => panic!("victim {victim} failed otherwise: {e}"),
        Ok(_) => panic!("victim {victim} did not notice the lie"),
    };
    assert_eq!(c.opening, opening);
    assert_eq!(c.accuser, victim);
    assert_eq!(c.value_from, victim.next());
    assert_eq!(c.check_from, victim.prev());
    assert_ne!(c.value_hash, c.check);
    match kind {
        LieKind::Value => assert_eq!(c.value_from, liar),
        LieKind::Check => assert_eq!(c.check_from, liar),
    }
    let victim_log = &out[victim.index()].1;
    assert_eq!(
        victim_log.entries().len() as u64,
        opening,
        "victim used the value"
    );
    // The other honest party completed that opening; its record puts the liar in a pair
    // with the accuser, which meets the accuser's own pair {value_from, check_from} in
    // the liar alone. No honest party is blamed alone.
    let other_log = &out[other.index()].1;
    assert!(other_log.entries().len() as u64 > opening);
    assert_eq!(
        resolve_complaint(other, other_log, &c),
        Blame::Pair(liar, victim)
    );
    // The accuser cannot settle its own complaint.
    assert_eq!(resolve_complaint(victim, victim_log, &c), Blame::Unknown);
    for p in [liar, other] {
        match &out[p.index()].0 {
            Err(EngineError::Channel(ChannelError::Closed(_))) => {}
            Err(e) => panic!("{p} failed otherwise: {e}"),
            Ok(_) => panic!("{p} finished although {victim} stopped"),
        }
    }
    // The complaint crosses the wire unchanged.
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(c, cfg).expect("encode");
    let (back, _): (OpeningComplaint, usize) =
        bincode::serde::decode_from_slice(&bytes, cfg).expect("decode");
    assert_eq!(back, c);
    c
}

/// In an honest run, party `i`'s check (a hash of `x_i`) equals the hash of the value
/// party `i-1` sent (its `b = x_i`), in every opening.
fn assert_records_agree(logs: [&AuditLog; 3]) {
    let n = logs[0].openings_begun();
    assert!(n > 0);
    assert_eq!(logs[0].entries(), logs[1].entries());
    assert_eq!(logs[1].entries(), logs[2].entries());
    for k in 0..n {
        for id in PartyId::ALL {
            let mine = logs[id.index()].sent(k).expect("record");
            let prev = logs[id.prev().index()].sent(k).expect("record");
            assert_eq!(mine.check, prev.value_hash, "opening {k}, {id}");
        }
    }
    for log in logs {
        assert_eq!(log.openings_begun(), n);
        assert!(log.sent(n).is_none());
    }
}

#[test]
fn honest_sort_verifies_and_every_party_records_what_it_sent() {
    let keys = random_keys(500, 1);
    // A fault far past the last opening never fires.
    let out = sort_with(
        &keys,
        Some((PartyId::ALL[1], OpeningFault::new(1 << 40, LieKind::Value))),
    );
    let [a, b, c] = out;
    let (sa, sb, sc) = (a.0.unwrap(), b.0.unwrap(), c.0.unwrap());
    let got = reconstruct_keys([&sa.keys, &sb.keys, &sc.keys]);
    let mut want = keys.clone();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_records_agree([&a.1, &b.1, &c.1]);
    assert_eq!(a.1.openings_begun(), sa.levels as u64);
}

#[test]
fn a_lie_in_any_sort_opening_is_caught_by_its_victim_and_blamed_on_the_liar() {
    let keys = random_keys(300, 2);
    for liar in PartyId::ALL {
        for kind in [LieKind::Value, LieKind::Check] {
            // The first opening, and one in the middle of the sort (300 keys take at
            // least 9 levels).
            for at in [0, 5] {
                let fault = OpeningFault::new(at, kind);
                let out = sort_with(&keys, Some((liar, fault)));
                assert_caught(&out, liar, kind, at);
            }
        }
    }
}

#[test]
fn a_lie_counted_by_reason_fires_in_that_reasons_opening() {
    let keys = random_keys(200, 3);
    let fault = OpeningFault::nth(Reason::SortComparison, 2, LieKind::Check);
    let out = sort_with(&keys, Some((PartyId::ALL[2], fault)));
    assert_caught(&out, PartyId::ALL[2], LieKind::Check, 2);
    // A reason that never comes up never fires.
    let fault = OpeningFault::nth(Reason::RouteAfterShuffle, 0, LieKind::Value);
    let out = sort_with(&keys, Some((PartyId::ALL[0], fault)));
    assert!(out.iter().all(|(r, _)| r.is_ok()));
}

const CFG: RoundConfig = RoundConfig {
    payload_words: 2,
    store_capacity: 8,
    expiry_rounds: 3,
    receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
};

/// One exchange round of `users` users who each send to a random one, with an optional
/// liar. Returns the parties' outcomes and the ideal round's outputs.
fn round_with(
    users: usize,
    liar: Option<(PartyId, OpeningFault)>,
) -> ([Outcome<RoundResult>; 3], Vec<Output>) {
    let mut rng = common::rng(40 + users as u64);
    let mut online: Vec<u64> = (0..users).map(|_| rng.gen::<u64>() | 1).collect();
    online.sort_unstable();
    online.dedup();
    let blocks: Vec<Block> = online
        .iter()
        .map(|_| Block {
            role: Role::Send,
            dst: online[rng.gen_range(0..online.len())],
            payload: (0..CFG.payload_words).map(|_| rng.gen()).collect(),
        })
        .collect();
    let inputs: Vec<(u64, Block)> = online.iter().copied().zip(blocks.iter().cloned()).collect();
    let (want, _) = ideal_round(&CFG, 1, &inputs, &[]);
    let per_party = Arc::new(PartyInputs::share_all(&CFG, 1, &online, &blocks, &mut rng));
    let online = Arc::new(online);
    let n = common::notaries();
    let out = run_liar(liar, move |p| {
        let i = p.id().index();
        exchange_round(
            p,
            &CFG,
            1,
            &online,
            per_party[i].clone(),
            &SharedStore::empty(&CFG),
            &n[i],
        )
    });
    (out, want)
}

#[test]
fn honest_round_with_an_unfired_fault_matches_the_ideal_round() {
    // The round opens routing tags three times: a fourth opening never comes.
    let fault = OpeningFault::nth(Reason::RouteAfterShuffle, 3, LieKind::Check);
    let (out, want) = round_with(30, Some((PartyId::ALL[0], fault)));
    let [a, b, c] = out;
    let (ra, rb, rc) = (a.0.unwrap(), b.0.unwrap(), c.0.unwrap());
    for (u, w) in want.iter().enumerate() {
        let got = Output::reconstruct(
            [
                ra.outputs.get(u).own,
                rb.outputs.get(u).own,
                rc.outputs.get(u).own,
            ],
            &CFG,
        )
        .expect("output decodes");
        assert_eq!(&got, w, "user {u}");
    }
    assert_records_agree([&a.1, &b.1, &c.1]);
}

#[test]
fn a_lie_in_a_routing_opening_of_a_round_is_caught_and_blamed_on_the_liar() {
    for liar in PartyId::ALL {
        for kind in [LieKind::Value, LieKind::Check] {
            // The round opens routing tags three times: after the first sort (route A),
            // after the second (payload indices), and the payload destinations.
            for nth in [0, 1, 2] {
                let fault = OpeningFault::nth(Reason::RouteAfterShuffle, nth, kind);
                let (out, _) = round_with(20, Some((liar, fault)));
                let victim = match kind {
                    LieKind::Value => liar.prev(),
                    LieKind::Check => liar.next(),
                };
                // Where the routing opening falls depends on how many levels the sorts
                // before it took; the victim's log says.
                let at = out[victim.index()].1.entries().len() as u64;
                let c = assert_caught(&out, liar, kind, at);
                let other_log = &out[third(liar, victim).index()].1;
                let opened = &other_log.entries()[c.opening as usize];
                assert_eq!(opened.reason, Reason::RouteAfterShuffle);
                let routing_before = other_log.entries()[..c.opening as usize]
                    .iter()
                    .filter(|e| e.reason == Reason::RouteAfterShuffle)
                    .count();
                assert_eq!(routing_before as u64, nth, "{liar} {kind:?} nth {nth}");
            }
        }
    }
}

#[test]
fn a_lie_in_a_sort_comparison_inside_a_round_is_caught() {
    for liar in PartyId::ALL {
        let fault = OpeningFault::new(3, LieKind::Value);
        let (out, _) = round_with(20, Some((liar, fault)));
        assert_caught(&out, liar, LieKind::Value, 3);
    }
}

#[test]
fn a_complaint_naming_a_party_that_does_not_exist_does_not_decode() {
    let c = OpeningComplaint {
        opening: 3,
        accuser: PartyId::ALL[0],
        value_from: PartyId::ALL[1],
        check_from: PartyId::ALL[2],
        value_hash: [1; 32],
        check: [2; 32],
    };
    let cfg = bincode::config::standard();
    let mut bytes = bincode::serde::encode_to_vec(c, cfg).expect("encode");
    // opening (1 byte varint), then the accuser's index.
    assert_eq!(bytes[1], 0);
    bytes[1] = 3;
    let back: Result<(OpeningComplaint, usize), _> = bincode::serde::decode_from_slice(&bytes, cfg);
    assert!(back.is_err());
}
