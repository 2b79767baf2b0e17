//! What a load run measured: per-round rows, per-process memory series, the flatness
//! verdict; printed as a table or as one JSON object.

use crate::driver::Delivery;
use serde::Serialize;

/// The run's parameters as used (after defaults were filled in).
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Simulated users.
    pub users: usize,
    /// Measured rounds.
    pub rounds: u64,
    /// Entry relay processes.
    pub entries: u32,
    /// Driver processes.
    pub drivers: usize,
    /// TLS connections per user (one per relay it uses).
    pub relays_per_user: usize,
    /// Message size in bytes.
    pub msg_size: usize,
    /// Store capacity.
    pub store_capacity: usize,
    /// Submission window.
    pub window_ms: u64,
    /// Users submit spread over this many ms of the window.
    pub spread_ms: u64,
    /// Collect grace.
    pub grace_ms: u64,
    /// Probability a user with nothing queued writes a message in a round.
    pub send_probability: f64,
    /// Logical CPUs of this machine.
    pub cpus: usize,
    /// `/proc/loadavg` when the run started and when it ended (other work on the host).
    pub loadavg_start: String,
    /// ... at the end.
    pub loadavg_end: String,
}

/// One measured round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundRow {
    /// Round number (the servers').
    pub round: u64,
    /// Users the servers agreed were online (server 0's log).
    pub online: u64,
    /// Users that reconstructed their output.
    pub complete: usize,
    /// Server side: submission deadline to outputs handed to the relays, slowest server.
    pub server_seconds: f64,
    /// Slowest server's phases (ms): opening envelopes, engine, vote and commit, outputs.
    pub open_ms: u64,
    /// Engine round.
    pub engine_ms: u64,
    /// Vote and database commit.
    pub commit_ms: u64,
    /// Sealing and sending outputs.
    pub outputs_ms: u64,
    /// Client side: deadline to the last user's reconstructed output.
    pub client_last_seconds: f64,
    /// Client side: median over users of the same.
    pub client_p50_seconds: f64,
    /// Least time any user had left in the window when it finished submitting.
    pub min_slack_ms: i64,
    /// Messages sent (not covers).
    pub sent: usize,
    /// Status delivered.
    pub delivered: usize,
    /// Status stored.
    pub stored: usize,
    /// To be sent again (dropped, retry, outputs missing).
    pub retried: usize,
    /// Messages received and matched to what was sent.
    pub received: usize,
    /// Messages received that match nothing sent, or twice.
    pub bad: usize,
    /// Messages written so far that have not arrived yet.
    pub in_flight: usize,
    /// Users whose submission finished after the deadline.
    pub late: usize,
}

/// Memory of one process over the measured rounds (bytes).
#[derive(Debug, Clone, Serialize)]
pub struct MemorySeries {
    /// `exchange-0`, `entry-3`, `driver-1`.
    pub process: String,
    /// VmRSS when the round had committed at all three servers.
    pub rss_after_round: Vec<u64>,
    /// Highest VmRSS sampled (every 100 ms) during the round.
    pub peak_in_round: Vec<u64>,
    /// VmHWM (peak since the process started) after the round.
    pub hwm_after_round: Vec<u64>,
    /// VmHWM at the end of the run.
    pub peak: u64,
}

/// CPU time one process used (user + system, seconds).
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    /// `exchange-0`, `entry-3`, `driver-1`.
    pub process: String,
    /// While the users registered (drivers: the users' side of registration).
    pub registration_s: f64,
    /// During the measured rounds.
    pub rounds_s: f64,
}

