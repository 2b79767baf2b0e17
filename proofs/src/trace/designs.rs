//! Per-user trace probabilities of concrete share-routing mechanisms, derived from first
//! principles rather than from Eq. 4, and checked by [`super::montecarlo`].
//!
//! In every mechanism each user `u` sends, each round, a block addressed to a target
//! `t(u) ≠ u`; "tracing `u`" means linking `u`'s network address to `t(u)`'s network
//! address. Users pick their entry servers uniformly at random and independently of each
//! other; which servers are corrupted is then irrelevant, only how many.

use serde::Serialize;

use super::binomial::{choose, choose_ratio};
use super::metrics::{degree_of_anonymity, expected_traced_fraction, median_rounds_until_traced};
use super::Params;

/// The paper's design (§4.2, §6.2) with `n_m` shares, read literally:
///
/// * `u` sends `n_m` shares to `n_m` distinct exchange servers (uniform among `n_x`; all
///   three in §4, where `n_x = n_m = 3`), each through its own entry server (`n_m`
///   distinct ones, uniform among `n_e`, as Eq. 2 assumes).
/// * An entry server maps pseudonyms to addresses (§4.2: it "sends these message shares to
///   the relevant users according to the pseudonym"), so one corrupted entry server
///   carrying any share of `u` links `u`'s address to `u`'s pseudonym.
/// * An exchange server sees `(L, u_i, u_j, M)` with both pseudonyms (§4.2, §6.2), so one
///   corrupted exchange server holding a share of `u` or of `t(u)` links the pseudonyms.
///
/// Traced iff all three links are held, and the three are independent:
/// `P = q_e² · (1 - a_x²)` with `q_e = 1 - C(n_e - n'_e, n_m)/C(n_e, n_m)` and
/// `a_x = C(n_x - n'_x, n_m)/C(n_x, n_m)` (the chance that `u`'s shares avoid every
/// corrupted exchange server; `t(u)`'s do so independently).
pub fn paper_shares_p_trace(params: &Params) -> f64 {
    let s = params.shares;
    let q_e = 1.0 - choose_ratio(params.entries - params.corrupt_entries, params.entries, s);
    let a_x = choose_ratio(
        params.exchanges - params.corrupt_exchanges,
        params.exchanges,
        s,
    );
    q_e * q_e * (1.0 - a_x * a_x)
}

/// The paper's design with `n_m` shares: see [`paper_shares_p_trace`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PaperShares {
    pub p_trace: f64,
    pub expected_traced_fraction: f64,
    pub degree_of_anonymity: Option<f64>,
    pub median_rounds_until_traced: Option<u64>,
}

impl PaperShares {
    pub fn new(params: &Params) -> Self {
        let p = paper_shares_p_trace(params);
        PaperShares {
            p_trace: p,
            expected_traced_fraction: expected_traced_fraction(p),
            degree_of_anonymity: degree_of_anonymity(params.users, p),
            median_rounds_until_traced: median_rounds_until_traced(p),
        }
    }
}

/// Exchange servers in this system (design §1: exactly three, honest majority).
pub const ACS_EXCHANGES: u64 = 3;
/// Exchange servers a coalition needs to reconstruct 2-out-of-3 replicated shares and so
/// learn who talks to whom.
pub const ACS_THRESHOLD: u64 = 2;

