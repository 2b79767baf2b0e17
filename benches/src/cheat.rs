//! `acs-bench cheat`: one exchange round in which one party deviates at a chosen place,
//! for people who audit the exchange. The three parties run in this process over
//! in-memory channels, exactly as `acs-bench round` runs them, in the chosen security
//! mode; the round's result is compared with the ideal (plaintext) round. The deviation
//! is made here, in bench-only code (the `acs` binary contains none of it), through the
//! seams the engine offers: the [`Notary`] that signs a party's statements, the answers a
//! party hands its users, and, for the places inside the computation, the engine's
//! fault-injection test instrument, compiled in only with this crate's opt-in `cheat`
//! feature (`cargo run --release -p acs-benches --features cheat --bin acs-bench --
//! cheat ...`).
//!
//! Places (`--at`):
//! - `digest`: the party signs a different digest of its online set for its next peer
//!   than for its previous one (equivocation). Detection is by the honest servers.
//! - `output`: the party alters the answers it sends users (user `k` gets a wrong `own`
//!   component, a wrong `next` component or a wrong commitment, by `k mod 3`).
//!   Detection is by the users; `outputs_wrong` counts users who accepted a wrong output.
//! - `input` (feature `cheat`): its message in the conversion of users' XOR shares to
//!   replicated shares (bit 0 of the first user's first word, the role bit; the liar
//!   keeps its own copy equal, so its shares stay consistent). Detection is by the
//!   honest server that receives it, against the hash the user sent it; the round goes
//!   on without that user, who is told to retry (`users_retried`), so nothing aborts.
//! - `and-sort`: its share of an AND layer of a quicksort comparison (the `--nth` AND
//!   layer of the round's sorts).
//! - `and-match`: its share of an AND layer of the matching's equality circuit.
//! - `mux`: its share of the matching's multiplexer AND.
//! - `shuffle`: its reshare message in the oblivious shuffle of the first sort.
//! - `open`: the value it sends in the `--nth` opening of quicksort comparison bits.
//!
//! The phases are aimed at through the marks the round sets ([`acs_engine::Phase`]); the
//! `--nth` message within the phase is corrupted (bit 0 of its first word).

use acs_engine::declassify::AuditLog;
use acs_engine::round::consistency::{
    online_digest, KeyNotary, Notary, SignedStatement, Statement, StatementKind,
};
use acs_engine::round::ideal::ideal_round;
use acs_engine::round::input::PartyInputs;
use acs_engine::round::mpc::{exchange_round, RoundResult, SharedStore};
use acs_engine::round::outputs::reconstruct_checked;
use acs_engine::round::{Block, Role, RoundConfig};
use acs_engine::testing::run_three;
use acs_engine::{resolve_complaint, Blame, EngineError, PartyId, Peer, SecurityMode};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Where the dishonest party deviates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Place {
    /// Its message in the input conversion (needs the `cheat` feature).
    Input,
    /// An AND layer of a quicksort comparison (needs the `cheat` feature).
    AndSort,
    /// An AND layer of the matching's equality circuit (needs the `cheat` feature).
    AndMatch,
    /// The matching's multiplexer AND (needs the `cheat` feature).
    Mux,
    /// A reshare message of the oblivious shuffle (needs the `cheat` feature).
    Shuffle,
    /// The value it sends in an opening of comparison bits (needs the `cheat` feature).
    Open,
    /// Equivocate on the signed online-set digest.
    Digest,
    /// Alter the output shares sent to users.
    Output,
}

impl Place {
    /// Every place, in the order of the matrix.
    pub const ALL: [Place; 8] = [
        Place::Input,
        Place::AndSort,
        Place::AndMatch,
        Place::Mux,
        Place::Shuffle,
        Place::Open,
        Place::Digest,
        Place::Output,
    ];

