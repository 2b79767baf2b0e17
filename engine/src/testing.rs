//! Running the three parties in one process, for tests, benches and reference checks.

use crate::channel::{local_channels, PartyId};
use crate::error::EngineError;
use crate::party::Party;

/// Runs `f` as each of the three parties on its own thread, connected by in-memory
/// channels, and returns the three results in party order.
pub fn run_three<T, F>(f: F) -> [Result<T, EngineError>; 3]
where
    T: Send + 'static,
    F: Fn(&mut Party) -> Result<T, EngineError> + Send + Sync + 'static,
{
    let f = std::sync::Arc::new(f);
    let handles: Vec<_> = local_channels()
        .into_iter()
        .zip(PartyId::ALL)
        .map(|(ch, id)| {
            let f = f.clone();
            std::thread::Builder::new()
                .name(format!("party-{}", id.index()))
                .spawn(move || {
                    let mut party = Party::setup(id, Box::new(ch))?;
                    f(&mut party)
                })
                .expect("spawn party thread")
        })
        .collect();
    let mut out = handles
        .into_iter()
        .map(|h| h.join().expect("party thread panicked"));
    [
        out.next().expect("three"),
        out.next().expect("three"),
        out.next().expect("three"),
    ]
}

/// `n` random pseudonyms of registered users, ascending: non-zero, with distinct
/// non-zero addresses ([`crate::round::address`]), as registration guarantees.
pub fn random_pseudonyms(rng: &mut impl rand::Rng, n: usize) -> Vec<u64> {
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // An odd pseudonym has a non-zero address.
        let p = rng.gen::<u64>() | 1;
        if seen.insert(crate::round::address(p)) {
            out.push(p);
        }
    }
    out.sort_unstable();
    out
}
