//! The dealer's frames on a link, as both sides read and write them: words of components
//! ([`encode_words`], [`decode_words`]), each party's 32-byte seed ([`recv_seed`]), and a party's
//! end of its link to the dealer process ([`DealerLink`]).

use std::time::Duration;

use super::error::{MpcError, Result};
use super::net::Transport;

/// Words of several components: `[count, len_0.., words_0.., words_1.., ...]`, little-endian.
pub fn encode_words(parts: &[Vec<u64>]) -> Vec<u8> {
    let total: usize = parts.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(8 * (1 + parts.len() + total));
    out.extend((parts.len() as u64).to_le_bytes());
    for p in parts {
        out.extend((p.len() as u64).to_le_bytes());
    }
    for p in parts {
        for w in p {
            out.extend(w.to_le_bytes());
        }
    }
    out
}

/// The inverse of [`encode_words`]; a frame whose lengths do not add up is an error.
pub fn decode_words(bytes: &[u8]) -> Result<Vec<Vec<u64>>> {
    let bad = || MpcError::Malformed(format!("a dealer frame of {} bytes", bytes.len()));
    if !bytes.len().is_multiple_of(8) || bytes.len() < 8 {
        return Err(bad());
    }
    let words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let count = words[0] as usize;
    if count > words.len() - 1 {
        return Err(bad());
    }
    let lens = &words[1..1 + count];
    let mut offset = 1 + count;
    let mut out = Vec::with_capacity(count);
    for &len in lens {
        let end = offset.checked_add(len as usize).ok_or_else(bad)?;
        if end > words.len() {
            return Err(bad());
        }
        out.push(words[offset..end].to_vec());
        offset = end;
    }
    if offset != words.len() {
        return Err(bad());
    }
    Ok(out)
}

/// The bytes of a dealer's frame ([`encode_words`]) of components of these lengths: a receiver
/// that knows them before the frame arrives refuses any other length before reading it.
pub(crate) fn frame_bytes(lens: impl IntoIterator<Item = usize>) -> usize {
    let picked: Vec<usize> = lens.into_iter().collect();
    picked
        .iter()
        .fold(1 + picked.len(), |sum, len| sum.saturating_add(*len))
        .saturating_mul(8)
}

/// A party's connection to the dealer process, opened and paired by the caller.
pub struct DealerLink {
    pub transport: Box<dyn Transport>,
    /// How long to wait for each of the dealer's frames.
    pub timeout: Duration,
}

/// Receives a party's 32-byte seed.
pub fn recv_seed(transport: &mut dyn Transport, timeout: Duration) -> Result<[u8; 32]> {
    transport
        .recv(timeout, 32)?
        .try_into()
        .map_err(|_| MpcError::Malformed("the dealer's seed is not 32 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_frames_round_trip_and_reject_bad_lengths() {
        let parts = vec![vec![1, 2, 3], vec![], vec![u64::MAX]];
        let bytes = encode_words(&parts);
        assert_eq!(decode_words(&bytes).unwrap(), parts);
        assert!(decode_words(&bytes[..bytes.len() - 8]).is_err());
        assert!(decode_words(&bytes[..5]).is_err());
        let mut lying = bytes.clone();
        lying[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_words(&lying).is_err());
    }
}
