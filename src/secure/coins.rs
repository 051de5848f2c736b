//! The session's joint randomness: a commit-then-reveal coin toss, once, right after the weight
//! sharing, and the public uniforms of every sampling step derived from it.
//!
//! 1. the client draws a coin r_c (32 bytes) and announces SHA-256("post-coin" || r_c);
//! 2. the server answers with its own coin r_s;
//! 3. the client reveals r_c, and the server checks it against the commitment.
//!
//! The seed SHA-256("post-uniforms" || r_c || r_s) is then uniform if either party is honest: the
//! client is bound to r_c before it sees r_s, and an honest server's r_s is uniform whatever the
//! client committed to (the server, answering last, learns r_c only after sending r_s). Step s (both
//! parties count the steps from 0) reads its uniforms off the ChaCha12 stream s of the seed: k
//! acceptance uniforms, then k + 1 for the inverse CDF. A client that replays a position (a new
//! prompt with the same tokens) draws fresh uniforms, never ones it chose, so it learns what
//! repeated sampling shows anyone, and cannot binary-search the private model's probabilities.
//!
//! Cost: three one-way messages of 32 bytes in the set-up, the client waiting for one of them.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use sha2::{Digest, Sha256};

use crate::mpc::error::MpcError;
use crate::mpc::party::Result;
use crate::mpc::{Party, CLIENT, SERVER};

/// Fractional bits of the step's uniforms and of the client's probabilities (sampling.rs).
pub const PROB_BITS: u32 = 24;

/// One party's contribution to the toss.
pub type Coin = [u8; 32];

/// The session's seed, from both coins.
pub type Seed = [u8; 32];

/// 32 bytes travel as four 64-bit words.
const WORDS: usize = 4;

/// The client's binding to its coin: SHA-256("post-coin" || r_c).
pub fn commitment(coin: &Coin) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"post-coin")
        .chain_update(coin)
        .finalize()
        .into()
}

/// SHA-256("post-uniforms" || r_c || r_s).
pub fn session_seed(client: &Coin, server: &Coin) -> Seed {
    Sha256::new()
        .chain_update(b"post-uniforms")
        .chain_update(client)
        .chain_update(server)
        .finalize()
        .into()
}

/// The server's check of the revealed coin.
pub fn check_reveal(committed: &[u8; 32], revealed: &Coin) -> Result<()> {
    if commitment(revealed) != *committed {
        return Err(MpcError::Malformed(
            "the client's coin does not match its commitment".into(),
        ));
    }
    Ok(())
}

/// The public uniforms of one sampling step, as PROB_BITS-bit fixed-point integers in
/// [0, 2^PROB_BITS): both parties derive them and apply them to their shares alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUniforms {
    /// One per draft, for the acceptance tests.
    pub accept: Vec<u64>,
    /// One per row (k + 1), for the inverse-CDF draw.
    pub sample: Vec<u64>,
}

impl StepUniforms {
    /// Step `step`'s uniforms for `k` drafts: ChaCha12 stream `step` of the seed, one 32-bit word
    /// a uniform, its top PROB_BITS bits kept; acceptance uniforms first.
    pub fn derive(seed: &Seed, step: u64, k: usize) -> Self {
        let mut rng = ChaCha12Rng::from_seed(*seed);
        rng.set_stream(step);
        let mut draw = || u64::from(rng.next_u32() >> (32 - PROB_BITS));
        let accept = (0..k).map(|_| draw()).collect();
        let sample = (0..=k).map(|_| draw()).collect();
        Self { accept, sample }
    }

    /// Uniforms from reals in [0, 1) (tests and callers outside a session).
    pub fn from_reals(accept: &[f64], sample: &[f64]) -> Self {
        let encode = |u: &f64| {
            ((u.clamp(0.0, 1.0) * (1u64 << PROB_BITS) as f64) as u64).min((1 << PROB_BITS) - 1)
        };
        Self {
            accept: accept.iter().map(encode).collect(),
            sample: sample.iter().map(encode).collect(),
        }
    }
}

/// A client coin fixed in advance instead of drawn, for tests that play a dishonest client: it
/// commits to `committed` and reveals `revealed` (an honest client's two are equal).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct PlantedCoin {
    pub committed: Coin,
    pub revealed: Coin,
}