    fn name(self) -> &'static str {
        match self {
            Place::Input => "input",
            Place::AndSort => "and-sort",
            Place::AndMatch => "and-match",
            Place::Mux => "mux",
            Place::Shuffle => "shuffle",
            Place::Open => "open",
            Place::Digest => "digest",
            Place::Output => "output",
        }
    }

    /// Whether the deviation is made with the engine's fault-injection instrument.
    fn in_engine(self) -> bool {
        !matches!(self, Place::Digest | Place::Output)
    }

    /// Whether the promise at this place is an abort before the next opening (rather
    /// than users outvoting the liar, `output`, or the round going on without the users
    /// whose input was altered, `input`).
    fn aborts(self) -> bool {
        !matches!(self, Place::Output | Place::Input)
    }

    /// Whether `mode` promises detection here: every place in malicious mode; in
    /// semi-honest mode only the checks that run in both modes (openings, the online
    /// set, the users' check of their outputs).
    fn promised(self, mode: SecurityMode) -> bool {
        mode == SecurityMode::Malicious
            || matches!(self, Place::Open | Place::Digest | Place::Output)
    }
}

/// `acs-bench cheat` options.
#[derive(Args, Debug)]
pub struct CheatArgs {
    /// Where the dishonest party deviates.
    #[arg(long, value_enum, required_unless_present = "all")]
    pub at: Option<Place>,
    /// The dishonest party (0, 1 or 2).
    #[arg(long, default_value_t = 0)]
    pub party: usize,
    /// Run every place with every party as the liar, and print the table.
    #[arg(long, conflicts_with = "at")]
    pub all: bool,
    /// Security mode of the three parties.
    #[arg(long, default_value = "malicious")]
    pub security: SecurityMode,
    /// Which message within the place to corrupt (from 0): the AND layer within the
    /// phase, the shuffle message, or the comparison opening.
    #[arg(long, default_value_t = 0)]
    pub nth: u64,
    /// Online users in the round.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Payload size in 64-bit words.
    #[arg(long, default_value_t = 4)]
    pub payload_words: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON (one object, or with `--all` one array, the table going to stderr).
    #[arg(long)]
    pub json: bool,
}

/// What one honest server ended with.
#[derive(Debug, serde::Serialize)]
pub struct ServerView {
    /// The honest server.
    pub party: usize,
    /// Whether a check it ran stopped the round or, for `input`, removed users from it.
    pub detected: bool,
    /// Whether it stopped without beginning any opening after the deviation (the lied-in
    /// opening itself excepted, for `open`).
    pub aborted_before_next_opening: bool,
    /// The party it named alone, with proof or first-hand evidence.
    pub blamed: Option<usize>,
    /// The pair it named as "one of these two".
    pub suspects: Option<[usize; 2]>,
    /// Openings it began in the round.
    pub openings: u64,
    /// How it ended.
    pub end: String,
}

/// What one cheating run showed.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// The place.
    pub at: &'static str,
    /// The dishonest party.
    pub party: usize,
    /// The security mode.
    pub security: &'static str,
    /// Online users.
    pub users: usize,
    /// Whether the deviation happened at all (a phase may have fewer messages than
    /// `--nth`).
    pub fired: bool,
    /// Whether anybody (an honest server, or a user for `output`) noticed.
    pub detected: bool,
    /// Whether every honest server stopped before any opening that followed the
    /// deviation (only meaningful where servers detect; false when the round went on).
    pub aborted_before_opening: bool,
    /// Parties named alone, with proof or first-hand evidence, by an honest server or a
    /// user.
    pub blamed: Vec<usize>,
    /// Pairs named as "one of these two" by an honest server.
    pub suspect_pairs: Vec<[usize; 2]>,
    /// The one party the two honest servers' pairs share, if they share exactly one.
    pub pairs_meet_in: Option<usize>,
    /// Whether an honest party was named alone.
    pub honest_blamed: bool,
    /// Whether the round completed and released outputs to the users.
    pub delivered: bool,
    /// Users who accepted an output other than the ideal round's.
    pub outputs_wrong: usize,
    /// Users whose check named a liar (or refused the output).
    pub users_detecting: usize,
    /// Users the servers removed from the round and told to retry because their input
    /// share failed its check in the conversion.
    pub users_retried: usize,
    /// For each server, how many users' shares it passed on in the conversion failed
    /// their check (the servers log it; only the liar's may be non-zero).
    pub conversion_failed_at: [usize; 3],
    /// Whether this mode promises detection at this place.
    pub promised: bool,
    /// Whether the promise held: detected, aborted before the next opening (where
    /// servers detect), no honest party blamed, no wrong output; where nothing is
    /// promised, only that no honest party is blamed.
    pub kept: bool,
    /// What each honest server ended with.
    pub servers: Vec<ServerView>,
}