/// Whether one process's memory stayed flat.
#[derive(Debug, Clone, Serialize)]
pub struct Flatness {
    /// The process.
    pub process: String,
    /// RSS after round 3.
    pub rss_round3: u64,
    /// RSS after the last measured round.
    pub rss_last: u64,
    /// `rss_last / rss_round3 - 1`, in percent.
    pub rss_growth_pct: f64,
    /// Highest in-round peak over the early rounds (2..=4).
    pub early_peak: u64,
    /// Highest in-round peak over the late rounds (5..).
    pub late_peak: u64,
    /// `late_peak / early_peak - 1`, in percent.
    pub growth_pct: f64,
    /// VmHWM growth from after round 4 to the end, in percent.
    pub hwm_growth_pct: f64,
    /// All three within the tolerance (percent or MiB).
    pub flat: bool,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Parameters.
    pub setup: Setup,
    /// Seconds until every user was registered with all three servers.
    pub registration_seconds: f64,
    /// CPU time per process, registration and measured rounds.
    pub cpu: Vec<ProcessCpu>,
    /// The exactly-once check over every message written (measured and drain rounds).
    pub delivery: Delivery,
    /// Rows, one per measured round.
    pub rounds: Vec<RoundRow>,
    /// Median and maximum of `server_seconds` over the rounds.
    pub server_p50_seconds: f64,
    /// Maximum.
    pub server_max_seconds: f64,
    /// Median and maximum of `client_last_seconds` over the rounds.
    pub client_p50_seconds: f64,
    /// Maximum.
    pub client_max_seconds: f64,
    /// Exchange servers, entry relays, drivers.
    pub memory: Vec<MemorySeries>,
    /// Tolerance for "flat", percent.
    pub flat_tolerance_pct: f64,
    /// ... or absolute, MiB.
    pub flat_slack_mib: f64,
    /// Per exchange server and relay; empty when fewer than 5 rounds ran.
    pub flatness: Vec<Flatness>,
    /// Every exchange server and relay stayed flat (`None`: not assessed).
    pub memory_flat: Option<bool>,
    /// What went wrong (users missing from rounds, bad deliveries); empty when all is well.
    pub problems: Vec<String>,
}

/// The median (upper middle) of `v`.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// Rounds are numbered 1.. here: early = rounds 2..=4, late = 5.. (round 1 warms up
/// pools and caches). Flat: RSS after round 3 to after the last round, the highest
/// in-round RSS of the late rounds over the early ones, and VmHWM after round 4 to the
/// end each grow by at most `tolerance_pct` percent or `slack_mib` MiB.
pub fn flatness(m: &MemorySeries, tolerance_pct: f64, slack_mib: f64) -> Option<Flatness> {
    if m.peak_in_round.len() < 5 {
        return None;
    }
    let early_peak = *m.peak_in_round[1..4].iter().max()?;
    let late_peak = *m.peak_in_round[4..].iter().max()?;
    let pct = |a: u64, b: u64| (b as f64 / a.max(1) as f64 - 1.0) * 100.0;
    let ok = |a: u64, b: u64| {
        pct(a, b) <= tolerance_pct || (b as f64 - a as f64) <= slack_mib * 1024.0 * 1024.0
    };
    let (rss_round3, rss_last) = (m.rss_after_round[2], *m.rss_after_round.last()?);
    let (hwm4, hwm_last) = (m.hwm_after_round[3], *m.hwm_after_round.last()?);
    Some(Flatness {
        process: m.process.clone(),
        rss_round3,
        rss_last,
        rss_growth_pct: pct(rss_round3, rss_last),
        early_peak,
        late_peak,
        growth_pct: pct(early_peak, late_peak),
        hwm_growth_pct: pct(hwm4, hwm_last),
        flat: ok(rss_round3, rss_last) && ok(early_peak, late_peak) && ok(hwm4, hwm_last),
    })
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1024.0 * 1024.0))
}