/// This system's design (`docs/design`, §1): what a coalition of `n'_e` relays and `n'_x`
/// of the 3 exchange servers learns.
///
/// * Share `l` of `u`'s block goes to `MS_l` through a relay of `u`'s choice, 3 distinct
///   relays uniform among `n_e`. A relay sees `u`'s address and an envelope sealed to
///   `MS_l`: no pseudonym, role, target or payload. A corrupted relay alone links nothing.
/// * `MS_l` opens the envelope: it learns `u`'s pseudonym (bound by the sealing key) and
///   the relay it came through, and holds one additive share of `(L, dst, M)`.
/// * Who-talks-to-whom (pseudonym to pseudonym) needs `ACS_THRESHOLD = 2` of the 3
///   exchange servers; then it is exposed for every user at once.
/// * Address to pseudonym for `u` needs a corrupted relay that carried one of `u`'s shares
///   to a corrupted exchange server: `p_link = 1 - C(n_e - n'_e, n'_x) / C(n_e, n'_x)`.
///
/// So `u` is traced iff `n'_x ≥ 2` and both `u` and `t(u)` are linked:
/// `P = [n'_x ≥ 2] · p_link²`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AcsDesign {
    /// `n'_x ≥ 2`: the pseudonym-level communication graph is exposed (for all users).
    pub pseudonym_graph_exposed: bool,
    /// Probability that a given user's address is linked to its pseudonym.
    pub p_address_link: f64,
    /// Probability that a given user is traced, address to address.
    pub p_trace: f64,
    pub expected_traced_fraction: f64,
    pub degree_of_anonymity: Option<f64>,
    pub median_rounds_until_traced: Option<u64>,
    /// With the paper's global passive observer (§3.1) and `n'_x ≥ 2`, no corrupted relay
    /// needed: entry `r - 1` is the expected number of users (the user included) that
    /// remain candidates for a pseudonym after `r` rounds; see
    /// [`observer_anonymity_set`]. Empty when `n'_x < 2`.
    pub global_observer_anonymity_set: Vec<f64>,
}

/// Rounds for which [`AcsDesign::global_observer_anonymity_set`] is reported.
pub const OBSERVER_ROUNDS: u32 = 4;

/// Expected size of a user's anonymity set against a coalition of `k = n'_x ≥ 2` exchange
/// servers plus a global passive observer (§3.1), no corrupted relay needed, after
/// `rounds` rounds with fresh relay choices: `1 + (n - 1) · q^rounds`, where
/// `q = C(n_e - k, 3 - k) / C(n_e, 3)`.
///
/// The observer sees which 3 relays each address sends to (not which envelope goes to
/// which server: TLS to the relay, equal sizes). A corrupted `MS_l` knows through which
/// relay each pseudonym's envelope arrived (the relay–server link is authenticated). So a
/// pseudonym whose envelopes reached the `k` corrupted servers through relays `R` can only
/// belong to an address whose relay set contains `R`; another user's 3 distinct uniform
/// relays contain a given `k`-set with probability `q`. Pseudonyms are long-lived, so the
/// rounds intersect. `None` for `k < 2`, where the pseudonym graph stays hidden and the set
/// is moot.
pub fn observer_anonymity_set(
    users: u64,
    entries: u64,
    corrupt_exchanges: u64,
    rounds: u32,
) -> Option<f64> {
    if corrupt_exchanges < ACS_THRESHOLD || entries < ACS_EXCHANGES {
        return None;
    }
    let k = corrupt_exchanges.min(ACS_EXCHANGES);
    let q = choose(entries - k, ACS_EXCHANGES - k) / choose(entries, ACS_EXCHANGES);
    Some(1.0 + (users - 1) as f64 * q.powi(rounds as i32))
}

