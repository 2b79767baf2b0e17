//! `acs-bench cheat`: one exchange round in which one party deviates at a chosen place,
//! for people who audit the exchange. The three parties run in this process over
//! in-memory channels, exactly as `acs-bench round` runs them; the deviation is made
//! here, in bench-only code (the `acs` binary contains none of it), through the seams
//! the engine offers every caller: the [`Notary`] that signs a party's statements, and
//! the answers a party hands its users.
//!
//! Places (`--at`):
//! - `digest`: the party signs a different digest of its online set for its next peer
//!   than for its previous one (equivocation). Detection is by the honest servers.
//! - `output`: the party alters the answers it sends users (user `k` gets a wrong `own`
//!   component, a wrong `next` component or a wrong commitment, by `k mod 3`).
//!   Detection is by the users; `outputs_wrong` counts users who accepted a wrong output.
//!
//! New places plug into [`Place`] and [`run_once`]: a place says how the liar's notary
//! and answers differ from an honest party's, and which side (servers or users) is
//! expected to notice.

use acs_engine::round::consistency::{
    online_digest, KeyNotary, Notary, SignedStatement, Statement, StatementKind,
};
use acs_engine::round::ideal::ideal_round;
use acs_engine::round::mpc::{exchange_round, RoundResult, SharedStore};
use acs_engine::round::outputs::reconstruct_checked;
use acs_engine::round::{Block, Role, RoundConfig};
use acs_engine::testing::run_three;
use acs_engine::{EngineError, PartyId, Peer};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Where the dishonest party deviates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Place {
    /// Equivocate on the signed online-set digest.
    Digest,
    /// Alter the output shares sent to users.
    Output,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Digest => "digest",
            Place::Output => "output",
        }
    }
}

/// `acs-bench cheat` options.
#[derive(Args, Debug)]
pub struct CheatArgs {
    /// Where the dishonest party deviates.
    #[arg(long, value_enum)]
    pub at: Place,
    /// The dishonest party (0, 1 or 2).
    #[arg(long)]
    pub party: usize,
    /// Online users in the round.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Payload size in 64-bit words.
    #[arg(long, default_value_t = 4)]
    pub payload_words: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What one cheating run showed.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// The place.
    pub at: &'static str,
    /// The dishonest party.
    pub party: usize,
    /// Online users.
    pub users: usize,
    /// Whether anybody (an honest server, or a user for `output`) noticed.
    pub detected: bool,
    /// Whether every honest server stopped before its first opening of the round (only
    /// meaningful where servers detect; false when the round went on).
    pub aborted_before_opening: bool,
    /// Parties named alone, with proof or first-hand evidence, by an honest server or a
    /// user.
    pub blamed: Vec<usize>,
    /// Pairs named as "one of these two" by an honest server.
    pub suspect_pairs: Vec<[usize; 2]>,
    /// Whether an honest party was named alone.
    pub honest_blamed: bool,
    /// Users who accepted a wrong output.
    pub outputs_wrong: usize,
    /// Users whose check named a liar (or refused the output).
    pub users_detecting: usize,
    /// What each honest server ended with.
    pub servers: Vec<String>,
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
}

/// Runs `acs-bench cheat`; Ok(true) when the outcome is what security with abort
/// promises (detected, no honest party blamed, nothing wrong accepted).
pub fn run(args: &CheatArgs) -> Result<bool, String> {
    let liar = PartyId::new(args.party).ok_or("--party must be 0, 1 or 2")?;
    if args.users == 0 {
        return Err("--users must be at least 1".into());
    }
    let out = run_once(args.at, liar, args.users, args.payload_words, args.seed)?;
    let good = out.detected && !out.honest_blamed && out.outputs_wrong == 0;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&out).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "cheat at {} by party {} with {} users: detected {}, aborted before opening {}, blamed {:?}, suspect pairs {:?}, honest blamed {}, wrong outputs accepted {}",
            out.at,
            out.party,
            out.users,
            out.detected,
            out.aborted_before_opening,
            out.blamed,
            out.suspect_pairs,
            out.honest_blamed,
            out.outputs_wrong
        );
        for s in &out.servers {
            println!("  {s}");
        }
    }
    Ok(good)
}

