//! The dealer as a process of its own, reached over TCP by both parties (`post dealer`).
//!
//! A party connects, sends a hello frame `[role, session]` (role 0 = client, 1 = server; session =
//! a random id the client chose and told the server), and receives its own 32-byte seed, drawn from
//! the OS for this session: the seed of its uniform dealer components, which only it and the dealer
//! hold. Once both roles of a session are connected, the server (party 1) sends each correlation
//! request (JSON) and receives the corrections of its derived components; the client receives the
//! public components (comparison keys' correction words) of the same request. The dealer never sees
//! an online message. Frames are length-prefixed, at most [`MAX_FRAME`] bytes.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use rand::{SeedableRng, TryRngCore};
use rand_chacha::ChaCha12Rng;

use super::dealer::{Correlation, Dealer};
use super::error::MpcError;
use super::net::{TcpTransport, Transport};
use super::party::Result;

/// How long a dealer or a party waits for the next frame before giving up.
pub const DEALER_TIMEOUT: Duration = Duration::from_secs(600);

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

/// A party's connection to the dealer process.
pub struct DealerLink {
    pub transport: TcpTransport,
}

impl DealerLink {
    /// Connects as `role` of `session` and returns the link and this party's seed.
    pub fn connect(addr: impl ToSocketAddrs, role: u64, session: u64) -> Result<(Self, [u8; 32])> {
        let stream = TcpStream::connect(addr)
            .map_err(|e| MpcError::BadConfig(format!("cannot reach the dealer: {e}")))?;
        let mut transport = TcpTransport::new(stream)?;
        transport.send(encode_words(&[vec![role, session]]))?;
        let seed = transport.recv(DEALER_TIMEOUT)?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| MpcError::Malformed("the dealer's seed is not 32 bytes".into()))?;
        Ok((Self { transport }, seed))
    }
}

