//! ACS analysis: the paper's traceability model (§5.1, §6.2) in [`trace`], and the
//! leakage audit of the exchange engine (design §6) in [`audit`].

pub mod audit;
pub mod trace;
