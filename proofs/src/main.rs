//! The `acs-proofs` command.

fn main() {
    eprintln!("acs-proofs: no subcommands yet (trace-model and audit arrive with their issues)");
    std::process::exit(2);
}
