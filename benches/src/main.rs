//! `acs-bench`: the scaling runner (not built yet).

fn main() {
    eprintln!("acs-bench: not built yet");
    std::process::exit(2);
}
