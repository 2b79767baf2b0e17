//! The parent process: writes a deployment, starts three `acs exchange` and `E` `acs entry`
//! processes and `D` driver children, registers every user, runs the measured rounds,
//! samples every process's memory, and assembles the report.

use crate::deploy::{self, Params};
use crate::driver::{Delivery, DriverEvent, DriverRound, DriverSpec};
use crate::procs::{self, CommitLine, Event, Kind, Procs};
use crate::report::{self, LoadReport, MemorySeries, ProcessCpu, RoundRow, Setup};
use crate::LoadArgs;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// File descriptors a process keeps for itself beyond its user connections.
const FD_SLACK: usize = 200;

/// Sizes derived from the arguments and the machine.
#[derive(Debug, Clone)]
struct Plan {
    entries: u32,
    drivers: usize,
    relays_per_user: usize,
    store_capacity: usize,
    window_ms: u64,
    submit_delay_ms: u64,
    submit_spread_ms: u64,
}

fn plan(a: &LoadArgs, fd_limit: usize) -> Result<Plan, String> {
    if a.users < 4 || a.rounds == 0 || a.msg_size == 0 || a.relays_per_user == 0 {
        return Err(
            "need --users >= 4, --rounds >= 1, --msg-size >= 1, --relays-per-user >= 1".into(),
        );
    }
    if !(0.0..=1.0).contains(&a.send_probability) {
        return Err("--send-probability must be within 0..=1".into());
    }
    let usable = fd_limit.saturating_sub(FD_SLACK).max(1);
    let k = a.relays_per_user;
    let conns = a.users * k;
    let entries = match a.entries {
        Some(0) => return Err("--entries must be at least 1".into()),
        Some(e) => e,
        // Keep each relay at 80% of the descriptor limit; at least three, so a user's
        // three shares can take three different relays.
        None => (conns.div_ceil(usable * 4 / 5).max(3)) as u32,
    };
    let relays_per_user = k.min(entries as usize);
    let conns = a.users * relays_per_user;
    let drivers = match a.drivers {
        Some(0) => return Err("--drivers must be at least 1".into()),
        Some(d) => d,
        None => conns.div_ceil(usable * 4 / 5).max(1),
    };
    if a.users / drivers < 2 {
        return Err(format!(
            "{drivers} drivers for {} users: each needs at least two",
            a.users
        ));
    }
    let per_relay = conns.div_ceil(entries as usize);
    if per_relay + FD_SLACK > fd_limit {
        return Err(format!(
            "each entry relay would hold {per_relay} connections, over the open-file limit {fd_limit}: use more --entries (at least {}) or fewer --relays-per-user",
            conns.div_ceil(usable)
        ));
    }
    let per_driver = a.users.div_ceil(drivers) * relays_per_user;
    if per_driver + FD_SLACK > fd_limit {
        return Err(format!(
            "each driver would hold {per_driver} connections, over the open-file limit {fd_limit}: use more --drivers (at least {})",
            conns.div_ceil(usable)
        ));
    }
    let window_ms = a.window_ms.unwrap_or(2000 + a.users as u64 / 2);
    let submit_delay_ms = (window_ms / 5).min(200);
    let submit_spread_ms = a.spread_ms.unwrap_or(window_ms / 4);
    if submit_delay_ms + submit_spread_ms >= window_ms {
        return Err(format!(
            "--spread-ms {submit_spread_ms} leaves no time in the {window_ms} ms window"
        ));
    }
    Ok(Plan {
        entries,
        drivers,
        relays_per_user,
        store_capacity: a.store_capacity.unwrap_or((a.users / 10).max(16)),
        window_ms,
        submit_delay_ms,
        submit_spread_ms,
    })
}

fn find_acs(a: &LoadArgs) -> Result<PathBuf, String> {
    let p = match &a.acs {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("own path: {e}"))?
            .with_file_name("acs"),
    };
    if !p.is_file() {
        return Err(format!(
            "the acs binary is not at {} (build it with `cargo build --release -p acs-transport`, or pass --acs PATH)",
            p.display()
        ));
    }
    Ok(p)
}

/// Memory samples of one process.
#[derive(Debug, Default)]
struct Mem {
    peak_since_mark: u64,
    series: Option<MemorySeries>,
}

