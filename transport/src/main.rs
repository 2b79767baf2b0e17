//! The `acs` command.

use acs_transport::{
    certs, check,
    config::{ClientFile, EntryFile, ExchangeFile},
    demo, relay,
};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;

/// Large tables as transparent huge pages (`acs_engine::alloc`): fewer page faults at scale.
#[global_allocator]
static ALLOC: acs_engine::alloc::HugePageAlloc = acs_engine::alloc::HugePageAlloc;

#[derive(Parser, Debug)]
#[command(
    name = "acs",
    version,
    about = "ACS: anti-tracking messaging over a three-party secure computation"
)]
struct Cli {
    /// Log format on stderr: `text`, or `json` (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum CertsAction {
    /// Add one certificate from the CA that `acs certs` made (refuses to overwrite).
    Issue {
        /// The directory with `ca.pem` and `ca-key.pem`; the new pair is written there.
        #[arg(long)]
        ca: PathBuf,
        /// Issue `entry-N` (an entry relay).
        #[arg(
            long,
            conflicts_with = "exchange",
            required_unless_present = "exchange"
        )]
        entry: Option<u32>,
        /// Issue `exchange-I` (0, 1 or 2; to replace a lost key, move the old pair away first).
        #[arg(long)]
        exchange: Option<u8>,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a development CA and the certificates of a deployment (refuses to overwrite).
    #[command(args_conflicts_with_subcommands = true)]
    Certs {
        #[command(subcommand)]
        action: Option<CertsAction>,
        /// Output directory (created if missing).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exchange servers (ACS runs exactly three).
        #[arg(long, default_value_t = 3)]
        exchanges: u8,
        /// Entry relays.
        #[arg(long, default_value_t = 1)]
        entries: u32,
    },
    /// Make an exchange server's kgc master secret (owner-only file) and its signed
    /// descriptor (`OUT.descriptor`, for clients to pin). With `--epoch N --identity
    /// MASTER`: the secret of master-secret epoch N of the server whose master file is
    /// MASTER, and that epoch's descriptor, signed with the same identity (rotation,
    /// docs/operators.md §9).
    Master {
        /// The file to create (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// The server's TLS certificate (PEM), whose SHA-256 the descriptor carries.
        #[arg(long)]
        cert: PathBuf,
        /// Make the secret of this epoch (1 or later) instead of a new master secret.
        #[arg(long, requires = "identity")]
        epoch: Option<u32>,
        /// The server's existing master file (its identity), with `--epoch`.
        #[arg(long, requires = "epoch")]
        identity: Option<PathBuf>,
    },
    /// Check an exchange, entry or client configuration without starting anything: the
    /// certificate's role and index, every path, port roles, what answers at the
    /// addresses it dials, round settings; prints what it would run. Exit 1 on an error.
    Check {
        /// Configuration file (TOML; see docs/operators.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an exchange server.
    Exchange {
        /// Configuration file (TOML; see docs/operators.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an entry relay.
    Entry {
        /// Configuration file (TOML; see docs/operators.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a user: register with the three exchange servers through the relays, then
    /// take part in rounds, sending queued messages and printing what arrives.
    Client {
        /// Configuration file (TOML; see docs/operators.md).
        #[arg(long)]
        config: PathBuf,
        /// Rounds to take part in (0: register, print the pseudonym, and stop).
        #[arg(long, default_value_t = 5)]
        rounds: u64,
        /// Queue a message: `PSEUDONYM=TEXT` (pseudonym in hex, as printed by `acs client`).
        #[arg(long = "send", value_name = "PSEUDONYM=TEXT")]
        send: Vec<String>,
        /// Send nothing (cover only) and take part in rounds until interrupted, printing
        /// what arrives; `--rounds` and `--send` do not apply.
        #[arg(long, conflicts_with_all = ["send", "rounds"])]
        receive_only: bool,
    },
    /// Run three exchange servers, entry relays and simulated users on loopback.
    Demo {
        /// Simulated users.
        #[arg(long, default_value_t = 50)]
        users: usize,
        /// Workload rounds (drain rounds follow, everyone online, until every message's
        /// sender knows its final fate: delivered, or expired through a receipt).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 256)]
        msg_size: usize,
        /// Entry relays.
        #[arg(long, default_value_t = 3)]
        entries: u32,
        /// Fraction of users offline in each workload round.
        #[arg(long, default_value_t = 0.1)]
        offline: f64,
        /// Workload seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// End with one JSON line of results.
        #[arg(long)]
        json: bool,
        /// Serve `/metrics` and `/healthz` on 127.0.0.1: exchange servers at P, P+1,
        /// P+2, relays from P+3 on.
        #[arg(long, value_name = "P")]
        metrics_base_port: Option<u16>,
        /// The exchange servers' security mode: `malicious` (default: security with
        /// abort against one cheating server; every AND gate verified before anything
        /// that depends on it is opened) or `semi-honest` (openings cross-checked, the
        /// computation not verified; about 1.3x faster end to end here, see
        /// docs/security.md).
        #[arg(long, value_enum, default_value_t = SecurityArg::Malicious)]
        security: SecurityArg,
        /// Rounds a stored message waits for its offline target before it expires (its
        /// sender then gets an `expired` receipt).
        #[arg(long, default_value_t = 1_000)]
        expiry_rounds: u32,
        /// The store's capacity C [default: the number of users]. The payload table has
        /// 2 (U + C) rows, so a smaller store makes rounds cheaper; a full store drops
        /// the newest messages (their senders are told and send again).
        #[arg(long, value_name = "C")]
        store_capacity: Option<usize>,
    },
}

/// `--security` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SecurityArg {
    SemiHonest,
    Malicious,
}

impl From<SecurityArg> for acs_engine::SecurityMode {
    fn from(a: SecurityArg) -> Self {
        match a {
            SecurityArg::SemiHonest => acs_engine::SecurityMode::SemiHonest,
            SecurityArg::Malicious => acs_engine::SecurityMode::Malicious,
        }
    }
}

/// The log filter from `RUST_LOG` (`info` when unset). A value that does not parse, or
/// a bare word that is neither a level nor a module (`RUST_LOG=verbose` would otherwise
/// be read as "module `verbose` only" and hide everything, fatal errors included), is
/// an error: the command says so and does not start.
fn log_filter() -> Result<tracing_subscriber::EnvFilter, String> {
    let spec = match std::env::var("RUST_LOG") {
        Err(std::env::VarError::NotPresent) => {
            return Ok(tracing_subscriber::EnvFilter::new("info"))
        }
        Err(e) => return Err(format!("RUST_LOG: {e}")),
        Ok(s) => s,
    };
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    const CRATES: [&str; 9] = [
        "acs",
        "acs_transport",
        "acs_engine",
        "acs_kgc",
        "rustls",
        "tokio",
        "tokio_rustls",
        "redb",
        "h2",
    ];
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let target = d.split(['=', '[']).next().unwrap_or(d);
        let bare = !d.contains('=') && !d.contains('[');
        let known = LEVELS.contains(&target.to_ascii_lowercase().as_str())
            || target.contains("::")
            || CRATES.contains(&target);
        if bare && !known {
            return Err(format!(
                "RUST_LOG={spec:?}: {d:?} is neither a level ({}) nor one of this program's modules (e.g. acs_transport=debug)",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&spec).map_err(|e| format!("RUST_LOG={spec:?}: {e}"))
}

fn init_logging(format: LogFormat) -> Result<(), String> {
    let filter = log_filter()?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
}

/// Where a long-running command's final error goes: servers log it (their logs are the
/// operator's record), the client prints it.
enum Report {
    Log,
    Stderr,
}

/// Runs one of the async commands on a fresh runtime, with logging, and maps its result
/// to the exit code.
fn serve(
    name: &str,
    format: LogFormat,
    fut: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
    report: Report,
) -> ExitCode {
    if let Err(e) = init_logging(format) {
        eprintln!("acs {name}: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("acs {name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match report {
                Report::Log => tracing::error!("{e}"),
                Report::Stderr => eprintln!("acs {name}: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    acs_engine::alloc::configure();
    let cli = Cli::parse();
    let log_format = cli.log_format;
    match cli.command {
        Command::Certs {
            action:
                Some(CertsAction::Issue {
                    ca,
                    entry,
                    exchange,
                }),
            ..
        } => {
            let role = match (entry, exchange) {
                (Some(j), None) => acs_transport::tls::Role::Entry(j),
                (None, Some(i)) if i < 3 => acs_transport::tls::Role::Exchange(i),
                _ => {
                    eprintln!("acs certs issue: give --entry N or --exchange I (0, 1 or 2)");
                    return ExitCode::from(2);
                }
            };
            match certs::issue(&ca, role) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("acs certs issue: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Certs {
            action: None,
            out,
            exchanges,
            entries,
        } => {
            let Some(out) = out else {
                eprintln!("acs certs: --out DIR is required (or `acs certs issue`)");
                return ExitCode::from(2);
            };
            if exchanges != 3 {
                eprintln!("acs certs: ACS runs exactly three exchange servers (got --exchanges {exchanges})");
                return ExitCode::from(2);
            }
            let result = certs::generate(&certs::deployment_roles(exchanges, entries))
                .and_then(|pki| certs::write(&pki, &out));
            match result {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("acs certs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Master {
            out,
            cert,
            epoch,
            identity,
        } => match make_master(&out, &cert, epoch.zip(identity)) {
            Ok(desc) => {
                println!("{}\n{}", out.display(), desc.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("acs master: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => {
            // The servers refuse a RUST_LOG that does not parse; so does the check of
            // what they would run with.
            if let Err(e) = log_filter() {
                eprintln!("acs check: {e}");
                return ExitCode::from(2);
            }
            run_check(&config)
        }
        Command::Exchange { config } => {
            serve("exchange", log_format, run_exchange(config), Report::Log)
        }
        Command::Client {
            config,
            rounds,
            send,
            receive_only,
        } => {
            let rounds = if receive_only { None } else { Some(rounds) };
            serve(
                "client",
                log_format,
                run_client(config, rounds, send),
                Report::Stderr,
            )
        }
        Command::Entry { config } => serve("entry", log_format, run_entry(config), Report::Log),
        Command::Demo {
            users,
            rounds,
            msg_size,
            entries,
            offline,
            seed,
            json,
            metrics_base_port,
            security,
            expiry_rounds,
            store_capacity,
        } => {
            if std::env::var_os("RUST_LOG").is_some() {
                if let Err(e) = init_logging(log_format) {
                    eprintln!("acs demo: {e}");
                    return ExitCode::from(2);
                }
            }
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("acs demo: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = demo::DemoOptions {
                users,
                rounds,
                msg_size,
                entries,
                offline,
                seed,
                metrics_base_port,
                security: security.into(),
                expiry_rounds,
                store_capacity,
            };
            match rt.block_on(demo::run(opts, |line| println!("{line}"))) {
                Ok(r) => {
                    let ok =
                        r.lost_silently == 0 && r.bad_deliveries == 0 && r.fate_mismatches == 0;
                    println!(
                        "{}: {} users, {} rounds, {} messages sent: {} delivered exactly once, {} expired (sender told), {} dropped (sender told), {} lost silently; {} bad deliveries, {} fate mismatches; round latency p50 {:.3} s, p99 {:.3} s",
                        if ok { "OK" } else { "FAILED" },
                        r.users,
                        r.rounds,
                        r.sent,
                        r.delivered,
                        r.expired_reported,
                        r.dropped_reported,
                        r.lost_silently,
                        r.bad_deliveries,
                        r.fate_mismatches,
                        r.p50_round_seconds,
                        r.p99_round_seconds
                    );
                    if json {
                        match serde_json::to_string(&r) {
                            Ok(line) => println!("{line}"),
                            Err(e) => eprintln!("acs demo: {e}"),
                        }
                    }
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("acs demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// TEST INSTRUMENT (feature `fault-injection`, which only the crate's own tests turn on):
/// `ACS_FAULT_TAMPER=<drop|dup|reorder|flip>:<n>:<server>` makes this relay tamper with
/// its first non-empty batch for exchange server `server` (see `relay::TamperAction`).
#[cfg(feature = "fault-injection")]
fn tamper_from_env() -> Result<Option<relay::Tamper>, String> {
    use relay::{Tamper, TamperAction};
    let Ok(spec) = std::env::var("ACS_FAULT_TAMPER") else {
        return Ok(None);
    };
    let bad = || format!("ACS_FAULT_TAMPER={spec:?}: want <drop|dup|reorder|flip>:<n>:<server>");
    let parts: Vec<&str> = spec.split(':').collect();
    let [action, n, server] = parts[..] else {
        return Err(bad());
    };
    let n: usize = n.parse().map_err(|_| bad())?;
    let action = match action {
        "drop" => TamperAction::Drop(n),
        "dup" => TamperAction::Duplicate(n),
        "reorder" => TamperAction::Reorder,
        "flip" => TamperAction::FlipBit(n),
        _ => return Err(bad()),
    };
    let server: u8 = server.parse().ok().filter(|s| *s < 3).ok_or_else(bad)?;
    tracing::warn!(
        ?action,
        server,
        "FAULT: this relay will tamper with a batch"
    );
    Ok(Some(Tamper {
        server,
        round: 0,
        action,
    }))
}

async fn run_entry(path: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    // Handlers first: a signal that arrives while starting must stop us gracefully too.
    let mut signals = Signals::install()?;
    let file = EntryFile::load(&path)?;
    for w in check::check_entry(&file).into_result()?.warnings() {
        tracing::warn!("configuration: {w}");
    }
    let cfg = file.relay_config()?;
    let listener = bind("listen", file.listen).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics_shutdown = shutdown_rx.clone();
    #[cfg(feature = "fault-injection")]
    let relay = match tamper_from_env()? {
        Some(t) => relay::start_tampering(cfg, listener, shutdown_rx, t)?,
        None => relay::start(cfg, listener, shutdown_rx)?,
    };
    #[cfg(not(feature = "fault-injection"))]
    let relay = relay::start(cfg, listener, shutdown_rx)?;
    tracing::info!(index = file.index, addr = %relay.user_addr, "entry relay listening");
    if let Some(addr) = file.metrics_listen {
        let m = std::sync::Arc::new(acs_transport::metrics::RelayMetrics::new(
            relay.stats.clone(),
        ));
        let at = acs_transport::metrics::start(addr, m, metrics_shutdown).await?;
        tracing::info!(addr = %at, "metrics at /metrics and /healthz");
    }
    while let Signal::Reload = signals.wait().await {
        tracing::info!("SIGHUP: an entry relay has nothing to reload (restart it to apply a new configuration)");
    }
    tracing::info!("shutting down (a second SIGTERM or ctrl-c stops at once)");
    let _ = shutdown_tx.send(true);
    tokio::select! {
        _ = relay.listener_task => {}
        _ = signals.second_stop() => {
            tracing::warn!("second stop signal: stopping now, without waiting for open connections");
        }
    }
    Ok(())
}

fn make_master(
    out: &std::path::Path,
    cert: &std::path::Path,
    epoch: Option<(u32, PathBuf)>,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    use sha2::{Digest, Sha256};
    let der = CertificateDer::from_pem_file(cert)?;
    let fingerprint: [u8; 32] = Sha256::digest(der.as_ref()).into();
    let kgc = match epoch {
        None => {
            let master = acs_kgc::MasterSecret::generate(&mut rand_core::OsRng);
            master.save(out)?;
            acs_kgc::Kgc::new(master)
        }
        Some((epoch, identity)) => {
            let master =
                acs_kgc::MasterSecret::load(&identity).map_err(|e| format!("--identity: {e}"))?;
            let secret = acs_kgc::EpochSecret::generate(epoch, &mut rand_core::OsRng)?;
            secret.save(out)?;
            acs_kgc::Kgc::for_epoch(&master, &secret)
        }
    };
    let now = acs_transport::exchange::clock::now_unix_ms() / 1000;
    let descriptor = kgc.descriptor(fingerprint, now);
    let mut path = out.as_os_str().to_owned();
    path.push(".descriptor");
    let path = PathBuf::from(path);
    std::fs::write(&path, descriptor.to_bytes())?;
    Ok(path)
}

/// The user's identity: loaded from its seed file, or created there (owner-only) on
/// first use. A seed file others can read is refused.
fn load_or_create_identity(
    path: &std::path::Path,
) -> Result<acs_kgc::UserIdentity, Box<dyn std::error::Error>> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(format!(
                    "{}: identity file is readable by others (chmod 600 it)",
                    path.display()
                )
                .into());
            }
            let bytes = zeroize::Zeroizing::new(std::fs::read(path)?);
            let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                format!(
                    "{}: identity file must hold exactly 32 bytes",
                    path.display()
                )
            })?;
            Ok(acs_kgc::UserIdentity::from_seed(seed)?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = acs_kgc::UserIdentity::generate(&mut rand_core::OsRng);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(identity.to_seed().as_ref())?;
            f.sync_all()?;
            Ok(identity)
        }
        Err(e) => Err(format!("{}: {e}", path.display()).into()),
    }
}

/// A pseudonym as `acs client` prints it: exactly 16 hexadecimal digits (an optional
/// `0x` before them). Shorter input is refused, not zero-padded: a truncated pseudonym
/// names somebody else, or nobody.
fn parse_pseudonym(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the pseudonym must be exactly 16 hexadecimal digits (got {} characters)",
            digits.len()
        ));
    }
    u64::from_str_radix(digits, 16).map_err(|e| e.to_string())
}

/// Received text as printable: control characters (newlines, escapes) and other
/// non-printing characters escaped, so a sender cannot forge lines or drive the terminal.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `PSEUDONYM=TEXT` with the pseudonym in hex.
fn parse_send(arg: &str, payload_bytes: usize) -> Result<acs_transport::user::OutboxItem, String> {
    let (to, text) = arg
        .split_once('=')
        .ok_or_else(|| format!("--send {arg:?}: expected PSEUDONYM=TEXT"))?;
    let to = parse_pseudonym(to).map_err(|e| format!("--send {arg:?}: {e}"))?;
    if text.len() > payload_bytes {
        return Err(format!(
            "--send: message of {} bytes exceeds the payload size ({payload_bytes} bytes)",
            text.len()
        ));
    }
    Ok(acs_transport::user::OutboxItem {
        to,
        payload: text.as_bytes().to_vec(),
    })
}

/// `rounds: None` is receive-only: cover every round until interrupted.
async fn run_client(
    path: PathBuf,
    rounds: Option<u64>,
    send: Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let file = ClientFile::load(&path)?;
    let payload_bytes = file.round.payload_words * 8;
    let queued = send
        .iter()
        .map(|a| parse_send(a, payload_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let roots = acs_transport::tls::load_roots(&file.ca)?;
    let mut descriptors = Vec::with_capacity(3);
    for d in &file.descriptors {
        let bytes = std::fs::read(d).map_err(|e| format!("{}: {e}", d.display()))?;
        descriptors.push(
            acs_kgc::SignedDescriptor::from_bytes(&bytes)
                .map_err(|e| format!("{}: {e}", d.display()))?,
        );
    }
    let descriptors: [acs_kgc::SignedDescriptor; 3] = descriptors
        .try_into()
        .map_err(|_| format!("{}: descriptors: three are needed", path.display()))?;
    let identity = load_or_create_identity(&file.identity)?;
    let relays: Vec<(u32, std::net::SocketAddr)> =
        file.relays.iter().map(|r| (r.index, r.addr)).collect();
    let timeout = std::time::Duration::from_millis(file.timeout_ms);
    let mut user = acs_transport::user::User::register(
        identity,
        file.round,
        &relays,
        roots,
        &descriptors,
        timeout,
    )
    .await?;
    println!("pseudonym {:016x}", user.pseudonym().get());
    user.outbox.extend(queued);
    let mut done = 0u64;
    while rounds.is_none_or(|r| done < r) {
        offer_descriptors(&mut user, &file.descriptors).await;
        let a = user.next_round().await?;
        let sent = user.send_block(a.round).await?;
        let report = user.finish_round(a.round, sent, timeout).await?;
        print_report(&report, "");
        for late in user.take_late() {
            print_report(&late, " (late)");
        }
        done += 1;
    }
    if let Some((first, _)) = user.awaiting_receipts().first_key_value() {
        // Handed over and stored: the exchange owes a receipt, which comes to this
        // pseudonym in a later run (the receipt names the target and the send round).
        println!(
            "{} stored message(s) (the first sent in round {first}) still await their receipts: they come in a later run, delivered or expired",
            user.awaiting_receipts().len()
        );
    }
    if !user.outbox.is_empty() {
        return Err(format!(
            "{} message(s) still queued after {done} round(s): run more rounds (--rounds) to send them",
            user.outbox.len()
        )
        .into());
    }
    Ok(())
}

/// Re-reads the descriptor files (where the operators publish a new master-secret
/// epoch's descriptor) and offers each to the user, which registers under a newer epoch
/// by itself. A file that cannot be read or verified now is skipped with a warning: the
/// keys in use stay valid.
async fn offer_descriptors(user: &mut acs_transport::user::User, paths: &[PathBuf; 3]) {
    for (server, path) in paths.iter().enumerate() {
        let parsed = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| acs_kgc::SignedDescriptor::from_bytes(&b).map_err(|e| e.to_string()));
        let outcome = match parsed {
            Ok(d) => user
                .offer_descriptor(server, &d)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(server, path = %path.display(), error = %e, "descriptor not taken");
        }
    }
}

async fn run_exchange(path: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let mut signals = Signals::install()?;
    let file = ExchangeFile::load(&path)?;
    for w in check::check_exchange(&file).into_result()?.warnings() {
        tracing::warn!("configuration: {w}");
    }
    let cfg = file.server_config()?;
    let keys = acs_transport::exchange::epochs::ServerKeys::load(&file)?;
    let relay_listener = bind("relay_listen", file.relay_listen).await?;
    let peer_listener = bind("peer_listen", file.peer_listen).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (relays, metrics) = (cfg.relays.clone(), cfg.metrics.clone());
    let epoch_reload = cfg.epoch_reload.clone();
    let mut running = file.clone();
    if let Some(addr) = file.metrics_listen {
        let at = acs_transport::metrics::start(addr, metrics.clone(), shutdown_rx.clone()).await?;
        tracing::info!(addr = %at, "metrics at /metrics and /healthz");
    }
    tracing::info!(index = file.index, relay = %file.relay_listen, peer = %file.peer_listen, relays = ?relays.get(), security = %file.security, "exchange server starting");
    let server = tokio::spawn(acs_transport::exchange::server::run(
        cfg,
        keys,
        relay_listener,
        peer_listener,
        shutdown_rx,
    ));
    let mut server = server;
    let result = loop {
        tokio::select! {
            sig = signals.wait() => match sig {
                Signal::Reload => reload(&path, &mut running, &relays, &metrics, &epoch_reload),
                Signal::Stop => {
                    tracing::info!("shutting down (a second SIGTERM or ctrl-c stops at once)");
                    let _ = shutdown_tx.send(true);
                    // Signals stay watched while the server winds down, so a second stop
                    // request is acted on at once rather than after the 10 s wait.
                    tokio::select! {
                        r = tokio::time::timeout(std::time::Duration::from_secs(10), &mut server) => {
                            break r.map_err(|_| "exchange server did not stop within 10 s")?;
                        }
                        _ = signals.second_stop() => {
                            tracing::warn!("second stop signal: stopping now, without waiting for the round in progress (it is retried)");
                            return Ok(());
                        }
                    }
                }
            },
            r = &mut server => break r,
        }
    };
    let summary = result??;
    tracing::info!(
        committed = summary.committed,
        aborted = summary.aborted,
        "exchange server stopped"
    );
    Ok(())
}

/// `SIGHUP` at an exchange server: re-reads the configuration file and applies its
/// `relays` list (relays added can connect at once; relays removed are disconnected at
/// the next round) and its `[[epochs]]` (served from the next round). Everything else
/// needs a restart, and a change to it is reported.
fn reload(
    path: &std::path::Path,
    running: &mut ExchangeFile,
    relays: &acs_transport::relay_port::RelaySet,
    metrics: &acs_transport::metrics::ExchangeMetrics,
    epochs: &acs_transport::exchange::epochs::EpochReload,
) {
    let file = match ExchangeFile::load(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded; still running the previous relays list");
            return;
        }
    };
    let mut rest = file.clone();
    rest.relays = running.relays.clone();
    rest.epochs = running.epochs.clone();
    if rest != *running {
        tracing::warn!("SIGHUP: only `relays` and `[[epochs]]` are applied on reload; restart the server to apply the other changes in the file");
    }
    if file.epochs != running.epochs {
        match acs_transport::exchange::epochs::ServerKeys::load(&file) {
            Ok(keys) => {
                epochs.offer(keys);
                running.epochs = file.epochs.clone();
                tracing::info!(
                    epochs = ?file.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
                    "SIGHUP: master-secret epochs reloaded; served from the next round"
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: master-secret epochs not reloaded; still serving the previous ones"
            ),
        }
    }
    running.relays = file.relays.clone();
    let (added, removed) = relays.replace(file.relays);
    metrics.relay_reloads.inc();
    tracing::info!(?added, ?removed, relays = ?relays.get(), "SIGHUP: relays list reloaded");
}

/// Binds a listener; the error names the configuration key and the address.
async fn bind(
    key: &str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, Box<dyn std::error::Error>> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{key} {addr}: cannot bind: {e}").into())
}

/// `acs check --config FILE`.
fn run_check(path: &std::path::Path) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("acs check: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(check::check_file(path)) {
        Ok(report) => {
            print!("{}", report.render());
            if report.errors().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("ERROR {e}\nFAILED: the file could not be loaded");
            ExitCode::FAILURE
        }
    }
}

/// What a signal asks for.
enum Signal {
    /// SIGTERM or SIGINT (ctrl-c): stop.
    Stop,
    /// SIGHUP: reload what can be reloaded.
    Reload,
}

/// SIGTERM, SIGINT (ctrl-c) and SIGHUP, registered up front.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for a stop signal, ignoring reloads (during shutdown).
    async fn second_stop(&mut self) {
        while !matches!(self.wait().await, Signal::Stop) {}
    }

    async fn wait(&mut self) -> Signal {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

/// One line per round outcome of `acs client`, and one per message received.
fn print_report(report: &acs_transport::user::RoundReport, note: &str) {
    let status = match report.status {
        Some(acs_engine::round::Status::Misaddressed) => "misaddressed: no registered user has \
            that pseudonym (another user holds its address), so it can never be delivered; \
            not sent again"
            .into(),
        Some(s) => format!("{s:?}").to_lowercase(),
        None => "incomplete (waiting for the missing output shares)".into(),
    };
    let what = match &report.sent {
        Some(m) => format!("message to {:016x}", m.to),
        None => "cover".into(),
    };
    println!("round {}{note}: {what}: {status}", report.round);
    if let Some(l) = report.liar {
        println!(
            "round {}{note}: WARNING: exchange server {l} sent an answer the other two servers contradict; it was outvoted and this round's output is right",
            report.round
        );
    }
    if let Some(f) = &report.receipt {
        let fate = match f.receipt.fate {
            acs_engine::round::Fate::Delivered => "delivered",
            acs_engine::round::Fate::Expired => {
                "expired in the store, never delivered (send it again if it still matters)"
            }
        };
        println!(
            "round {}{note}: receipt: message to {:016x} sent in round {}: {fate}",
            report.round, f.receipt.to, f.receipt.sent
        );
    }
    if let Some(inc) = &report.incoming {
        let bytes = acs_engine::round::payload_from_words(&inc.payload);
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        println!(
            "round {}{note}: {:?} from {:016x}: {}",
            report.round,
            inc.role,
            inc.from,
            printable(&String::from_utf8_lossy(&bytes[..end]))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_exactly_sixteen_hex_digits() {
        assert_eq!(parse_pseudonym("7450974d00000001"), Ok(0x7450974d00000001));
        assert_eq!(
            parse_pseudonym("0x7450974D00000001"),
            Ok(0x7450974d00000001)
        );
        assert!(parse_pseudonym("7450974d").is_err());
        assert!(parse_pseudonym("7450974d000000011").is_err());
        assert!(parse_pseudonym("7450974d0000000g").is_err());
        assert!(parse_pseudonym("+450974d00000001").is_err());
        assert!(parse_pseudonym("").is_err());
    }

    #[test]
    fn received_text_cannot_forge_lines_or_drive_the_terminal() {
        assert_eq!(printable("hi"), "hi");
        assert_eq!(
            printable("x\nround 999: Send from 0000000000000001: y"),
            "x\\nround 999: Send from 0000000000000001: y"
        );
        assert_eq!(printable("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(printable("a\\b"), "a\\\\b");
        assert_eq!(printable("grüße"), "grüße");
    }
}
