//! Handing a round's answers back to the users, through the relays they came by: output
//! shares once the round committed, `retry` notices to users whose block the round did
//! not take; and the committed round's shares as the database keeps them, so that a
//! server that crashed between commit and release hands them out after its restart.

use super::collect::send_outputs;
use super::intake::Intake;
use crate::output::{self, ServerOutput};
use crate::relay_port::RelayPortHandle;
use acs_kgc::UserPseudonym;
use std::collections::HashMap;

/// Where each heard user's answer goes: pseudonym → (relay, slot) of its envelope.
pub type Routes = HashMap<u64, (u32, u32)>;

/// One user's answer and its way back.
#[derive(Debug)]
pub struct Answer {
    /// The user's pseudonym.
    pub user: u64,
    /// The relay its envelope came through.
    pub relay: u32,
    /// The envelope's slot in that relay's batch.
    pub slot: u32,
    /// What to seal to it.
    pub output: ServerOutput,
}

/// What a release did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Answers handed to relays.
    pub sent: usize,
    /// Answers that could not be sealed (the user's registration is gone).
    pub unsealed: usize,
    /// Relays that could not be reached.
    pub relays_unreachable: usize,
}

/// Seals every answer to its user for `round` and hands them to the relays.
pub fn release(
    port: &RelayPortHandle,
    intake: &Intake,
    round: u64,
    output_words: usize,
    answers: impl IntoIterator<Item = Answer>,
) -> Released {
    let mut rng = rand_core::OsRng;
    let mut out = Vec::new();
    let mut unsealed = 0;
    for a in answers {
        let Ok(user) = UserPseudonym::from_u64(a.user) else {
            unsealed += 1;
            continue;
        };
        let plain = a.output.encode(output_words);
        match intake.seal_output(round, user, &plain, a.relay, a.slot, &mut rng) {
            Ok(o) => out.push(o),
            Err(e) => {
                unsealed += 1;
                tracing::warn!(round, error = %e, "answer not sealed");
            }
        }
    }
    let sent = out.len();
    let failed = send_outputs(port, round, out);
    Released {
        sent,
        unsealed,
        relays_unreachable: failed.len(),
    }
}

/// `retry` for every user in `routes` (all of a round's heard users when it aborted).
pub fn retry_all(routes: &Routes) -> impl Iterator<Item = Answer> + '_ {
    routes.iter().map(|(&user, &(relay, slot))| Answer {
        user,
        relay,
        slot,
        output: ServerOutput::Retry,
    })
}

const ENTRY_HEAD: usize = 16;

/// A committed round's output shares with their routes, as the database keeps them:
/// per user 8 bytes pseudonym, 4 relay, 4 slot (little-endian), then the encoded share
/// ([`crate::output::encode_share`]).
pub fn encode_stored(answers: &[Answer], output_words: usize) -> Vec<u8> {
    let shares = answers
        .iter()
        .filter_map(|a| match &a.output {
            ServerOutput::Share(s)
                if s.own.len() == output_words && s.next.len() == output_words =>
            {
                Some((a, s))
            }
            _ => None,
        })
        .collect::<Vec<_>>();
    let mut out =
        Vec::with_capacity(shares.len() * (ENTRY_HEAD + output::share_bytes(output_words)));
    for (a, share) in shares {
        out.extend_from_slice(&a.user.to_le_bytes());
        out.extend_from_slice(&a.relay.to_le_bytes());
        out.extend_from_slice(&a.slot.to_le_bytes());
        output::encode_share(share, &mut out);
    }
    out
}

/// The inverse of [`encode_stored`]; `None` if the bytes do not fit `output_words`.
pub fn decode_stored(bytes: &[u8], output_words: usize) -> Option<Vec<Answer>> {
    let entry = ENTRY_HEAD + output::share_bytes(output_words);
    if !bytes.len().is_multiple_of(entry) {
        return None;
    }
    let le = |b: &[u8]| -> u64 {
        let mut x = [0u8; 8];
        x[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(x)
    };
    bytes
        .chunks_exact(entry)
        .map(|e| {
            Some(Answer {
                user: le(&e[..8]),
                relay: le(&e[8..12]) as u32,
                slot: le(&e[12..16]) as u32,
                output: ServerOutput::Share(output::decode_share(&e[ENTRY_HEAD..], output_words)?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_outputs_round_trip_and_skip_retries() {
        let answers = vec![
            Answer {
                user: 7,
                relay: 1,
                slot: 9,
                output: crate::output::tests::share(vec![1, 2, 3]),
            },
            Answer {
                user: 8,
                relay: 0,
                slot: 2,
                output: ServerOutput::Retry,
            },
            Answer {
                user: u64::MAX,
                relay: u32::MAX,
                slot: 0,
                output: crate::output::tests::share(vec![u64::MAX, 0, 5]),
            },
        ];
        let bytes = encode_stored(&answers, 3);
        let back = decode_stored(&bytes, 3).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in [&answers[0], &answers[2]].into_iter().zip(&back) {
            assert_eq!((a.user, a.relay, a.slot), (b.user, b.relay, b.slot));
            assert_eq!(a.output, b.output);
        }
        assert!(decode_stored(&bytes[1..], 3).is_none());
        assert_eq!(decode_stored(&[], 3).unwrap().len(), 0);
    }
}