/// Signs honestly, except as the place says.
struct Liar {
    honest: KeyNotary,
    at: Place,
}

impl Notary for Liar {
    fn context(&self) -> [u8; 32] {
        self.honest.context()
    }

    fn sign(&self, to: Peer, s: &Statement) -> SignedStatement {
        if self.at == Place::Digest && to == Peer::Next && s.kind == StatementKind::Heard {
            // Another set's digest and size, validly signed: what a server that tells its
            // peers different sets sends one of them.
            let lie = Statement {
                count: s.count.saturating_sub(1),
                digest: online_digest(s.round, &[]),
                ..*s
            };
            return self.honest.sign(to, &lie);
        }
        self.honest.sign(to, s)
    }

    fn key_of(&self, who: PartyId) -> &acs_kgc::ed25519_dalek::VerifyingKey {
        self.honest.key_of(who)
    }
}

/// What a party ended with.
struct PartyEnd {
    result: Result<RoundResult, EngineError>,
    openings: u64,
    /// What it opened and sent (to settle an opening complaint).
    audit: AuditLog,
    /// The liar: the number of openings it had begun when its computation fault fired.
    fired_at: Option<u64>,
}

/// The engine-side deviation for a place (feature `cheat`).
#[cfg(any(feature = "cheat", test))]
#[derive(Clone, Copy, Debug)]
enum Fault {
    Compute(Option<acs_engine::Phase>, acs_engine::ComputeFault),
    Opening(acs_engine::OpeningFault),
}

#[cfg(any(feature = "cheat", test))]
fn fault_for(at: Place, nth: u64) -> Option<Fault> {
    use acs_engine::declassify::Reason;
    use acs_engine::{ComputeFault, ComputeSite, LieKind, OpeningFault, Phase};
    let compute = |phase, site| Some(Fault::Compute(phase, ComputeFault { site, nth }));
    match at {
        Place::Input => compute(None, ComputeSite::Input),
        Place::AndSort => compute(Some(Phase::Sort), ComputeSite::AndGate),
        Place::AndMatch => compute(Some(Phase::Match), ComputeSite::AndGate),
        Place::Mux => compute(Some(Phase::Mux), ComputeSite::AndGate),
        Place::Shuffle => compute(Some(Phase::Sort), ComputeSite::Reshare),
        Place::Open => Some(Fault::Opening(OpeningFault::nth(
            Reason::SortComparison,
            nth,
            LieKind::Value,
        ))),
        Place::Digest | Place::Output => None,
    }
}

/// Why a place cannot run in this build.
fn unavailable(at: Place) -> Option<String> {
    (at.in_engine() && !cfg!(any(feature = "cheat", test))).then(|| {
        format!(
            "--at {} deviates inside the computation, which needs the engine's fault-injection \
             test instrument: build acs-bench with the opt-in feature \
             (cargo run --release -p acs-benches --features cheat --bin acs-bench -- cheat ...); \
             without it only --at digest and --at output run",
            at.name()
        )
    })
}

