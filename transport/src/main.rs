//! The `acs` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => {
            eprintln!(
                "acs demo: the networked system (exchange servers, entry relays, clients over TLS) \
                 is not built yet; it arrives with the transport issue. \
                 Meanwhile `cargo run --release -p acs-benches --bin acs-bench -- sort --n 65536` \
                 runs the three-party engine."
            );
            ExitCode::from(2)
        }
        _ => {
            eprintln!("usage: acs demo");
            ExitCode::from(2)
        }
    }
}