fn words(bytes: &[u8; 32]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn bytes(words: &[u64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Runs the toss on both parties and returns the session's seed. Each party's coin comes from its
/// own private randomness (the OS's, or the simulation seed's when one is fixed); `planted`
/// replaces the client's (ignored on the server). The server's error ends the session.
pub fn toss(p: &mut Party, planted: Option<&PlantedCoin>) -> Result<Seed> {
    let mut own = [0u8; 32];
    p.random_bytes(&mut own);
    let (committed, revealed) = match planted {
        Some(c) if p.is_client() => (c.committed, c.revealed),
        _ => (own, own),
    };
    let commit = p.announce(CLIENT, &words(&commitment(&committed)), WORDS)?;
    let server = bytes(&p.announce(SERVER, &words(&own), WORDS)?);
    let client = bytes(&p.announce(CLIENT, &words(&revealed), WORDS)?);
    if !p.is_client() {
        check_reveal(&bytes(&commit), &client)?;
    }
    Ok(session_seed(&client, &server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpc::{run_two_party, EngineConfig};

    #[test]
    fn the_seed_depends_on_both_coins_and_the_commitment_binds() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_ne!(session_seed(&a, &b), session_seed(&b, &a));
        assert_ne!(session_seed(&a, &b), session_seed(&a, &a));
        assert!(check_reveal(&commitment(&a), &a).is_ok());
        let err = check_reveal(&commitment(&a), &b).unwrap_err().to_string();
        assert!(err.contains("commitment"), "{err}");
    }

    #[test]
    fn step_uniforms_are_24_bit_distinct_per_step_and_reproducible() {
        let seed = session_seed(&[3u8; 32], &[4u8; 32]);
        let u = StepUniforms::derive(&seed, 0, 4);
        assert_eq!((u.accept.len(), u.sample.len()), (4, 5));
        assert_eq!(u, StepUniforms::derive(&seed, 0, 4));
        assert_ne!(u, StepUniforms::derive(&seed, 1, 4));
        // The acceptance uniforms lead the stream whatever k is.
        assert_eq!(StepUniforms::derive(&seed, 0, 2).accept, u.accept[..2]);
        let all: Vec<u64> = (0..200)
            .flat_map(|s| StepUniforms::derive(&seed, s, 4).sample)
            .collect();
        assert!(all.iter().all(|&x| x < 1 << PROB_BITS));
        let mean = all.iter().sum::<u64>() as f64 / all.len() as f64 / (1u64 << PROB_BITS) as f64;
        // 1000 uniforms: standard deviation of the mean 0.009.
        assert!((mean - 0.5).abs() < 0.04, "mean {mean}");
        assert!(all.iter().any(|&x| x >= 1 << (PROB_BITS - 1)));
    }

    #[test]
    fn from_reals_encodes_at_prob_bits() {
        let u = StepUniforms::from_reals(&[0.0, 0.5], &[1.0, 0.25, 2.0]);
        let one = 1u64 << PROB_BITS;
        assert_eq!(u.accept, vec![0, one / 2]);
        assert_eq!(u.sample, vec![one - 1, one / 4, one - 1]);
    }

    fn seeds(planted: Option<PlantedCoin>) -> Result<(Seed, Seed)> {
        run_two_party(&EngineConfig::default(), move |p| toss(p, planted.as_ref()))
    }

    #[test]
    fn both_parties_get_one_fresh_seed_and_a_false_reveal_is_refused() {
        let (client, server) = seeds(None).unwrap();
        assert_eq!(client, server);
        assert_ne!(
            client,
            seeds(None).unwrap().0,
            "OS coins: a fresh seed per session"
        );
        // A planted coin still meets the server's fresh one.
        let coin = [7u8; 32];
        let honest = PlantedCoin {
            committed: coin,
            revealed: coin,
        };
        let (a, b) = (seeds(Some(honest)).unwrap(), seeds(Some(honest)).unwrap());
        assert_eq!(a.0, a.1);
        assert_ne!(a.0, b.0);
        let liar = PlantedCoin {
            committed: coin,
            revealed: [8u8; 32],
        };
        let err = seeds(Some(liar)).unwrap_err().to_string();
        assert!(err.contains("does not match its commitment"), "{err}");
    }
}