/// Runs `acs-bench cheat`; Ok(true) when every outcome is what the mode promises.
pub fn run(args: &CheatArgs) -> Result<bool, String> {
    if args.users == 0 {
        return Err("--users must be at least 1".into());
    }
    let cfg = Setup {
        mode: args.security,
        users: args.users,
        payload_words: args.payload_words,
        seed: args.seed,
        nth: args.nth,
    };
    if args.all {
        if let Some(e) = Place::ALL.iter().find_map(|&at| unavailable(at)) {
            return Err(format!("--all: {e}"));
        }
        let mut outs = Vec::new();
        for at in Place::ALL {
            for liar in PartyId::ALL {
                outs.push(run_once(at, liar, &cfg)?);
            }
        }
        let table = table(&outs);
        if args.json {
            eprint!("{table}");
            println!(
                "{}",
                serde_json::to_string(&outs).map_err(|e| e.to_string())?
            );
        } else {
            print!("{table}");
        }
        return Ok(outs.iter().all(|o| o.kept));
    }
    let at = args.at.ok_or("--at or --all is required")?;
    if let Some(e) = unavailable(at) {
        return Err(e);
    }
    let liar = PartyId::new(args.party).ok_or("--party must be 0, 1 or 2")?;
    let out = run_once(at, liar, &cfg)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&out).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "cheat at {} by party {} ({}, {} users): detected {}, aborted before the next opening {}, blamed {:?}, suspect pairs {:?}, honest blamed {}, delivered {}, wrong outputs accepted {}, users told to retry {}, conversion failures per server {:?}, promise {}",
            out.at,
            out.party,
            out.security,
            out.users,
            out.detected,
            if out.at == "output" || out.at == "input" {
                "n/a".to_string()
            } else {
                out.aborted_before_opening.to_string()
            },
            out.blamed,
            out.suspect_pairs,
            out.honest_blamed,
            out.delivered,
            out.outputs_wrong,
            out.users_retried,
            out.conversion_failed_at,
            verdict(&out)
        );
        for s in &out.servers {
            println!("  server {}: {}", s.party, s.end);
        }
    }
    if !out.fired {
        return Err(format!(
            "the deviation did not fire: this round has no message {} at --at {} \
             (count from 0; try a smaller --nth), so nothing was tested",
            args.nth, out.at
        ));
    }
    Ok(out.kept)
}

/// The table's last column: whether the mode's promise held, or that the deviation
/// never happened (then the run tested nothing, so it neither kept nor broke one).
fn verdict(o: &Outcome) -> &'static str {
    match (o.fired, o.promised, o.kept) {
        (false, _, _) => "not fired",
        (true, true, true) => "kept",
        (true, true, false) => "BROKEN",
        (true, false, _) => "none",
    }
}

/// The matrix as a text table.
fn table(outs: &[Outcome]) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" };
    let mut t = format!(
        "{:<9} {:>4}  {:<5} {:<8} {:<8} {:<12} {:<11} {:<9} {:>5} {:>5}  {}\n",
        "at",
        "liar",
        "fired",
        "detected",
        "aborted",
        "blamed alone",
        "suspects",
        "delivered",
        "wrong",
        "retry",
        "promise"
    );
    for o in outs {
        let suspects: Vec<String> = o
            .suspect_pairs
            .iter()
            .map(|p| format!("{}{}", p[0], p[1]))
            .collect();
        t.push_str(&format!(
            "{:<9} {:>4}  {:<5} {:<8} {:<8} {:<12} {:<11} {:<9} {:>5} {:>5}  {}\n",
            o.at,
            o.party,
            yn(o.fired),
            yn(o.detected),
            if o.at == "output" || o.at == "input" {
                "n/a"
            } else {
                yn(o.aborted_before_opening)
            },
            format!("{:?}", o.blamed),
            match (suspects.is_empty(), o.pairs_meet_in) {
                (true, _) => "-".into(),
                (false, None) => suspects.join(","),
                (false, Some(p)) => format!("{}->{p}", suspects.join(",")),
            },
            yn(o.delivered),
            o.outputs_wrong,
            o.users_retried,
            verdict(o)
        ));
    }
    t
}

/// The round every cheating run plays.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Security mode of the three parties.
    pub mode: SecurityMode,
    /// Online users.
    pub users: usize,
    /// Payload words.
    pub payload_words: usize,
    /// Workload seed.
    pub seed: u64,
    /// Which message of the place to corrupt.
    pub nth: u64,
}