/// Everything the event loop has learned so far.
struct State {
    commits: [BTreeMap<u64, CommitLine>; 3],
    relay_links: Vec<usize>,
    registered: Vec<usize>,
    ready: Vec<Option<f64>>,
    rounds: BTreeMap<u64, Vec<DriverRound>>,
    done: Vec<Option<Delivery>>,
    mem: Vec<Mem>,
    last_sample: Instant,
}

struct Runner {
    procs: Procs,
    events: Receiver<Event>,
    state: State,
    interrupted: Arc<AtomicBool>,
}

impl Runner {
    /// Handles events and samples memory until `until` holds, a child fails, the time is
    /// up, or ctrl-c.
    fn pump(
        &mut self,
        what: &str,
        limit: Duration,
        mut until: impl FnMut(&State) -> bool,
        mut on_tick: impl FnMut(&State),
    ) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + limit;
        let mut heartbeat = started;
        loop {
            if until(&self.state) {
                return Ok(());
            }
            if self.interrupted.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {} s waiting for {what}",
                    limit.as_secs()
                ));
            }
            match self.events.recv_timeout(Duration::from_millis(100)) {
                Ok(ev) => self.handle(ev)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("event channel closed".into()),
            }
            if self.state.last_sample.elapsed() >= Duration::from_millis(100) {
                self.sample();
                on_tick(&self.state);
            }
            // Registration has its own progress lines.
            if heartbeat.elapsed() >= Duration::from_secs(30) && what != "registration" {
                heartbeat = Instant::now();
                eprintln!(
                    "acs-load: still waiting for {what} ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            if let Some((kind, status, log)) = self.procs.exited() {
                let finished = matches!(kind, Kind::Driver(d) if self.state.done[d].is_some())
                    && status.success();
                if !finished {
                    // Events the child sent before it died (its error) are still queued.
                    while let Ok(ev) = self.events.try_recv() {
                        let _ = self.handle(ev);
                    }
                    return Err(format!(
                        "{} exited ({status}) while waiting for {what}; last log lines ({}):\n{}",
                        kind.name(),
                        log.display(),
                        procs::log_tail(&log, 15)
                    ));
                }
            }
        }
    }

    fn handle(&mut self, ev: Event) -> Result<(), String> {
        match ev {
            Event::Committed { server, line } => {
                self.state.commits[server].insert(line.round, line);
            }
            Event::RelayConnected { relay } => self.state.relay_links[relay] += 1,
            Event::Driver { driver, line } => {
                let ev: DriverEvent = serde_json::from_str(&line)
                    .map_err(|e| format!("driver-{driver} wrote {line:?}: {e}"))?;
                match ev {
                    DriverEvent::Registered { count } => self.state.registered[driver] = count,
                    DriverEvent::Ready { users, seconds } => {
                        self.state.registered[driver] = users;
                        self.state.ready[driver] = Some(seconds);
                    }
                    DriverEvent::Round(r) => self.state.rounds.entry(r.round).or_default().push(r),
                    DriverEvent::Done(d) => self.state.done[driver] = Some(d),
                }
            }
        }
        Ok(())
    }

    fn sample(&mut self) {
        self.state.last_sample = Instant::now();
        for (p, m) in self.procs.list.iter().zip(self.state.mem.iter_mut()) {
            if let Some((rss, _)) = procs::memory(p.child.id()) {
                m.peak_since_mark = m.peak_since_mark.max(rss);
            }
        }
    }

    /// Ends a round for every process: RSS now, the highest sample since the last mark,
    /// VmHWM.
    fn mark(&mut self) {
        for (p, m) in self.procs.list.iter().zip(self.state.mem.iter_mut()) {
            let (rss, hwm) = procs::memory(p.child.id()).unwrap_or((0, 0));
            let s = m.series.get_or_insert_with(|| MemorySeries {
                process: p.kind.name(),
                rss_after_round: Vec::new(),
                peak_in_round: Vec::new(),
                hwm_after_round: Vec::new(),
                peak: 0,
            });
            s.rss_after_round.push(rss);
            s.peak_in_round.push(m.peak_since_mark.max(rss));
            s.hwm_after_round.push(hwm);
            s.peak = s.peak.max(hwm);
            m.peak_since_mark = rss;
        }
    }

    /// Every process's CPU seconds so far (0 for one that has exited).
    fn cpu_now(&self) -> Vec<f64> {
        self.procs
            .list
            .iter()
            .map(|p| procs::cpu_seconds(p.child.id()).unwrap_or(0.0))
            .collect()
    }

    /// CPU seconds per process since `mark` (processes started after it count from 0).
    fn cpu_since(&self, mark: &[f64]) -> Vec<f64> {
        self.cpu_now()
            .iter()
            .enumerate()
            .map(|(i, &c)| (c - mark.get(i).copied().unwrap_or(0.0)).max(0.0))
            .collect()
    }

    fn reset_marks(&mut self) {
        self.sample();
        for (p, m) in self.procs.list.iter().zip(self.state.mem.iter_mut()) {
            m.peak_since_mark = procs::memory(p.child.id()).map_or(0, |(rss, _)| rss);
        }
    }

    fn spawn(
        &mut self,
        cmd: Command,
        kind: Kind,
        dir: &Path,
        tx: &mpsc::Sender<Event>,
    ) -> Result<(), String> {
        self.procs.spawn(cmd, kind, dir, tx.clone())?;
        self.state.mem.push(Mem::default());
        Ok(())
    }
}

