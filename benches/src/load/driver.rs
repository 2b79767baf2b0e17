//! `acs-load driver`: one child process that runs a share of the simulated users with the
//! real client library (`acs_transport::user::User`), so that no process needs more file
//! descriptors than the limit allows.
//!
//! Protocol with the parent, one JSON object per stdout line ([`DriverEvent`]): progress
//! while registering, `ready` when every user is registered, then (after the parent writes
//! `go FIRST_ROUND` on stdin) one `round` line per measured round and `done`. Errors go to
//! stderr and end the process with a non-zero status; the parent treats that as a failed
//! run. When stdin closes (the parent died) the driver exits.

use acs_engine::round::{payload_to_words, Incoming, RoundConfig, Status};
use acs_kgc::SignedDescriptor;
use acs_transport::exchange::clock::now_unix_ms;
use acs_transport::user::{identity_with_free_address, OutboxItem, User};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What a driver runs (written by the parent as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriverSpec {
    /// Driver number (for messages).
    pub index: usize,
    /// Deployment directory: `certs/ca.pem` and `master-{0,1,2}.key.descriptor`.
    pub dir: PathBuf,
    /// Global index of this driver's first user (it picks the user's relays).
    pub first_user: usize,
    /// Users this driver runs.
    pub users: usize,
    /// All entry relays (index, user-facing address).
    pub relays: Vec<(u32, SocketAddr)>,
    /// Relays each user connects to (one TLS connection each).
    pub relays_per_user: usize,
    /// Exchange parameters (identical to the servers').
    pub payload_words: usize,
    /// Store capacity.
    pub store_capacity: usize,
    /// Expiry.
    pub expiry_rounds: u32,
    /// Message size in bytes.
    pub msg_size: usize,
    /// Probability that a user with an empty outbox writes a new message in a round.
    pub send_probability: f64,
    /// Registrations in flight at once.
    pub concurrency: usize,
    /// Timeout for a relay, a registration answer or a round announcement.
    pub timeout_ms: u64,
    /// How long a user waits for its outputs after submitting.
    pub finish_timeout_ms: u64,
    /// A user waits at least this long after a round's announcement before submitting.
    pub submit_delay_ms: u64,
    /// ... plus a uniformly random extra of up to this much (users are not synchronised).
    pub submit_spread_ms: u64,
    /// Measured rounds.
    pub rounds: u64,
    /// After the measured rounds, at most this many drain rounds (no new messages) until
    /// every message written has arrived and every outbox is empty.
    pub max_drain_rounds: u64,
    /// Workload seed.
    pub seed: u64,
}

/// One line of driver output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DriverEvent {
    /// Users registered so far.
    Registered {
        /// Count.
        count: usize,
    },
    /// Every user is registered.
    Ready {
        /// Users.
        users: usize,
        /// Seconds from the driver's start to the last registration.
        seconds: f64,
    },
    /// One measured (or drain) round, as this driver's users saw it.
    Round(DriverRound),
    /// All rounds are done: the delivery check over every message this driver's users
    /// wrote.
    Done(Delivery),
}

/// The exactly-once check of one driver (or, summed, of the run): every message written
/// is identified by (source, target, payload), and every arrival is matched against it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Delivery {
    /// Messages written (each a fresh random payload).
    pub written: usize,
    /// Messages that arrived exactly once, at the right target, from the right source,
    /// with the right content.
    pub received_once: usize,
    /// Arrivals of a message that had already arrived.
    pub duplicates: usize,
    /// Arrivals that match no message written (wrong source, target or content).
    pub unknown: usize,
    /// Messages written that never arrived (after the drain rounds).
    pub lost: usize,
    /// Messages still in some user's outbox at the end.
    pub still_queued: usize,
    /// Drain rounds run after the measured rounds.
    pub drain_rounds: u64,
}

impl Delivery {
    /// Adds another driver's counts.
    pub fn add(&mut self, o: &Delivery) {
        self.written += o.written;
        self.received_once += o.received_once;
        self.duplicates += o.duplicates;
        self.unknown += o.unknown;
        self.lost += o.lost;
        self.still_queued += o.still_queued;
        self.drain_rounds = self.drain_rounds.max(o.drain_rounds);
    }

    /// Every message arrived exactly once and nothing else arrived.
    pub fn exact(&self) -> bool {
        self.received_once == self.written
            && self.duplicates == 0
            && self.unknown == 0
            && self.lost == 0
            && self.still_queued == 0
    }
}