/// One round with `liar` deviating at `at`.
pub fn run_once(at: Place, liar: PartyId, setup: &Setup) -> Result<Outcome, String> {
    if let Some(e) = unavailable(at) {
        return Err(e);
    }
    let Setup {
        mode,
        users,
        payload_words,
        seed,
        nth,
    } = *setup;
    #[cfg(not(any(feature = "cheat", test)))]
    let _ = nth;
    let cfg = RoundConfig {
        payload_words,
        store_capacity: (users / 2).clamp(1, 64),
        expiry_rounds: 3,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let online = acs_engine::testing::random_pseudonyms(&mut rng, users);
    let blocks: Vec<Block> = online
        .iter()
        .map(|_| {
            if rng.gen_bool(0.2) {
                Block::cover(&cfg)
            } else {
                Block {
                    role: Role::Send,
                    dst: online[rng.gen_range(0..online.len())],
                    payload: (0..payload_words).map(|_| rng.gen()).collect(),
                }
            }
        })
        .collect();
    let per_party = Arc::new(PartyInputs::share_all(&cfg, 1, &online, &blocks, &mut rng));
    let notaries: Vec<Box<dyn Notary + Sync>> = KeyNotary::three_random([7; 32])
        .into_iter()
        .enumerate()
        .map(|(i, n)| -> Box<dyn Notary + Sync> {
            if i == liar.index() {
                Box::new(Liar { honest: n, at })
            } else {
                Box::new(n)
            }
        })
        .collect();
    let notaries = Arc::new(notaries);
    let on = Arc::new(online.clone());
    #[cfg(any(feature = "cheat", test))]
    let fault = fault_for(at, nth);
    let ends = run_three(move |p| {
        let i = p.id().index();
        p.set_security(mode)?;
        #[cfg(any(feature = "cheat", test))]
        if i == liar.index() {
            match fault {
                Some(Fault::Compute(Some(phase), f)) => p.inject_compute_fault_in(phase, f),
                Some(Fault::Compute(None, f)) => p.inject_compute_fault(f),
                Some(Fault::Opening(f)) => p.inject_fault(f),
                None => {}
            }
        }
        let result = p
            .agree_online(1, &on, notaries[i].as_ref())
            .and_then(|agreed| {
                let rows: Vec<usize> = agreed
                    .online
                    .iter()
                    .map(|u| on.binary_search(u).expect("agreed users were heard"))
                    .collect();
                exchange_round(
                    p,
                    &cfg,
                    1,
                    &agreed.online,
                    per_party[i].select(&cfg, &rows),
                    &SharedStore::empty(&cfg),
                    notaries[i].as_ref(),
                )
            });
        #[cfg(any(feature = "cheat", test))]
        let fired_at = p.compute_fault_fired();
        #[cfg(not(any(feature = "cheat", test)))]
        let fired_at = None;
        Ok(PartyEnd {
            result,
            openings: p.audit_log().openings_begun(),
            audit: p.audit_log().clone(),
            fired_at,
        })
    });
    let mut ends: Vec<PartyEnd> = ends
        .into_iter()
        .map(|e| e.map_err(|e| format!("party failed outside the round: {e}")))
        .collect::<Result<_, _>>()?;

    let honest: Vec<PartyId> = PartyId::ALL.into_iter().filter(|&p| p != liar).collect();
    let mut views: Vec<ServerView> = honest
        .iter()
        .map(|&h| server_view(h, &ends[h.index()]))
        .collect();
    // The last opening an honest server may have begun: none after the deviation, except
    // the lied-in opening itself (its index is in the victim's complaint).
    let limit = match at {
        Place::Digest => Some(0),
        Place::Output => None,
        Place::Open => honest.iter().find_map(|h| match &ends[h.index()].result {
            Err(EngineError::OpeningCheckFailed(c)) => Some(c.opening + 1),
            _ => None,
        }),
        _ => ends[liar.index()].fired_at,
    };
    let fired = match at {
        Place::Digest | Place::Output | Place::Open => true,
        _ => ends[liar.index()].fired_at.is_some(),
    };
    let server_detected = views.iter().any(|v| v.detected);
    for v in &mut views {
        v.aborted_before_next_opening =
            v.detected || (server_detected && ends[v.party].result.is_err());
        v.aborted_before_next_opening &= limit.is_some_and(|l| v.openings <= l);
    }
    let aborted_before_opening =
        server_detected && views.iter().all(|v| v.aborted_before_next_opening);
    // An accuser's opening complaint goes to both peers (as `acs exchange` sends it);
    // the other honest server settles it against its own record of what it sent.
    for &h in &honest {
        if let Err(EngineError::OpeningCheckFailed(c)) = &ends[h.index()].result {
            for v in views.iter_mut().filter(|v| v.party != h.index()) {
                let me = PartyId::new(v.party).expect("a party index");
                match resolve_complaint(me, &ends[v.party].audit, c) {
                    Blame::Party(p) => v.blamed = Some(p.index()),
                    Blame::Pair(x, y) => v.suspects = Some([x.index(), y.index()]),
                    Blame::Unknown => {}
                }
            }
        }
    }
    let mut blamed: BTreeSet<usize> = views.iter().filter_map(|v| v.blamed).collect();
    let suspect_pairs: Vec<[usize; 2]> = views.iter().filter_map(|v| v.suspects).collect();
    // Two honest servers' pairs that share exactly one party name it.
    let pairs_meet_in = match suspect_pairs.as_slice() {
        [a, b] => {
            let common: Vec<usize> = a.iter().copied().filter(|x| b.contains(x)).collect();
            (common.len() == 1 && a != b).then(|| common[0])
        }
        _ => None,
    };

    // Users: only when every party finished the round do they get outputs.
    let mut outputs_wrong = 0;
    let mut users_detecting = 0;
    let mut users_retried = 0;
    let mut conversion_failed_at = [0; 3];
    let delivered = ends.iter().all(|e| e.result.is_ok());
    if delivered {
        let mut results: Vec<RoundResult> = ends
            .drain(..)
            .map(|e| e.result.expect("checked above"))
            .collect();
        // The users told to retry are offline to the ideal round: it runs over the users
        // the servers computed for.
        let ran = results[0].online.clone();
        if results.iter().any(|r| r.online != ran) {
            return Err("the parties ran the round over different users".into());
        }
        users_retried = online.len() - ran.len();
        conversion_failed_at = results[0].input_check.failed_at;
        let inputs: Vec<(u64, Block)> = online
            .iter()
            .copied()
            .zip(blocks.iter().cloned())
            .filter(|(u, _)| ran.binary_search(u).is_ok())
            .collect();
        let (want, _) = ideal_round(&cfg, 1, &inputs, &[]);
        if at == Place::Output {
            let outputs = &mut results[liar.index()].outputs;
            for k in 0..outputs.len() {
                let s = outputs.get_mut(k);
                match k % 3 {
                    0 => s.own[1] ^= 1,
                    1 => s.next[0] ^= 1 << 9,
                    _ => s.other_commit[5] ^= 1,
                }
            }
        }
        for (k, w) in want.iter().enumerate() {
            let answers = [
                &results[0].outputs.share(k),
                &results[1].outputs.share(k),
                &results[2].outputs.share(k),
            ];
            match reconstruct_checked(1, ran[k], answers, &cfg) {
                Ok(c) => {
                    if let Some(l) = c.liar {
                        users_detecting += 1;
                        blamed.insert(l.index());
                    }
                    if &c.output != w {
                        outputs_wrong += 1;
                    }
                }
                Err(_) => users_detecting += 1,
            }
        }
    }
    // A failed conversion check names no one (the user may have lied), but the count
    // the servers log must point at the liar alone.
    let honest_blamed = honest.iter().any(|h| blamed.contains(&h.index()))
        || pairs_meet_in.is_some_and(|p| p != liar.index())
        || honest.iter().any(|h| conversion_failed_at[h.index()] > 0);
    let detected = server_detected || users_detecting > 0;
    let promised = at.promised(mode);
    let kept = !honest_blamed
        && (!promised
            || (detected
                && outputs_wrong == 0
                && if at.aborts() {
                    aborted_before_opening
                } else if at == Place::Input {
                    delivered && users_retried > 0
                } else {
                    true
                }));
    Ok(Outcome {
        at: at.name(),
        party: liar.index(),
        security: mode.name(),
        users: online.len(),
        fired,
        detected,
        aborted_before_opening,
        blamed: blamed.into_iter().collect(),
        suspect_pairs,
        pairs_meet_in,
        honest_blamed,
        delivered,
        outputs_wrong,
        users_detecting,
        users_retried,
        conversion_failed_at,
        promised,
        kept,
        servers: views,
    })
}

/// What honest server `h` made of the round.
fn server_view(h: PartyId, end: &PartyEnd) -> ServerView {
    let mut v = ServerView {
        party: h.index(),
        detected: false,
        aborted_before_next_opening: false,
        blamed: None,
        suspects: None,
        openings: end.openings,
        end: String::new(),
    };
    match &end.result {
        Ok(r) if !r.input_check.removed.is_empty() => {
            v.detected = true;
            v.end = format!(
                "round completed ({} openings) without {} users whose input failed its check \
                 (failures per server's conversion: {:?}); they are told to retry",
                end.openings,
                r.input_check.removed.len(),
                r.input_check.failed_at
            );
        }
        Ok(_) => v.end = format!("round completed ({} openings)", end.openings),
        Err(e) => {
            v.end = format!("stopped after {} openings: {e}", end.openings);
            v.detected = true;
            match e {
                EngineError::Equivocation(proof) => v.blamed = Some(proof.culprit().index()),
                EngineError::WrongFinalSet(s) => v.blamed = Some(s.statement.signer.index()),
                EngineError::PeerMisbehaved { peer, .. } => v.blamed = Some(peer.index()),
                EngineError::OpeningMismatch { suspect } => v.blamed = suspect.map(|p| p.index()),
                EngineError::VerificationFailed { culprit, .. } => {
                    v.blamed = culprit.map(|p| p.index())
                }
                EngineError::Deviation { suspects, .. } => {
                    v.suspects = Some([suspects[0].index(), suspects[1].index()])
                }
                EngineError::OpeningCheckFailed(c) => {
                    v.suspects = Some([c.value_from.index(), c.check_from.index()])
                }
                // A closed link: this server stopped because another did.
                _ => v.detected = false,
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(mode: SecurityMode) -> Setup {
        Setup {
            mode,
            users: 30,
            payload_words: 2,
            seed: 3,
            nth: 0,
        }
    }

    #[test]
    fn digest_and_output_lies_are_detected_without_blaming_the_honest() {
        for mode in [SecurityMode::SemiHonest, SecurityMode::Malicious] {
            for at in [Place::Digest, Place::Output] {
                for p in PartyId::ALL {
                    let o = run_once(at, p, &setup(mode)).unwrap();
                    assert!(o.detected, "{at:?} by {p}: {o:?}");
                    assert_eq!(o.blamed, vec![p.index()], "{at:?} by {p}: {o:?}");
                    assert!(!o.honest_blamed);
                    assert_eq!(o.outputs_wrong, 0);
                    assert_eq!(o.aborted_before_opening, at == Place::Digest, "{o:?}");
                    assert!(o.kept, "{o:?}");
                }
            }
        }
    }

    /// Malicious mode keeps its promise at every place it verifies: detected, aborted
    /// before the next opening, nobody honest blamed, nothing wrong delivered.
    #[cfg(any(feature = "cheat", test))]
    #[test]
    fn malicious_mode_catches_lies_in_gates_and_openings() {
        for at in [Place::AndSort, Place::AndMatch, Place::Mux, Place::Open] {
            for p in PartyId::ALL {
                let o = run_once(at, p, &setup(SecurityMode::Malicious)).unwrap();
                assert!(o.fired, "{o:?}");
                assert!(o.kept, "{at:?} by {p}: {o:?}");
                assert!(!o.delivered, "{o:?}");
                if at == Place::Open {
                    assert_eq!(o.pairs_meet_in, Some(p.index()), "{o:?}");
                }
            }
        }
        // A layer deep in the sort: caught after the openings before it, before the next.
        let deep = Setup {
            nth: 40,
            ..setup(SecurityMode::Malicious)
        };
        let o = run_once(Place::AndSort, PartyId::ALL[1], &deep).unwrap();
        assert!(o.fired && o.kept, "{o:?}");
        assert!(o.servers.iter().all(|s| s.openings > 0), "{o:?}");
    }

    /// A deviation past the last message of its place never happens: the outcome says
    /// so instead of calling the (untested) promise broken.
    #[cfg(any(feature = "cheat", test))]
    #[test]
    fn a_deviation_that_never_fires_is_reported_as_such() {
        let past = Setup {
            nth: 1_000_000,
            ..setup(SecurityMode::Malicious)
        };
        let o = run_once(Place::Shuffle, PartyId::ALL[0], &past).unwrap();
        assert!(!o.fired, "{o:?}");
        assert_eq!(verdict(&o), "not fired");
        assert!(!o.honest_blamed && o.outputs_wrong == 0, "{o:?}");
    }

    /// Malicious mode checks the input conversion: the altered share is caught by the
    /// server that receives it, its user is told to retry, the round delivers everyone
    /// else's correct output, and the count the servers log points at the liar alone.
    /// Semi-honest mode does not check it, as it checks no computation.
    #[cfg(any(feature = "cheat", test))]
    #[test]
    fn an_altered_input_share_is_caught_in_malicious_mode_and_its_user_retries() {
        for p in PartyId::ALL {
            let o = run_once(Place::Input, p, &setup(SecurityMode::Malicious)).unwrap();
            assert!(o.fired && o.detected && o.delivered, "{o:?}");
            assert_eq!(o.users_retried, 1, "{o:?}");
            assert_eq!(o.outputs_wrong, 0, "{o:?}");
            let mut at = [0; 3];
            at[p.index()] = 1;
            assert_eq!(o.conversion_failed_at, at, "{o:?}");
            assert!(o.blamed.is_empty() && !o.honest_blamed, "{o:?}");
            assert!(o.promised && o.kept, "{o:?}");

            let o = run_once(Place::Input, p, &setup(SecurityMode::SemiHonest)).unwrap();
            assert!(o.fired && o.delivered && !o.detected, "{o:?}");
            assert_eq!(o.users_retried, 0, "{o:?}");
            assert!(!o.promised && o.kept, "{o:?}");
        }
    }

    /// Semi-honest mode has no check on the computation: a wrong AND share in the sort
    /// goes through unnoticed and the round delivers. The first AND layers sort the pivot
    /// sample, where a wrong comparison only changes which pivots are chosen (quicksort
    /// is right with any pivots), so the lie goes into a later layer, a partition's
    /// comparison with its pivot: whether an output then changes depends on the random
    /// shuffle, so a wrong output must show up within a few runs (measured: in four of
    /// five runs at this layer).
    #[cfg(any(feature = "cheat", test))]
    #[test]
    fn semi_honest_mode_delivers_what_a_wrong_sort_gate_computes() {
        let partition = Setup {
            nth: 5,
            ..setup(SecurityMode::SemiHonest)
        };
        let mut wrong = 0;
        for k in 0..30 {
            let p = PartyId::ALL[k % 3];
            let o = run_once(Place::AndSort, p, &partition).unwrap();
            assert!(o.fired && o.delivered && !o.detected, "{o:?}");
            assert!(o.kept, "nothing promised, nobody honest blamed: {o:?}");
            wrong += o.outputs_wrong;
            if wrong > 0 && k >= 2 {
                break;
            }
        }
        assert!(wrong > 0, "no wrong output in 30 runs");
    }
}