impl AcsDesign {
    /// `Err` (with the reason) where the configuration is not this system's.
    pub fn new(params: &Params) -> Result<Self, String> {
        if params.exchanges != ACS_EXCHANGES {
            return Err(format!(
                "this system has exactly {ACS_EXCHANGES} exchange servers (design §1); got --exchanges {}",
                params.exchanges
            ));
        }
        if params.entries < ACS_EXCHANGES {
            return Err(format!(
                "this system sends its {ACS_EXCHANGES} shares through distinct relays; got --entries {}",
                params.entries
            ));
        }
        let (ne, ce, cx) = (
            params.entries,
            params.corrupt_entries,
            params.corrupt_exchanges,
        );
        let exposed = cx >= ACS_THRESHOLD;
        let p_link = 1.0 - choose_ratio(ne - ce, ne, cx);
        let p = if exposed { p_link * p_link } else { 0.0 };
        let set = (1..=OBSERVER_ROUNDS)
            .filter_map(|r| observer_anonymity_set(params.users, ne, cx, r))
            .collect();
        Ok(AcsDesign {
            pseudonym_graph_exposed: exposed,
            p_address_link: p_link,
            p_trace: p,
            expected_traced_fraction: expected_traced_fraction(p),
            degree_of_anonymity: degree_of_anonymity(params.users, p),
            median_rounds_until_traced: median_rounds_until_traced(p),
            global_observer_anonymity_set: set,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_shares_hand_computed() {
        // n_e = 10, n'_e = 5, n_m = 3: q_e = 1 - C(5,3)/C(10,3) = 1 - 10/120 = 11/12.
        // n_x = 3 = n_m and n'_x = 1: every share set meets MS_corrupt, a_x = 0.
        // P = (11/12)^2 = 121/144.
        let p = Params::new(100, 10, 3, 5, 1, 3).unwrap();
        assert!((paper_shares_p_trace(&p) - 121.0 / 144.0).abs() < 1e-15);
        // n_x = 5, n'_x = 1: a_x = C(4,3)/C(5,3) = 4/10, 1 - a_x^2 = 0.84.
        let p = Params::new(100, 10, 5, 5, 1, 3).unwrap();
        assert!((paper_shares_p_trace(&p) - 121.0 / 144.0 * 0.84).abs() < 1e-15);
        // Edges: no corrupted entry or exchange server, nothing traced; all, everything.
        assert_eq!(
            paper_shares_p_trace(&Params::new(100, 10, 5, 0, 5, 3).unwrap()),
            0.0
        );
        assert_eq!(
            paper_shares_p_trace(&Params::new(100, 10, 5, 10, 0, 3).unwrap()),
            0.0
        );
        assert_eq!(
            paper_shares_p_trace(&Params::new(100, 10, 5, 10, 5, 3).unwrap()),
            1.0
        );
    }

    #[test]
    fn acs_design_hand_computed() {
        // n_e = 10, n'_e = 5, n'_x = 2: p_link = 1 - C(5,2)/C(10,2) = 1 - 10/45 = 7/9,
        // P = 49/81. Anonymity set vs a global observer: q = C(8,1)/C(10,3) = 8/120 = 1/15,
        // 1 + 999/15 = 67.6 after one round, 1 + 999/225 = 5.44 after two.
        let d = AcsDesign::new(&Params::new(1000, 10, 3, 5, 2, 3).unwrap()).unwrap();
        assert!(d.pseudonym_graph_exposed);
        assert!((d.p_address_link - 7.0 / 9.0).abs() < 1e-15);
        assert!((d.p_trace - 49.0 / 81.0).abs() < 1e-15);
        assert!((d.global_observer_anonymity_set[0] - 67.6).abs() < 1e-12);
        assert!((d.global_observer_anonymity_set[1] - 5.44).abs() < 1e-12);
        // All three servers: q = 1/C(10,3) = 1/120, 1 + 999/120 = 9.325.
        let d = AcsDesign::new(&Params::new(1000, 10, 3, 0, 3, 3).unwrap()).unwrap();
        assert!((d.global_observer_anonymity_set[0] - 9.325).abs() < 1e-12);
        assert_eq!(
            d.global_observer_anonymity_set.len(),
            OBSERVER_ROUNDS as usize
        );
    }

    #[test]
    fn acs_design_honest_majority_and_edges() {
        // One corrupted exchange server and every relay: addresses link, nobody is traced.
        let d = AcsDesign::new(&Params::new(1000, 10, 3, 10, 1, 3).unwrap()).unwrap();
        assert!(!d.pseudonym_graph_exposed);
        assert_eq!(d.p_address_link, 1.0);
        assert_eq!(d.p_trace, 0.0);
        assert_eq!(d.degree_of_anonymity, Some(1.0));
        assert!(d.global_observer_anonymity_set.is_empty());
        // Two exchange servers but no relay: graph exposed, no address linked by a relay.
        let d = AcsDesign::new(&Params::new(1000, 10, 3, 0, 2, 3).unwrap()).unwrap();
        assert!(d.pseudonym_graph_exposed);
        assert_eq!(d.p_trace, 0.0);
        // Everything corrupted: everyone traced.
        let d = AcsDesign::new(&Params::new(1000, 10, 3, 10, 3, 3).unwrap()).unwrap();
        assert_eq!(d.p_trace, 1.0);
        assert!(AcsDesign::new(&Params::new(1000, 10, 5, 1, 1, 3).unwrap()).is_err());
    }
}