/// A driver's view of one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DriverRound {
    /// Round number.
    pub round: u64,
    /// Users that took part (submitted) in this round.
    pub users: usize,
    /// Users that got all three output shares.
    pub complete: usize,
    /// Messages (not covers) sent this round.
    pub sent: usize,
    /// Status `delivered`.
    pub delivered: usize,
    /// Status `stored`.
    pub stored: usize,
    /// Messages that must be sent again (`dropped`, `retry`, or outputs missing).
    pub retried: usize,
    /// Messages received and matched to what was sent (source and content).
    pub received: usize,
    /// Messages received that match nothing sent, or arrived twice.
    pub bad: usize,
    /// Messages written so far that have not arrived yet (in outboxes or the store).
    pub in_flight: usize,
    /// Users whose submission finished after the deadline (their shares may have been
    /// refused as late; they wait for outputs until the finish timeout).
    pub late: usize,
    /// Per user with a complete output: milliseconds from the submission deadline to its
    /// reconstructed output.
    pub latencies_ms: Vec<u64>,
    /// Least time left before the deadline when a user finished submitting (negative:
    /// a user finished after the deadline; the window is too short).
    pub min_slack_ms: i64,
}

struct UserRound {
    user: usize,
    round: u64,
    deadline: u64,
    submitted_ms: u64,
    done_ms: u64,
    sent: bool,
    status: Option<Status>,
    incoming: Option<Incoming>,
    outbox: usize,
}

fn emit(ev: &DriverEvent) {
    let line = serde_json::to_string(ev).expect("driver events serialize");
    let mut out = std::io::stdout().lock();
    // A closed stdout means the parent is gone: nothing left to report to.
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        std::process::exit(3);
    }
}

