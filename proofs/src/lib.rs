//! ACS analysis: the paper's traceability model (§5.1, §6.2) in [`trace`], and (to come)
//! the leakage audit of the exchange engine (design §6).

pub mod trace;