/// One round with `liar` deviating at `at`.
pub fn run_once(
    at: Place,
    liar: PartyId,
    users: usize,
    payload_words: usize,
    seed: u64,
) -> Result<Outcome, String> {
    let cfg = RoundConfig {
        payload_words,
        store_capacity: (users / 2).clamp(1, 64),
        expiry_rounds: 3,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut online: Vec<u64> = (0..users).map(|_| rng.gen::<u64>() | 1).collect();
    online.sort_unstable();
    online.dedup();
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
    let inputs: Vec<(u64, Block)> = online.iter().copied().zip(blocks.iter().cloned()).collect();
    let (want, _) = ideal_round(&cfg, 1, &inputs, &[]);
    let shares: Vec<[Vec<u64>; 3]> = blocks.iter().map(|b| b.share(&cfg, &mut rng)).collect();
    let per_party: Arc<Vec<Vec<u64>>> = Arc::new(
        (0..3)
            .map(|i| shares.iter().flat_map(|s| s[i].iter().copied()).collect())
            .collect(),
    );
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
    let ends = run_three(move |p| {
        let i = p.id().index();
        let result = p
            .agree_online(1, &on, notaries[i].as_ref())
            .and_then(|agreed| {
                let mut blocks = Vec::new();
                for u in &agreed.online {
                    let k = on.binary_search(u).expect("agreed users were heard");
                    let w = cfg.block_words();
                    blocks.extend_from_slice(&per_party[i][k * w..(k + 1) * w]);
                }
                exchange_round(
                    p,
                    &cfg,
                    1,
                    &agreed.online,
                    blocks,
                    &SharedStore::empty(&cfg),
                )
            });
        Ok(PartyEnd {
            result,
            openings: p.audit_log().openings_begun(),
        })
    });
    let mut ends: Vec<PartyEnd> = ends
        .into_iter()
        .map(|e| e.map_err(|e| format!("party failed outside the round: {e}")))
        .collect::<Result<_, _>>()?;

    let honest: Vec<PartyId> = PartyId::ALL.into_iter().filter(|&p| p != liar).collect();
    let mut blamed = BTreeSet::new();
    let mut suspect_pairs = Vec::new();
    let mut servers = Vec::new();
    let mut server_detected = false;
    for &h in &honest {
        let end = &ends[h.index()];
        match &end.result {
            Ok(_) => servers.push(format!("server {h}: round completed")),
            Err(e) => {
                servers.push(format!(
                    "server {h}: stopped after {} openings: {e}",
                    end.openings
                ));
                match e {
                    EngineError::Equivocation(proof) => {
                        server_detected = true;
                        blamed.insert(proof.culprit().index());
                    }
                    EngineError::WrongFinalSet(s) => {
                        server_detected = true;
                        blamed.insert(s.statement.signer.index());
                    }
                    EngineError::PeerMisbehaved { peer, .. } => {
                        server_detected = true;
                        blamed.insert(peer.index());
                    }
                    EngineError::OpeningMismatch { suspect } => {
                        server_detected = true;
                        if let Some(p) = suspect {
                            blamed.insert(p.index());
                        }
                    }
                    EngineError::Deviation { suspects, .. } => {
                        server_detected = true;
                        suspect_pairs.push([suspects[0].index(), suspects[1].index()]);
                    }
                    EngineError::OpeningCheckFailed(c) => {
                        server_detected = true;
                        suspect_pairs.push([c.value_from.index(), c.check_from.index()]);
                    }
                    // A closed link: this server stopped because another did.
                    _ => {}
                }
            }
        }
    }
    let aborted_before_opening = server_detected
        && honest
            .iter()
            .all(|h| ends[h.index()].result.is_err() && ends[h.index()].openings == 0);

    // Users: only when every party finished the round do they get outputs.
    let mut outputs_wrong = 0;
    let mut users_detecting = 0;
    if ends.iter().all(|e| e.result.is_ok()) {
        let mut results: Vec<RoundResult> = ends
            .drain(..)
            .map(|e| e.result.expect("checked above"))
            .collect();
        if at == Place::Output {
            for (k, s) in results[liar.index()].outputs.iter_mut().enumerate() {
                match k % 3 {
                    0 => s.own[1] ^= 1,
                    1 => s.next[0] ^= 1 << 9,
                    _ => s.other_commit[5] ^= 1,
                }
            }
        }
        for (k, w) in want.iter().enumerate() {
            let answers = [
                &results[0].outputs[k],
                &results[1].outputs[k],
                &results[2].outputs[k],
            ];
            match reconstruct_checked(1, online[k], answers, &cfg) {
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
    let honest_blamed = honest.iter().any(|h| blamed.contains(&h.index()));
    Ok(Outcome {
        at: at.name(),
        party: liar.index(),
        users: online.len(),
        detected: server_detected || users_detecting > 0,
        aborted_before_opening,
        blamed: blamed.into_iter().collect(),
        suspect_pairs,
        honest_blamed,
        outputs_wrong,
        users_detecting,
        servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_place_and_party_is_detected_without_blaming_the_honest() {
        for at in [Place::Digest, Place::Output] {
            for p in PartyId::ALL {
                let o = run_once(at, p, 30, 2, 3).unwrap();
                assert!(o.detected, "{at:?} by {p}: {o:?}");
                assert_eq!(o.blamed, vec![p.index()], "{at:?} by {p}: {o:?}");
                assert!(!o.honest_blamed);
                assert_eq!(o.outputs_wrong, 0);
                assert_eq!(o.aborted_before_opening, at == Place::Digest, "{o:?}");
            }
        }
    }
}