fn load_descriptors(dir: &Path) -> Result<[SignedDescriptor; 3], String> {
    let mut v = Vec::with_capacity(3);
    for i in 0..3 {
        let p = dir.join(format!("master-{i}.key.descriptor"));
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        v.push(SignedDescriptor::from_bytes(&bytes).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    v.try_into().map_err(|_| "three descriptors".to_string())
}

/// The relays user `u` (global index) connects to: consecutive ones from `u * k`, so the
/// connections spread evenly over the relays.
pub fn user_relays(u: usize, k: usize, relays: &[(u32, SocketAddr)]) -> Vec<(u32, SocketAddr)> {
    (0..k).map(|j| relays[(u * k + j) % relays.len()]).collect()
}

/// Written messages, for checking what arrives: (from, to, payload words) → times received.
type Ledger = Arc<Mutex<HashMap<(u64, u64, Vec<u64>), u32>>>;

/// Runs the driver described by the JSON file `spec`.
pub fn run(spec: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?;
    let spec: DriverSpec =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", spec.display()))?;
    if spec.users < 2 || spec.relays.is_empty() || spec.relays_per_user == 0 {
        return Err("a driver needs at least two users and one relay".into());
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(drive(spec))
}

async fn drive(spec: DriverSpec) -> Result<(), String> {
    let start = Instant::now();
    let cfg = RoundConfig {
        payload_words: spec.payload_words,
        store_capacity: spec.store_capacity,
        expiry_rounds: spec.expiry_rounds,
        receipt_rounds: acs_engine::round::DEFAULT_RECEIPT_ROUNDS,
    };
    let ca = spec.dir.join("certs/ca.pem");
    let roots =
        acs_transport::tls::load_roots(&ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let descriptors = load_descriptors(&spec.dir)?;
    let timeout = Duration::from_millis(spec.timeout_ms);

    // Register with bounded concurrency: a burst of thousands of handshakes and pairings
    // at once would only make each of them time out.
    let mut users: Vec<Option<User>> = (0..spec.users).map(|_| None).collect();
    let mut joins = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let mut registered = 0usize;
    let mut last_note = Instant::now();
    // Registration refuses an address already taken (`docs/kgc.md`, "Addresses"), so
    // this process's users skip keys whose address another of them holds; a collision
    // with another process's user (about one pair at 10^5 users in all) is refused by
    // the servers, and that user makes a new key.
    // The set is shared with the registration tasks, so that a replacement key skips
    // this process's addresses too.
    let addresses = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let fresh_identity = {
        let addresses = addresses.clone();
        move || {
            // Nothing panics while the set is held; a poisoned lock is still consistent.
            let mut taken = addresses.lock().unwrap_or_else(|e| e.into_inner());
            identity_with_free_address(&mut taken, || rand::thread_rng().gen())
        }
    };
    while registered < spec.users {
        while next < spec.users && joins.len() < spec.concurrency.max(1) {
            let identity = fresh_identity().map_err(|e| format!("identity: {e}"))?;
            let relays = user_relays(spec.first_user + next, spec.relays_per_user, &spec.relays);
            let (roots, descriptors, i) = (roots.clone(), descriptors.clone(), next);
            let fresh_identity = fresh_identity.clone();
            joins.spawn(async move {
                let mut identity = identity;
                let mut tries = 0;
                loop {
                    let r = User::register(
                        identity,
                        cfg,
                        &relays,
                        roots.clone(),
                        &descriptors,
                        timeout,
                    )
                    .await;
                    // Another process's user holds this key's address: a new key (rare).
                    if tries < 3
                        && matches!(
                            r,
                            Err(acs_transport::user::UserError::Refused {
                                why: acs_transport::wire::Refusal::AddressTaken,
                                ..
                            })
                        )
                    {
                        tries += 1;
                        match fresh_identity() {
                            Ok(id) => identity = id,
                            Err(e) => break (i, Err(e.into())),
                        }
                        continue;
                    }
                    break (i, r);
                }
            });
            next += 1;
        }
        let Some(joined) = joins.join_next().await else {
            break;
        };
        let (i, r) = joined.map_err(|e| format!("registration task: {e}"))?;
        let user = r.map_err(|e| format!("user {} registration: {e}", spec.first_user + i))?;
        users[i] = Some(user);
        registered += 1;
        if last_note.elapsed() >= Duration::from_millis(250) || registered == spec.users {
            emit(&DriverEvent::Registered { count: registered });
            last_note = Instant::now();
        }
    }
    let users: Vec<User> = users.into_iter().flatten().collect();
    emit(&DriverEvent::Ready {
        users: users.len(),
        seconds: start.elapsed().as_secs_f64(),
    });

    // Wait for the parent's `go FIRST_ROUND`.
    let first = tokio::task::spawn_blocking(|| -> Result<u64, String> {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("stdin: {e}"))?;
        line.trim()
            .strip_prefix("go ")
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| format!("expected `go ROUND` on stdin, got {:?}", line.trim()))
    })
    .await
    .map_err(|e| e.to_string())??;
    // From here on, a closed stdin means the parent is gone: stop.
    std::thread::spawn(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut sink)
            .is_ok_and(|n| n > 0)
        {
            sink.clear();
        }
        std::process::exit(4);
    });

    let ids: Arc<Vec<u64>> = Arc::new(users.iter().map(|u| u.pseudonym().get()).collect());
    let ledger: Ledger = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<UserRound>();
    let last = first + spec.rounds - 1;
    // Users stop after this round (set once every message has arrived; at the latest
    // after the last drain round).
    let stop_after = Arc::new(AtomicU64::new(last + spec.max_drain_rounds));
    let finish_timeout = Duration::from_millis(spec.finish_timeout_ms);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut u) in users.into_iter().enumerate() {
        let (tx, ids, ledger, stop_after) =
            (tx.clone(), ids.clone(), ledger.clone(), stop_after.clone());
        let mut rng = StdRng::seed_from_u64(spec.seed ^ (((spec.first_user + i) as u64) << 20));
        let (msg_size, p) = (spec.msg_size, spec.send_probability);
        let (delay, spread) = (spec.submit_delay_ms, spec.submit_spread_ms);
        tasks.spawn(async move {
            let me = u.pseudonym().get();
            loop {
                let a = u.next_round().await?;
                // Announcements queued while everyone registered are stale: skip them.
                if a.round < first {
                    continue;
                }
                if a.round > stop_after.load(Ordering::SeqCst) {
                    break;
                }
                // New messages only in the measured rounds; drain rounds resend what is
                // still queued and send cover otherwise.
                if a.round <= last && u.outbox.is_empty() && rng.gen_bool(p) {
                    let to = loop {
                        let t = ids[rng.gen_range(0..ids.len())];
                        if t != me {
                            break t;
                        }
                    };
                    let payload: Vec<u8> = (0..msg_size).map(|_| rng.gen()).collect();
                    let words = payload_to_words(&payload, cfg.payload_words)
                        .expect("message sized to the payload");
                    ledger
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((me, to, words), 0);
                    u.outbox.push_back(OutboxItem { to, payload });
                }
                // A relay refuses a share for a round it has not opened yet, and the user
                // hears the announcement from whichever of its relays is fastest: wait a
                // little before submitting (real users are not synchronised either).
                let wait = delay + rng.gen_range(0..=spread);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let sent = u.send_block(a.round).await?;
                let submitted_ms = now_unix_ms();
                let report = u.finish_round(a.round, sent, finish_timeout).await?;
                let r = UserRound {
                    user: i,
                    round: a.round,
                    deadline: a.deadline_unix_ms,
                    submitted_ms,
                    done_ms: now_unix_ms(),
                    sent: report.sent.is_some(),
                    status: report.status,
                    incoming: report.incoming,
                    outbox: u.outbox.len(),
                };
                if tx.send(r).is_err() || a.round >= stop_after.load(Ordering::SeqCst) {
                    break;
                }
            }
            Ok::<_, acs_transport::user::UserError>(())
        });
    }
    drop(tx);

    // A round is reported once every user has reported it or a later one (a user that
    // missed a round shows up in the next). `behind` counts users not yet past
    // `next_round`.
    let n = ids.len();
    let mut latest: Vec<Option<u64>> = vec![None; n];
    let mut outbox: Vec<usize> = vec![0; n];
    let mut pending: HashMap<u64, Vec<UserRound>> = HashMap::new();
    let mut next_round = first;
    let mut behind = n;
    let mut settled = false;
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => {
                    if latest[r.user].is_none_or(|l| l < next_round) && r.round >= next_round {
                        behind -= 1;
                    }
                    latest[r.user] = Some(r.round);
                    outbox[r.user] = r.outbox;
                    pending.entry(r.round).or_default().push(r);
                }
                None => break,
            },
            Some(j) = tasks.join_next() => {
                match j {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("driver {}: a user failed: {e}", spec.index)),
                    Err(e) => return Err(format!("driver {}: user task: {e}", spec.index)),
                }
            }
        }
        while behind == 0 && !settled {
            let rows = pending.remove(&next_round).unwrap_or_default();
            let d = summarize(next_round, rows, &ids, &ledger);
            let in_flight = d.in_flight;
            emit(&DriverEvent::Round(d));
            // Every message written has arrived and nothing is queued: stop after this
            // round (users already in the next one finish it first).
            if next_round >= last && in_flight == 0 && outbox.iter().all(|&o| o == 0) {
                stop_after.fetch_min(next_round, Ordering::SeqCst);
                settled = true;
            }
            next_round += 1;
            behind = latest
                .iter()
                .filter(|l| l.is_none_or(|l| l < next_round))
                .count();
        }
    }
    while let Some(j) = tasks.join_next().await {
        match j {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("driver {}: a user failed: {e}", spec.index)),
            Err(e) => return Err(format!("driver {}: user task: {e}", spec.index)),
        }
    }
    // Rounds some user never reached (it ended early, or stopped before the others'
    // last round) are reported with what there is.
    let end = stop_after.load(Ordering::SeqCst);
    while next_round <= end || pending.keys().any(|&k| k >= next_round) {
        let rows = pending.remove(&next_round).unwrap_or_default();
        let d = summarize(next_round, rows, &ids, &ledger);
        // After the stop these rounds only count late arrivals into the ledger (a
        // duplicate shows there); they are not reported as rounds.
        if !settled {
            emit(&DriverEvent::Round(d));
        }
        next_round += 1;
    }
    let ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
    let mut delivery = Delivery {
        written: ledger.len(),
        still_queued: outbox.iter().sum(),
        drain_rounds: end.saturating_sub(last),
        ..Delivery::default()
    };
    for &c in ledger.values() {
        match c {
            0 => delivery.lost += 1,
            _ => {
                delivery.received_once += 1;
                delivery.duplicates += c as usize - 1;
            }
        }
    }
    delivery.unknown = UNKNOWN.load(Ordering::SeqCst);
    emit(&DriverEvent::Done(delivery));
    Ok(())
}