/// Registration progress: a bar on a terminal, a line every 5 s otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    last_line: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "registering {bar:40} {pos}/{len} users, {elapsed} elapsed, eta {eta}",
                )
                .expect("template"),
            );
            b
        });
        Progress {
            bar,
            total,
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, done: usize, started: Instant) {
        match &self.bar {
            Some(b) => b.set_position(done as u64),
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                let rate = done as f64 / secs.max(1e-9);
                let eta = (self.total - done) as f64 / rate.max(1e-9);
                eprintln!(
                    "registering: {done}/{} users, {secs:.0} s elapsed, {rate:.0} users/s, eta {eta:.0} s",
                    self.total
                );
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Runs the load test; returns the report (its `problems` say whether it passed).
pub fn run(a: &LoadArgs) -> Result<LoadReport, String> {
    let loadavg_start = loadavg();
    let fd_limit = procs::fd_limit().unwrap_or(1024) as usize;
    let p = plan(a, fd_limit)?;
    let acs = find_acs(a)?;
    let me = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let tmp = tempfile::Builder::new()
        .prefix("acs-load-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let dir = tmp.path().to_path_buf();
    // Keep the directory (logs, configuration, databases) when asked, whatever happens.
    let _tmp = if a.keep_dir {
        eprintln!(
            "acs-load: deployment, databases and logs in {}",
            dir.display()
        );
        let _ = tmp.keep();
        None
    } else {
        Some(tmp)
    };

    let payload_words = a.msg_size.div_ceil(8);
    let per_relay = (a.users * p.relays_per_user).div_ceil(p.entries as usize);
    let dep = deploy::write(
        &acs,
        &dir,
        &Params {
            entries: p.entries,
            payload_words,
            store_capacity: p.store_capacity,
            expiry_rounds: 100,
            window_ms: p.window_ms,
            grace_ms: a.grace_ms,
            relay_connections: per_relay + 64,
            relay_envelopes: a.users * 3 + 16,
            // The registration time limit below, plus a round.
            relay_idle_timeout_ms: (600 + a.users as u64 / 20) * 1000 + 2 * p.window_ms + 60_000,
        },
    )?;

    let interrupted = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    {
        let flag = interrupted.clone();
        rt.spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                if let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    flag.store(true, Ordering::SeqCst);
                }
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }

    let (tx, events) = mpsc::channel();
    let mut r = Runner {
        procs: Procs::default(),
        events,
        state: State {
            commits: Default::default(),
            relay_links: vec![0; p.entries as usize],
            registered: vec![0; p.drivers],
            ready: vec![None; p.drivers],
            rounds: BTreeMap::new(),
            done: vec![None; p.drivers],
            mem: Vec::new(),
            last_sample: Instant::now(),
        },
        interrupted,
    };
    eprintln!(
        "acs-load: {} users, {} entry relays, {} drivers, {} connections per user, window {} ms; deployment in {}",
        a.users,
        p.entries,
        p.drivers,
        p.relays_per_user,
        p.window_ms,
        dir.display()
    );
    for (i, cfg) in dep.exchange_configs.iter().enumerate() {
        let mut c = Command::new(&acs);
        c.arg("exchange").arg("--config").arg(cfg);
        r.spawn(c, Kind::Exchange(i), &dir, &tx)?;
    }
    for (j, cfg) in dep.entry_configs.iter().enumerate() {
        let mut c = Command::new(&acs);
        c.arg("entry").arg("--config").arg(cfg);
        r.spawn(c, Kind::Entry(j), &dir, &tx)?;
    }
    r.pump(
        "the exchange servers' first round and the relays' links",
        Duration::from_secs(180),
        |s| s.commits.iter().all(|c| !c.is_empty()) && s.relay_links.iter().all(|&n| n >= 3),
        |_| {},
    )?;

    // Drivers: users split as evenly as possible.
    let t_reg = Instant::now();
    let cpu_reg_mark = r.cpu_now();
    let mut first_user = 0;
    for d in 0..p.drivers {
        let users = a.users / p.drivers + usize::from(d < a.users % p.drivers);
        let spec = DriverSpec {
            index: d,
            dir: dir.clone(),
            first_user,
            users,
            relays: dep.relays.clone(),
            relays_per_user: p.relays_per_user,
            payload_words,
            store_capacity: p.store_capacity,
            expiry_rounds: 100,
            msg_size: a.msg_size,
            send_probability: a.send_probability,
            concurrency: a.concurrency,
            timeout_ms: 300_000 + 2 * p.window_ms,
            finish_timeout_ms: 60_000 + p.window_ms + 2 * a.users as u64,
            submit_delay_ms: p.submit_delay_ms,
            submit_spread_ms: p.submit_spread_ms,
            rounds: a.rounds,
            max_drain_rounds: a.max_drain_rounds,
            seed: a.seed.wrapping_add(d as u64),
        };
        first_user += users;
        let path = dir.join(format!("driver-{d}.json"));
        std::fs::write(&path, serde_json::to_vec(&spec).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut c = Command::new(&me);
        c.arg("driver").arg("--spec").arg(&path);
        r.spawn(c, Kind::Driver(d), &dir, &tx)?;
    }
    let mut progress = Progress::new(a.users);
    // Registration costs pairings on both sides: allow 50 ms per user, at least 10 minutes.
    let reg_limit = Duration::from_secs(600 + a.users as u64 / 20);
    r.pump(
        "registration",
        reg_limit,
        |s| s.ready.iter().all(Option::is_some),
        |s| progress.update(s.registered.iter().sum(), t_reg),
    )?;
    progress.finish();
    let registration_seconds = t_reg.elapsed().as_secs_f64();
    let cpu_registration = r.cpu_since(&cpu_reg_mark);
    eprintln!(
        "acs-load: {} users registered with 3 exchange servers in {registration_seconds:.1} s",
        a.users
    );

    // Start with the round announced right after server 0's next commit: the users then
    // get (almost) its whole submission window.
    let seen = r.state.commits[0].keys().next_back().copied().unwrap_or(0);
    r.pump(
        "the next round",
        Duration::from_millis(p.window_ms) + Duration::from_secs(600),
        |s| s.commits[0].keys().next_back().is_some_and(|&k| k > seen),
        |_| {},
    )?;
    let first = r.state.commits[0].keys().next_back().copied().unwrap_or(0) + 1;
    let last = first + a.rounds - 1;
    for proc in r.procs.list.iter_mut() {
        if let Some(stdin) = proc.stdin.as_mut() {
            writeln!(stdin, "go {first}")
                .and_then(|_| stdin.flush())
                .map_err(|e| format!("{}: {e}", proc.kind.name()))?;
        }
    }
    r.reset_marks();
    let cpu_mark = r.cpu_now();
    eprintln!("acs-load: measuring rounds {first}..={last}");

    let mut rows = Vec::new();
    let drivers = p.drivers;
    let round_limit = Duration::from_millis(2 * p.window_ms) + Duration::from_secs(900);
    for round in first..=last {
        r.pump(
            &format!("round {round}"),
            round_limit,
            |s| s.commits.iter().all(|c| c.contains_key(&round)),
            |_| {},
        )?;
        r.mark();
        r.pump(
            &format!("the users' outputs of round {round}"),
            round_limit,
            |s| s.rounds.get(&round).is_some_and(|v| v.len() == drivers),
            |_| {},
        )?;
        let row = round_row(round, &r.state);
        eprintln!(
            "round {round}: online {}, complete {}, server {:.2} s (engine {} ms), client last output {:.2} s, slack {} ms, late {}, sent {}, delivered {}, stored {}, received {}, in flight {}, bad {}",
            row.online, row.complete, row.server_seconds, row.engine_ms, row.client_last_seconds,
            row.min_slack_ms, row.late, row.sent, row.delivered, row.stored, row.received,
            row.in_flight, row.bad
        );
        rows.push(row);
    }
    let cpu_rounds = r.cpu_since(&cpu_mark);
    // Drain rounds: no new messages, until every message written has arrived (each driver
    // stops on its own once its users' messages have).
    eprintln!(
        "acs-load: draining (no new messages; at most {} rounds) to check every delivery",
        a.max_drain_rounds
    );
    let mut reported = last;
    r.pump(
        "the drivers to finish the drain rounds",
        round_limit * (a.max_drain_rounds as u32 + 1),
        |s| s.done.iter().all(Option::is_some),
        |s| {
            // A drain round is printed once every driver still running has reported it.
            while let Some(rows) = s.rounds.get(&(reported + 1)) {
                let running = s.done.iter().filter(|d| d.is_none()).count();
                if rows.len() < running {
                    break;
                }
                reported += 1;
                let in_flight: usize = rows.iter().map(|d| d.in_flight).sum();
                let received: usize = rows.iter().map(|d| d.received).sum();
                let bad: usize = rows.iter().map(|d| d.bad).sum();
                eprintln!(
                    "drain round {reported}: received {received}, still in flight {in_flight}, bad {bad}"
                );
            }
        },
    )?;
    let mut delivery = Delivery::default();
    for d in r.state.done.iter().flatten() {
        delivery.add(d);
    }
    let cpu: Vec<ProcessCpu> = r
        .procs
        .list
        .iter()
        .enumerate()
        .map(|(i, p)| ProcessCpu {
            process: p.kind.name(),
            registration_s: cpu_registration.get(i).copied().unwrap_or(0.0),
            rounds_s: cpu_rounds.get(i).copied().unwrap_or(0.0),
        })
        .collect();
    // Final peaks before the servers stop.
    let mut memory: Vec<MemorySeries> = Vec::new();
    for (proc, m) in r.procs.list.iter().zip(r.state.mem.iter_mut()) {
        if let Some(s) = m.series.as_mut() {
            if let Some((_, hwm)) = procs::memory(proc.child.id()) {
                s.peak = s.peak.max(hwm);
            }
            memory.push(s.clone());
        }
    }
    r.procs
        .stop(|k| matches!(k, Kind::Driver(_)), Duration::from_secs(10));
    r.procs
        .stop(|k| matches!(k, Kind::Entry(_)), Duration::from_secs(10));
    r.procs
        .stop(|k| matches!(k, Kind::Exchange(_)), Duration::from_secs(15));
    drop(rt);

    let mut problems = Vec::new();
    for row in &rows {
        if row.online as usize != a.users || row.complete != a.users {
            problems.push(format!(
                "round {}: {} of {} users online at the servers, {} got their outputs (a longer --window-ms gives slow submitters time)",
                row.round, row.online, a.users, row.complete
            ));
        }
        if row.bad > 0 {
            problems.push(format!("round {}: {} bad deliveries", row.round, row.bad));
        }
    }
    if !delivery.exact() {
        problems.push(format!(
            "delivery check failed: {} messages written, {} arrived exactly once, {} duplicate arrivals, {} unknown arrivals, {} lost, {} still queued after {} drain rounds",
            delivery.written,
            delivery.received_once,
            delivery.duplicates,
            delivery.unknown,
            delivery.lost,
            delivery.still_queued,
            delivery.drain_rounds
        ));
    }
    let server: Vec<f64> = rows.iter().map(|r| r.server_seconds).collect();
    let client: Vec<f64> = rows.iter().map(|r| r.client_last_seconds).collect();
    let flatness: Vec<_> = memory
        .iter()
        .filter(|m| !m.process.starts_with("driver"))
        .filter_map(|m| report::flatness(m, a.flat_tolerance, a.flat_slack_mib))
        .collect();
    let memory_flat = (!flatness.is_empty()).then(|| flatness.iter().all(|f| f.flat));
    Ok(LoadReport {
        setup: Setup {
            users: a.users,
            rounds: a.rounds,
            entries: p.entries,
            drivers: p.drivers,
            relays_per_user: p.relays_per_user,
            msg_size: a.msg_size,
            store_capacity: p.store_capacity,
            window_ms: p.window_ms,
            spread_ms: p.submit_spread_ms,
            grace_ms: a.grace_ms,
            send_probability: a.send_probability,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            loadavg_start,
            loadavg_end: loadavg(),
        },
        registration_seconds,
        cpu,
        delivery,
        rounds: rows,
        server_p50_seconds: report::median(&server),
        server_max_seconds: server.iter().copied().fold(0.0, f64::max),
        client_p50_seconds: report::median(&client),
        client_max_seconds: client.iter().copied().fold(0.0, f64::max),
        memory,
        flat_tolerance_pct: a.flat_tolerance,
        flat_slack_mib: a.flat_slack_mib,
        flatness,
        memory_flat,
        problems,
    })
}

fn round_row(round: u64, s: &State) -> RoundRow {
    let mut row = RoundRow {
        round,
        min_slack_ms: i64::MAX,
        ..RoundRow::default()
    };
    row.online = s.commits[0].get(&round).map_or(0, |c| c.online);
    for c in s.commits.iter().filter_map(|c| c.get(&round)) {
        row.server_seconds = row.server_seconds.max(c.seconds);
        row.open_ms = row.open_ms.max(c.open_ms);
        row.engine_ms = row.engine_ms.max(c.engine_ms);
        row.commit_ms = row.commit_ms.max(c.commit_ms);
        row.outputs_ms = row.outputs_ms.max(c.outputs_ms);
    }
    let mut lat: Vec<u64> = Vec::new();
    for d in s.rounds.get(&round).into_iter().flatten() {
        row.complete += d.complete;
        row.sent += d.sent;
        row.delivered += d.delivered;
        row.stored += d.stored;
        row.retried += d.retried;
        row.received += d.received;
        row.bad += d.bad;
        row.in_flight += d.in_flight;
        row.late += d.late;
        row.min_slack_ms = row.min_slack_ms.min(d.min_slack_ms);
        lat.extend_from_slice(&d.latencies_ms);
    }
    if row.min_slack_ms == i64::MAX {
        row.min_slack_ms = 0;
    }
    lat.sort_unstable();
    row.client_last_seconds = lat.last().copied().unwrap_or(0) as f64 / 1000.0;
    row.client_p50_seconds = lat.get(lat.len() / 2).copied().unwrap_or(0) as f64 / 1000.0;
    row
}

/// The first three fields of `/proc/loadavg` (1, 5, 15 minutes).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> LoadArgs {
        #[derive(Parser)]
        struct A {
            #[command(flatten)]
            a: LoadArgs,
        }
        let mut v = vec!["acs-load"];
        v.extend_from_slice(extra);
        A::parse_from(v).a
    }

    #[test]
    fn plan_spreads_connections_under_the_fd_limit() {
        // 10^5 users × 3 connections with 20000 descriptors: 19 relays and 19 drivers of
        // at most 80% of (20000 - 200) connections each.
        let p = plan(&args(&["--users", "100000"]), 20_000).unwrap();
        assert_eq!((p.entries, p.drivers, p.relays_per_user), (19, 19, 3));
        assert_eq!(p.window_ms, 52_000);
        let p = plan(&args(&["--users", "1000"]), 20_000).unwrap();
        assert_eq!((p.entries, p.drivers), (3, 1));
        assert!(plan(&args(&["--users", "100000", "--entries", "3"]), 20_000).is_err());
        assert!(plan(&args(&["--users", "3"]), 20_000).is_err());
    }
}
