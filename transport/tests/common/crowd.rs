//! Users for the fault tests: real `acs_transport::user::User`s, registered through the
//! deployment's relays over TLS, each with messages queued to the others; driven round by
//! round (all at once, each in its own task) until every message has settled, and
//! checked against what was sent: every message arrives exactly once, at its target,
//! intact.
//!
//! Include it after `system.rs`:
//! `#[path = "common/system.rs"] mod system; #[path = "common/crowd.rs"] mod crowd;`

// Each fault test binary uses a different part of this module.
#![allow(dead_code)]

use crate::system::Deployment;
use acs_engine::round::{payload_to_words, Status};
use acs_kgc::UserIdentity;
use acs_transport::user::{OutboxItem, RoundReport, User, UserError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One deployment at a time: each fault test runs several `acs` processes, and on a
/// two-core machine parallel deployments would make every round deadline a race.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The runtime the users run on (the test thread itself stays free to kill and start
/// processes).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// How long a user waits for a round's outputs before leaving the round unsettled.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a crowd saw, round by round.
#[derive(Debug, Default)]
pub struct Tally {
    /// `(round, status)` of every report, late ones included, per user index.
    pub statuses: Vec<Vec<(u64, Option<Status>)>>,
    /// `(from, to, payload words)` of every message received.
    pub received: Vec<(u64, u64, Vec<u64>)>,
    /// Rounds the crowd took part in.
    pub rounds: Vec<u64>,
    /// `(round, user index, server)` for every server a user's check named as a liar.
    pub liars: Vec<(u64, usize, usize)>,
}

impl Tally {
    /// Users that got `retry` in `round`.
    pub fn retried_in(&self, round: u64) -> Vec<usize> {
        self.users_with(round, |s| s == Some(Status::Retry))
    }

    /// Users whose block of `round` was taken (delivered, stored or cover).
    pub fn served_in(&self, round: u64) -> Vec<usize> {
        self.users_with(round, |s| {
            matches!(
                s,
                Some(Status::Delivered) | Some(Status::Stored) | Some(Status::Cover)
            )
        })
    }

    fn users_with(&self, round: u64, f: impl Fn(Option<Status>) -> bool) -> Vec<usize> {
        (0..self.statuses.len())
            .filter(|&i| self.statuses[i].iter().any(|&(r, s)| r == round && f(s)))
            .collect()
    }
}

/// Registered users and what they were asked to send.
pub struct Crowd {
    /// The users, in registration order.
    pub users: Vec<User>,
    /// `(from, to, payload words)` of every message queued.
    pub sent: Vec<(u64, u64, Vec<u64>)>,
    /// What the rounds so far gave.
    pub tally: Tally,
}

impl Crowd {
    /// Registers `n` users through every relay of `d` (the relays given by `relays`, or
    /// all of them) and queues `per_user` messages from each to the next users in turn.
    pub async fn register(
        d: &Deployment,
        n: usize,
        per_user: usize,
        relays: Option<Vec<(u32, SocketAddr)>>,
    ) -> Crowd {
        let relays = relays.unwrap_or_else(|| d.entry_addrs());
        let roots = d.roots();
        let descriptors = d.descriptors();
        let cfg = d.opts.round;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let (relays, roots, descriptors) = (relays.clone(), roots.clone(), descriptors.clone());
            tasks.spawn(async move {
                // The processes may still be starting: retry for a while.
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let identity = UserIdentity::generate(&mut rand_core::OsRng);
                    let u = User::register(
                        identity,
                        cfg,
                        &relays,
                        roots.clone(),
                        &descriptors,
                        Duration::from_secs(60),
                    )
                    .await;
                    if u.is_ok() || Instant::now() > deadline {
                        return (i, u);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        let mut users: Vec<Option<User>> = (0..n).map(|_| None).collect();
        while let Some(r) = tasks.join_next().await {
            let (i, u) = r.unwrap();
            users[i] = Some(u.unwrap_or_else(|e| panic!("user {i} did not register: {e}")));
        }
        let mut users: Vec<User> = users.into_iter().map(Option::unwrap).collect();
        let ids: Vec<u64> = users.iter().map(|u| u.pseudonym().get()).collect();
        let mut sent = Vec::new();
        for (i, u) in users.iter_mut().enumerate() {
            for k in 0..per_user {
                let to = ids[(i + 1 + k) % n];
                let payload = format!("m{i}.{k}").into_bytes();
                let words = payload_to_words(&payload, cfg.payload_words).unwrap();
                sent.push((ids[i], to, words));
                u.outbox.push_back(OutboxItem { to, payload });
            }
        }
        Crowd {
            users,
            sent,
            tally: Tally {
                statuses: vec![Vec::new(); n],
                ..Tally::default()
            },
        }
    }

    /// Whether every message has left its outbox, no round is waiting for shares, and as
    /// many messages arrived as were sent (a stored one arrives a round or more after
    /// its sender saw `stored`).
    pub fn settled(&self) -> bool {
        self.users
            .iter()
            .all(|u| u.outbox.is_empty() && u.unsettled() == 0)
            && self.tally.received.len() >= self.sent.len()
    }

    /// One round for every user: take the next open round, send, collect the outputs.
    /// Returns the round numbers the users took part in.
    pub async fn round(&mut self) -> Vec<u64> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut u) in self.users.drain(..).enumerate() {
            tasks.spawn(async move {
                let r = one_round(&mut u).await;
                (i, u, r)
            });
        }
        let mut back: Vec<Option<User>> = (0..self.tally.statuses.len()).map(|_| None).collect();
        let mut rounds = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (i, mut u, r) = r.unwrap();
            let reports = r.unwrap_or_else(|e| panic!("user {i}: {e}"));
            for rep in reports.into_iter().chain(u.take_late()) {
                rounds.push(rep.round);
                self.tally.statuses[i].push((rep.round, rep.status));
                if let Some(l) = rep.liar {
                    self.tally.liars.push((rep.round, i, l));
                }
                if let Some(inc) = rep.incoming {
                    self.tally
                        .received
                        .push((inc.from, u.pseudonym().get(), inc.payload));
                }
            }
            back[i] = Some(u);
        }
        self.users = back.into_iter().map(Option::unwrap).collect();
        rounds.sort_unstable();
        rounds.dedup();
        self.tally.rounds.extend(&rounds);
        rounds
    }

    /// Rounds until everything settled (panics after `max_rounds` or `timeout`).
    pub async fn until_settled(&mut self, max_rounds: usize, timeout: Duration) {
        let start = Instant::now();
        for _ in 0..max_rounds {
            if self.settled() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "not settled after {timeout:?}: {:?}",
                self.tally.statuses
            );
            self.round().await;
        }
        assert!(
            self.settled(),
            "not settled after {max_rounds} rounds: outboxes {:?}, statuses {:?}",
            self.users
                .iter()
                .map(|u| u.outbox.len())
                .collect::<Vec<_>>(),
            self.tally.statuses
        );
    }

    /// Every message queued arrived exactly once, at its target, intact; nothing else
    /// arrived.
    pub fn assert_exactly_once(&self) {
        let mut count: HashMap<&(u64, u64, Vec<u64>), usize> = HashMap::new();
        for m in &self.tally.received {
            *count.entry(m).or_default() += 1;
        }
        for m in &self.sent {
            let c = count.get(m).copied().unwrap_or(0);
            assert_eq!(
                c, 1,
                "message {m:?} arrived {c} times; statuses {:?}",
                self.tally.statuses
            );
        }
        assert_eq!(
            self.tally.received.len(),
            self.sent.len(),
            "received messages that were not sent"
        );
    }
}

async fn one_round(u: &mut User) -> Result<Vec<RoundReport>, UserError> {
    let a = u.next_round().await?;
    let sent = u.send_block(a.round).await?;
    let report = u.finish_round(a.round, sent, FINISH_TIMEOUT).await?;
    Ok(vec![report])
}