/// Arrivals that matched no message written (counted across rounds).
static UNKNOWN: AtomicUsize = AtomicUsize::new(0);

fn summarize(round: u64, rows: Vec<UserRound>, ids: &[u64], ledger: &Ledger) -> DriverRound {
    let mut d = DriverRound {
        round,
        users: rows.len(),
        min_slack_ms: i64::MAX,
        ..DriverRound::default()
    };
    let mut lat = Vec::with_capacity(rows.len());
    let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
    for r in rows {
        let slack = r.deadline as i64 - r.submitted_ms as i64;
        d.min_slack_ms = d.min_slack_ms.min(slack);
        if slack < 0 {
            d.late += 1;
        }
        if r.status.is_some() {
            d.complete += 1;
            lat.push(r.done_ms.saturating_sub(r.deadline));
        }
        if r.sent {
            d.sent += 1;
            match r.status {
                Some(Status::Delivered) => d.delivered += 1,
                Some(Status::Stored) => d.stored += 1,
                // The load writes only to registered users: a misaddressed report
                // contradicts the workload.
                Some(Status::Misaddressed) => d.bad += 1,
                _ => d.retried += 1,
            }
        }
        if let Some(inc) = r.incoming {
            match ledger.get_mut(&(inc.from, ids[r.user], inc.payload)) {
                Some(c) => {
                    *c += 1;
                    if *c == 1 {
                        d.received += 1;
                    } else {
                        d.bad += 1;
                    }
                }
                None => {
                    UNKNOWN.fetch_add(1, Ordering::SeqCst);
                    d.bad += 1;
                }
            }
        }
    }
    if d.min_slack_ms == i64::MAX {
        d.min_slack_ms = 0;
    }
    d.in_flight = ledger.values().filter(|&&c| c == 0).count();
    d.latencies_ms = lat;
    d
}