impl LoadReport {
    /// The human-readable report.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let s = &self.setup;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "acs-load: {} users, {} rounds, {} entry relays, {} drivers, {} relay connections per user, {} B messages, store {}, window {} ms (submissions spread over {} ms), {} CPUs",
            s.users, s.rounds, s.entries, s.drivers, s.relays_per_user, s.msg_size, s.store_capacity, s.window_ms, s.spread_ms, s.cpus
        );
        let _ = writeln!(
            o,
            "load average at start: {}; at end: {}",
            s.loadavg_start, s.loadavg_end
        );
        let cpu_of = |prefix: &str, f: fn(&ProcessCpu) -> f64| -> f64 {
            self.cpu
                .iter()
                .filter(|c| c.process.starts_with(prefix))
                .map(f)
                .sum()
        };
        let per_user_ms = |x: f64| x * 1000.0 / s.users.max(1) as f64;
        let _ = writeln!(
            o,
            "registration: {:.1} s ({:.1} users/s); CPU per user: exchange servers {:.1} ms (all three), relays {:.1} ms, users (drivers) {:.1} ms",
            self.registration_seconds,
            s.users as f64 / self.registration_seconds.max(1e-9),
            per_user_ms(cpu_of("exchange", |c| c.registration_s)),
            per_user_ms(cpu_of("entry", |c| c.registration_s)),
            per_user_ms(cpu_of("driver", |c| c.registration_s)),
        );
        let d = &self.delivery;
        let _ = writeln!(
            o,
            "delivery check: {} messages written, {} arrived exactly once (right source, target, content), {} duplicates, {} unknown, {} lost, {} still queued; {} drain rounds: {}\n",
            d.written,
            d.received_once,
            d.duplicates,
            d.unknown,
            d.lost,
            d.still_queued,
            d.drain_rounds,
            if d.exact() { "ok" } else { "FAILED" }
        );
        let _ = writeln!(
            o,
            "| # | round | online | complete | server s | engine ms | open ms | commit ms | outputs ms | client last s | client p50 s | slack ms | late | sent | delivered | stored | retried | received | in flight | bad |"
        );
        let _ = writeln!(
            o,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (i, r) in self.rounds.iter().enumerate() {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                i + 1, r.round, r.online, r.complete, r.server_seconds, r.engine_ms, r.open_ms,
                r.commit_ms, r.outputs_ms, r.client_last_seconds, r.client_p50_seconds,
                r.min_slack_ms, r.late, r.sent, r.delivered, r.stored, r.retried, r.received,
                r.in_flight, r.bad
            );
        }
        let _ = writeln!(
            o,
            "\nround latency over {} rounds: server p50 {:.2} s, max {:.2} s; client (last output) p50 {:.2} s, max {:.2} s\n",
            self.rounds.len(),
            self.server_p50_seconds,
            self.server_max_seconds,
            self.client_p50_seconds,
            self.client_max_seconds
        );
        let _ = writeln!(
            o,
            "| process | peak (VmHWM) MiB | RSS after each round, MiB | CPU s registration | CPU s rounds |"
        );
        let _ = writeln!(o, "|---|---:|---|---:|---:|");
        for m in &self.memory {
            let series: Vec<String> = m.rss_after_round.iter().map(|&b| mib(b)).collect();
            let c = self.cpu.iter().find(|c| c.process == m.process);
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.1} | {:.1} |",
                m.process,
                mib(m.peak),
                series.join(" "),
                c.map_or(0.0, |c| c.registration_s),
                c.map_or(0.0, |c| c.rounds_s),
            );
        }
        let _ = writeln!(o);
        match self.memory_flat {
            None => {
                let _ = writeln!(o, "memory flatness: not assessed (needs at least 5 rounds)");
            }
            Some(all) => {
                for f in &self.flatness {
                    let _ = writeln!(
                        o,
                        "{}: RSS after measured round 3 {} MiB, after round {} {} MiB ({:+.1}%); in-round peak rounds 2-4 {} MiB, rounds 5+ {} MiB ({:+.1}%); VmHWM after round 4 to end {:+.1}%: {}",
                        f.process,
                        mib(f.rss_round3),
                        self.rounds.len(),
                        mib(f.rss_last),
                        f.rss_growth_pct,
                        mib(f.early_peak),
                        mib(f.late_peak),
                        f.growth_pct,
                        f.hwm_growth_pct,
                        if f.flat { "flat" } else { "GROWING" }
                    );
                }
                let _ = writeln!(
                    o,
                    "memory flat (exchange servers and relays; each growth within {}% or {} MiB): {}",
                    self.flat_tolerance_pct,
                    self.flat_slack_mib,
                    if all { "yes" } else { "NO" }
                );
            }
        }
        for p in &self.problems {
            let _ = writeln!(o, "PROBLEM: {p}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn series(rss_mib: &[u64]) -> MemorySeries {
        let rss: Vec<u64> = rss_mib.iter().map(|m| m * MIB).collect();
        let mut hwm = Vec::new();
        let mut top = 0;
        for &r in &rss {
            top = top.max(r);
            hwm.push(top);
        }
        MemorySeries {
            process: "exchange-0".into(),
            rss_after_round: rss.clone(),
            peak_in_round: rss,
            hwm_after_round: hwm,
            peak: top,
        }
    }

    #[test]
    fn flat_noise_passes_growth_fails() {
        let noisy = series(&[100, 104, 103, 105, 102, 104, 103, 105, 104, 103]);
        assert!(flatness(&noisy, 10.0, 8.0).unwrap().flat);
        // 5 MiB per round from round 3 on: +35 MiB, +27%.
        let growing = series(&[100, 120, 130, 135, 140, 145, 150, 155, 160, 165]);
        let f = flatness(&growing, 10.0, 8.0).unwrap();
        assert!(!f.flat);
        assert!((f.rss_growth_pct - (165.0 / 130.0 - 1.0) * 100.0).abs() < 1e-9);
        // A small process may move by a few MiB: within the absolute slack.
        let small = series(&[20, 20, 20, 21, 22, 23, 23, 24, 24, 24]);
        assert!(flatness(&small, 10.0, 8.0).unwrap().flat);
        assert!(flatness(&series(&[1, 2, 3, 4]), 10.0, 8.0).is_none());
    }

    #[test]
    fn median_is_the_upper_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
    }
}
