//! What an exchange server seals to a user for a round: its share of the user's output,
//! or a notice that the round will give this user no output and the block must be sent
//! again (`retry`).
//!
//! Layout of the sealed plaintext: one kind byte, then `output_words` little-endian words
//! (the share, or zeros for a retry). Both kinds have the same length, so a relay, which
//! sees only sealed sizes, cannot tell a retry from an output. The notice is sealed under
//! the user's per-round key like a share, so only that server can have sent it.

use zeroize::Zeroizing;

const SHARE: u8 = 0;
const RETRY: u8 = 1;

/// One server's answer to one user for one round.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// The server's share of the user's output words.
    Share(Vec<u64>),
    /// The servers did not take this user's block this round (not in the agreed online
    /// set, or the round aborted): send it again.
    Retry,
}

impl std::fmt::Debug for ServerOutput {
    // A share is secret-shared data: length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerOutput::Share(w) => write!(f, "Share({} words)", w.len()),
            ServerOutput::Retry => write!(f, "Retry"),
        }
    }
}

/// Why sealed output bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputFormatError {
    /// Not one kind byte plus `expected` bytes of words.
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

impl ServerOutput {
    /// The plaintext to seal for a round whose outputs have `output_words` words.
    pub fn encode(&self, output_words: usize) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + output_words * 8));
        match self {
            ServerOutput::Share(words) => {
                out.push(SHARE);
                for w in words {
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
            ServerOutput::Retry => {
                out.push(RETRY);
                out.resize(1 + output_words * 8, 0);
            }
        }
        out
    }

    /// Decodes an opened plaintext (user side).
    pub fn decode(bytes: &[u8], output_words: usize) -> Result<ServerOutput, OutputFormatError> {
        let expected = 1 + output_words * 8;
        if bytes.len() != expected {
            return Err(OutputFormatError::Length {
                expected,
                got: bytes.len(),
            });
        }
        match bytes[0] {
            SHARE => Ok(ServerOutput::Share(
                bytes[1..]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            )),
            RETRY if bytes[1..].iter().all(|&b| b == 0) => Ok(ServerOutput::Retry),
            RETRY => Err(OutputFormatError::Padding),
            k => Err(OutputFormatError::Kind(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_retries_round_trip_at_the_same_length() {
        let share = ServerOutput::Share(vec![1, u64::MAX, 7]);
        let a = share.encode(3);
        let b = ServerOutput::Retry.encode(3);
        assert_eq!(a.len(), b.len());
        assert_eq!(ServerOutput::decode(&a, 3).unwrap(), share);
        assert_eq!(ServerOutput::decode(&b, 3).unwrap(), ServerOutput::Retry);
        assert_eq!(
            ServerOutput::decode(&a, 4),
            Err(OutputFormatError::Length {
                expected: 33,
                got: 25
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
