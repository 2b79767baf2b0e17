//! ACS analysis: the paper's traceability model (§5.1, §6.2) and the leakage audit of the
//! exchange engine (design §6). Not built yet: see the proofs issues.
