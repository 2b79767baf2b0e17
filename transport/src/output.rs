//! What an exchange server seals to a user for a round: its answer to the user (both
//! output components it holds, with their commitment nonces, and the commitment to the
//! third component, so the user can check it: [`acs_engine::round::outputs`]), or a
//! notice that the round will give this user no output and the block must be sent again
//! (`retry`).
//!
//! Layout of the sealed plaintext: one kind byte, then for a share `own` and `next`
//! (`output_words` little-endian words each), the two 16-byte nonces and the 32-byte
//! commitment; a retry is zeros of the same length. Both kinds have the same length, so
//! a relay, which sees only sealed sizes, cannot tell a retry from an output. The notice
//! is sealed under the user's per-round key like a share, so only that server can have
//! sent it.

use acs_engine::round::outputs::{OutputShare, NONCE_BYTES};
use zeroize::Zeroizing;

const SHARE: u8 = 0;
const RETRY: u8 = 1;

/// Bytes of an encoded share (without the kind byte) for `output_words`-word outputs.
pub fn share_bytes(output_words: usize) -> usize {
    16 * output_words + 2 * NONCE_BYTES + 32
}

/// Bytes of a sealed answer's plaintext.
pub fn plaintext_bytes(output_words: usize) -> usize {
    1 + share_bytes(output_words)
}

/// One server's answer to one user for one round.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// The server's share of the user's output.
    Share(OutputShare),
    /// The servers did not take this user's block this round (not in the agreed online
    /// set, or the round aborted): send it again.
    Retry,
}

impl std::fmt::Debug for ServerOutput {
    // A share is secret-shared data: length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerOutput::Share(s) => write!(f, "Share({} words)", s.own.len()),
            ServerOutput::Retry => write!(f, "Retry"),
        }
    }
}

/// Why sealed output bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputFormatError {
    /// Not one kind byte plus an encoded share.
    #[error("server output of {got} bytes, expected {expected}")]
    Length {
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// An unknown kind byte.
    #[error("unknown server output kind {0}")]
    Kind(u8),
    /// A `retry` notice whose padding is not zero.
    #[error("retry notice with non-zero padding")]
    Padding,
}

/// Appends `share` (whose components must have `output_words` words) to `out`.
pub fn encode_share(share: &OutputShare, out: &mut Vec<u8>) {
    for w in share.own.iter().chain(&share.next) {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&share.own_nonce);
    out.extend_from_slice(&share.next_nonce);
    out.extend_from_slice(&share.other_commit);
}

/// Decodes [`encode_share`]; `bytes` must be exactly [`share_bytes`] long.
pub fn decode_share(bytes: &[u8], output_words: usize) -> Option<OutputShare> {
    if bytes.len() != share_bytes(output_words) {
        return None;
    }
    let words = |b: &[u8]| -> Vec<u64> {
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    };
    let ow = 8 * output_words;
    let tail = &bytes[2 * ow..];
    Some(OutputShare {
        own: words(&bytes[..ow]),
        next: words(&bytes[ow..2 * ow]),
        own_nonce: tail[..NONCE_BYTES].try_into().ok()?,
        next_nonce: tail[NONCE_BYTES..2 * NONCE_BYTES].try_into().ok()?,
        other_commit: tail[2 * NONCE_BYTES..].try_into().ok()?,
    })
}

impl ServerOutput {
    /// The plaintext to seal for a round whose outputs have `output_words` words.
    pub fn encode(&self, output_words: usize) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(plaintext_bytes(output_words)));
        match self {
            ServerOutput::Share(share) => {
                out.push(SHARE);
                encode_share(share, &mut out);
            }
            ServerOutput::Retry => {
                out.push(RETRY);
                out.resize(plaintext_bytes(output_words), 0);
            }
        }
        out
    }

    /// Decodes an opened plaintext (user side).
    pub fn decode(bytes: &[u8], output_words: usize) -> Result<ServerOutput, OutputFormatError> {
        let expected = plaintext_bytes(output_words);
        if bytes.len() != expected {
            return Err(OutputFormatError::Length {
                expected,
                got: bytes.len(),
            });
        }
        match bytes[0] {
            SHARE => decode_share(&bytes[1..], output_words)
                .map(ServerOutput::Share)
                .ok_or(OutputFormatError::Length {
                    expected,
                    got: bytes.len(),
                }),
            RETRY if bytes[1..].iter().all(|&b| b == 0) => Ok(ServerOutput::Retry),
            RETRY => Err(OutputFormatError::Padding),
            k => Err(OutputFormatError::Kind(k)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A share of `words` for tests.
    pub(crate) fn share(words: Vec<u64>) -> ServerOutput {
        ServerOutput::Share(OutputShare {
            next: words.iter().map(|w| w ^ 0xff).collect(),
            own: words,
            own_nonce: [1; NONCE_BYTES],
            next_nonce: [2; NONCE_BYTES],
            other_commit: [3; 32],
        })
    }

    #[test]
    fn shares_and_retries_round_trip_at_the_same_length() {
        let share = share(vec![1, u64::MAX, 7]);
        let a = share.encode(3);
        let b = ServerOutput::Retry.encode(3);
        assert_eq!(a.len(), b.len());
        assert_eq!(ServerOutput::decode(&a, 3).unwrap(), share);
        assert_eq!(ServerOutput::decode(&b, 3).unwrap(), ServerOutput::Retry);
        assert_eq!(
            ServerOutput::decode(&a, 4),
            Err(OutputFormatError::Length {
                expected: plaintext_bytes(4),
                got: plaintext_bytes(3)
            })
        );
        let mut bad = a.to_vec();
        bad[0] = 9;
        assert_eq!(
            ServerOutput::decode(&bad, 3),
            Err(OutputFormatError::Kind(9))
        );
        assert!(ServerOutput::decode(&[], 0).is_err());
    }
}