/// Serves dealer sessions forever (or `sessions` of them): pairs connections by session id and runs
/// each pair on a thread. Returns only on a listener error or after `sessions` sessions.
pub fn serve_dealer(listener: TcpListener, sessions: Option<usize>) -> Result<()> {
    let mut waiting: HashMap<u64, (u64, TcpTransport)> = HashMap::new();
    let mut handles = Vec::new();
    let mut started = 0usize;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut transport = TcpTransport::new(stream)?;
        let hello = match transport
            .recv(Duration::from_secs(30))
            .and_then(|b| decode_words(&b))
        {
            Ok(h) if h.len() == 1 && h[0].len() == 2 && h[0][0] <= 1 => h[0].clone(),
            _ => {
                eprintln!("dealer: a connection sent no valid hello; dropped");
                continue;
            }
        };
        let (role, session) = (hello[0], hello[1]);
        match waiting.remove(&session) {
            Some((other_role, other)) if other_role != role => {
                let (client, server) = if role == 0 {
                    (transport, other)
                } else {
                    (other, transport)
                };
                handles.push(std::thread::spawn(move || {
                    if let Err(e) = run_session(client, server) {
                        eprintln!("dealer: session {session:x} ended: {e}");
                    }
                }));
                started += 1;
                if sessions.is_some_and(|n| started >= n) {
                    break;
                }
            }
            Some((other_role, other)) => {
                eprintln!("dealer: two connections as role {role} for session {session:x}; keeping the newer");
                drop((other_role, other));
                waiting.insert(session, (role, transport));
            }
            None => {
                waiting.insert(session, (role, transport));
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// One session: fresh OS seeds for both parties, then requests from the server until it leaves.
fn run_session(mut client: TcpTransport, mut server: TcpTransport) -> Result<()> {
    let (mut seed0, mut seed1) = ([0u8; 32], [0u8; 32]);
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed0)
        .map_err(|e| MpcError::BadConfig(format!("OS randomness: {e}")))?;
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed1)
        .map_err(|e| MpcError::BadConfig(format!("OS randomness: {e}")))?;
    client.send(seed0.to_vec())?;
    server.send(seed1.to_vec())?;
    let mut dealer = Dealer::new(ChaCha12Rng::from_seed(seed0), ChaCha12Rng::from_seed(seed1));
    loop {
        let request = match server.recv(DEALER_TIMEOUT) {
            Ok(r) => r,
            Err(MpcError::PeerClosed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let corr: Correlation = serde_json::from_slice(&request)
            .map_err(|e| MpcError::Malformed(format!("a correlation request: {e}")))?;
        corr.check()?;
        dealer.check_mask(&corr)?;
        let (corrections, public) = dealer.corrections(&corr);
        if !public.is_empty() {
            client.send(encode_words(&public))?;
        }
        server.send(encode_words(&corrections))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_requests_are_refused() {
        let bad = |bits, skip| Correlation::Comparison { len: 1, bits, skip };
        for (bits, skip) in [(0, 0), (64, 0), (20, 20), (20, 30)] {
            assert!(
                bad(bits, skip).check().is_err(),
                "{bits} bits skipping {skip}"
            );
        }
        assert!(bad(63, 0).check().is_ok() && bad(46, 24).check().is_ok());
        // A truncating product's row factor must divide its length and needs two operands.
        let wide = |len, operands, per_row| Correlation::WideProduct {
            len,
            shifts: vec![0; operands],
            per_row,
        };
        for (len, operands, per_row) in [(10, 2, 3), (10, 2, 0), (10, 1, 5)] {
            assert!(wide(len, operands, per_row).check().is_err());
        }
        assert!(wide(10, 2, 5).check().is_ok() && wide(10, 1, 1).check().is_ok());
        // Products against a mask the dealer never made, or made for the other kind of product.
        let mut dealer = Dealer::new(ChaCha12Rng::seed_from_u64(1), ChaCha12Rng::seed_from_u64(2));
        let plain = Correlation::WeightTriple { id: 1, m: 2 };
        let lifted = Correlation::WideWeightTriple { id: 2, m: 2 };
        assert!(dealer.check_mask(&plain).is_err() && dealer.check_mask(&lifted).is_err());
        dealer.corrections(&Correlation::WeightMask { id: 1, k: 3, n: 4 });
        dealer.corrections(&Correlation::WideWeightMask { id: 2, k: 3, n: 4 });
        assert!(dealer.check_mask(&plain).is_ok() && dealer.check_mask(&lifted).is_ok());
        let swapped = [
            Correlation::WeightTriple { id: 2, m: 2 },
            Correlation::WideWeightTriple { id: 1, m: 2 },
        ];
        assert!(swapped.iter().all(|c| dealer.check_mask(c).is_err()));
    }

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

#[cfg(test)]
mod session_tests {
    use super::*;
    use crate::mpc::dealer::DealerHandle;

    #[test]
    fn a_dealer_process_serves_both_parties_consistent_triples() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dealer = std::thread::spawn(move || serve_dealer(listener, Some(1)));
        let party = |role: u64| {
            std::thread::spawn(move || {
                let (link, seed) = DealerLink::connect(addr, role, 42).unwrap();
                let mut h = DealerHandle::remote(link, seed, role);
                h.get(&Correlation::MulTriple { len: 5 }).unwrap()
            })
        };
        let (a, b) = (party(0), party(1));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        for i in 0..5 {
            let x = a[0][i].wrapping_add(b[0][i]);
            let y = a[1][i].wrapping_add(b[1][i]);
            let z = a[2][i].wrapping_add(b[2][i]);
            assert_eq!(x.wrapping_mul(y), z);
        }
        dealer.join().unwrap().unwrap();
    }

    #[test]
    fn what_the_client_receives_does_not_rebuild_the_servers_shares() {
        // Issue 10: a party gets only its own seed and the components meant for it. The client's
        // view (its seed and the public words) must not reproduce the server's shares.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dealer = std::thread::spawn(move || serve_dealer(listener, Some(1)));
        let requests = [
            Correlation::MulTriple { len: 64 },
            Correlation::Comparison {
                len: 4,
                bits: 63,
                skip: 0,
            },
        ];
        let party = move |role: u64| {
            let requests = requests.clone();
            std::thread::spawn(move || {
                let (link, seed) = DealerLink::connect(addr, role, 7).unwrap();
                let mut h = DealerHandle::remote(link, seed, role);
                let got: Vec<_> = requests.iter().map(|c| h.get(c).unwrap()).collect();
                (seed, got)
            })
        };
        let (client, server) = (party(0), party(1));
        let ((seed0, view0), (seed1, view1)) = (client.join().unwrap(), server.join().unwrap());
        dealer.join().unwrap().unwrap();
        assert_ne!(seed0, seed1, "each party has its own seed");
        // The client, pretending to be the server with its own seed, gets other words.
        let mut pretend = ChaCha12Rng::from_seed(seed0);
        let guess: Vec<u64> = (0..64)
            .map(|_| rand::RngCore::next_u64(&mut pretend))
            .collect();
        assert_ne!(
            guess, view1[0][0],
            "the client's seed does not give the server's a"
        );
        let client_words: std::collections::HashSet<u64> =
            view0.iter().flatten().flatten().copied().collect();
        // No share of the server's additive components appears among the words the client holds.
        for (name, share) in [
            ("a", &view1[0][0]),
            ("b", &view1[0][1]),
            ("c", &view1[0][2]),
            ("comparison mask", &view1[1][0]),
            ("comparison root seeds", &view1[1][1]),
        ] {
            assert!(
                share.iter().all(|w| !client_words.contains(w)),
                "a server share of {name} is among the client's words"
            );
        }
        // The key correction words are the only words both hold, and they are identical.
        assert_eq!(view0[1][3], view1[1][3]);
        // The shares still combine: c = a b.
        for i in 0..64 {
            let a = view0[0][0][i].wrapping_add(view1[0][0][i]);
            let b = view0[0][1][i].wrapping_add(view1[0][1][i]);
            let c = view0[0][2][i].wrapping_add(view1[0][2][i]);
            assert_eq!(a.wrapping_mul(b), c);
        }
    }
}
