//! The dealer's side of a session with two party processes, over links that [`crate::deploy`]
//! opened and paired (`post dealer`): each party receives its own 32-byte seed, drawn from the OS
//! for this session, which only it and the dealer hold; then the server (party 1) sends each
//! correlation request (JSON) and receives the corrections of its derived components, while the
//! client receives the public components (comparison keys' correction words) of the same request.
//! The dealer never sees an online message. Every request is checked against the limits the
//! served model's shape allows before anything is made for it.

use std::time::Duration;

use rand::{SeedableRng, TryRngCore};
use rand_chacha::ChaCha12Rng;

use super::correlation::Correlation;
use super::dealer::Dealer;
use super::dealer_wire::encode_words;
use super::error::{MpcError, Result};
use super::net::Transport;

/// The longest correlation request a server may send (JSON of a few numbers).
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// What the dealer lets one session ask for, from the shape of the model its server serves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestLimits {
    /// The most elements any component of one request may have.
    pub max_elements: usize,
    /// The most words one request may make in all (its memory while it is made).
    pub max_request_words: usize,
    /// The most words of fixed masks the dealer keeps for the session.
    pub max_mask_words: usize,
}

impl RequestLimits {
    /// Refuses a request past these limits, naming what it asked for.
    pub(crate) fn check(&self, dealer: &Dealer, corr: &Correlation) -> Result<()> {
        let (largest, words) = dealer.request_size(corr);
        if largest > self.max_elements || words > self.max_request_words {
            return Err(MpcError::Malformed(format!(
                "a request for {largest} elements ({words} words) is larger than the served model's shape allows ({} elements, {} words)",
                self.max_elements, self.max_request_words
            )));
        }
        // No size past the largest component either: beside a zero every component is empty,
        // yet the dealer's loops and column lists still run over the other sizes.
        if let Some(size) = named_sizes(corr).into_iter().max() {
            if size > self.max_elements {
                return Err(MpcError::Malformed(format!(
                    "a request naming a size of {size} (the served model's shape allows {} elements)",
                    self.max_elements
                )));
            }
        }
        if dealer
            .mask_words()
            .saturating_add(dealer.new_mask_words(corr))
            > self.max_mask_words
        {
            return Err(MpcError::Malformed(format!(
                "a request that grows the session's masks past {} words",
                self.max_mask_words
            )));
        }
        Ok(())
    }
}

/// The sizes a request names (a cut's row count may be anything: it only keeps fewer rows).
fn named_sizes(corr: &Correlation) -> Vec<usize> {
    match *corr {
        Correlation::MulTriple { len }
        | Correlation::SquarePair { len }
        | Correlation::Comparison { len, .. }
        | Correlation::ComparisonProducts { len, .. }
        | Correlation::Masked { len, .. } => vec![len],
        Correlation::MatmulTriple { batch, m, k, n } => vec![batch, m, k, n],
        Correlation::WeightMask { k, n, .. } | Correlation::WideWeightMask { k, n, .. } => {
            vec![k, n]
        }
        Correlation::WeightTriple { m, .. } | Correlation::WideWeightTriple { m, .. } => vec![m],
        Correlation::RowMask { rows, width, .. } => vec![rows, width],
        Correlation::RowTruncate { .. } => vec![],
        Correlation::WideProduct { len, per_row, .. } => vec![len, per_row],
        Correlation::HeadTriple { heads, m, .. } => vec![heads, m],
    }
}

/// One session: fresh OS seeds for both parties, then requests from the server until it leaves.
/// Each wait for a request honours `timeout`.
pub fn run_session(
    client: &mut dyn Transport,
    server: &mut dyn Transport,
    timeout: Duration,
    limits: &RequestLimits,
) -> Result<()> {
    let (mut seed0, mut seed1) = ([0u8; 32], [0u8; 32]);
    for seed in [&mut seed0, &mut seed1] {
        rand::rngs::OsRng
            .try_fill_bytes(seed)
            .map_err(|e| MpcError::BadConfig(format!("OS randomness: {e}")))?;
    }
    client.send(seed0.to_vec())?;
    server.send(seed1.to_vec())?;
    let mut dealer = Dealer::new(ChaCha12Rng::from_seed(seed0), ChaCha12Rng::from_seed(seed1));
    loop {
        let request = match server.recv(timeout, MAX_REQUEST_BYTES) {
            Ok(r) => r,
            Err(MpcError::PeerClosed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let corr: Correlation = serde_json::from_slice(&request)
            .map_err(|e| MpcError::Malformed(format!("a correlation request: {e}")))?;
        corr.check()?;
        dealer.check_mask(&corr)?;
        limits.check(&dealer, &corr)?;
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
        // One id names one mask: no second weight mask, no rows grown onto a weight mask or a
        // row mask of another width, no row cut of a weight mask.
        dealer.corrections(&Correlation::RowMask {
            id: 3,
            rows: 2,
            width: 8,
        });
        let reused = [
            Correlation::WeightMask { id: 1, k: 3, n: 4 },
            Correlation::WideWeightMask { id: 1, k: 3, n: 4 },
            Correlation::WeightMask { id: 3, k: 3, n: 4 },
            Correlation::RowMask {
                id: 1,
                rows: 1,
                width: 4,
            },
            Correlation::RowMask {
                id: 3,
                rows: 1,
                width: 4,
            },
            Correlation::RowTruncate { id: 2, rows: 1 },
            Correlation::WeightTriple { id: 3, m: 1 },
            Correlation::HeadTriple {
                id: 1,
                heads: 1,
                m: 1,
                keys: true,
            },
        ];
        for corr in &reused {
            assert!(dealer.check_mask(corr).is_err(), "{corr:?}");
        }
        let fine = [
            Correlation::RowMask {
                id: 3,
                rows: 1,
                width: 8,
            },
            Correlation::RowTruncate { id: 3, rows: 1 },
            Correlation::HeadTriple {
                id: 3,
                heads: 2,
                m: 1,
                keys: true,
            },
            Correlation::WeightMask { id: 4, k: 3, n: 4 },
        ];
        for corr in &fine {
            assert!(dealer.check_mask(corr).is_ok(), "{corr:?}");
        }
        // A weight mask is kept as two keys, not as its 12 words.
        assert_eq!(dealer.mask_words(), 4 + 2 * 3 * 4 + 2 * 8);
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;
    use crate::mpc::dealer_handle::DealerHandle;
    use crate::mpc::dealer_wire::{recv_seed, DealerLink};
    use crate::mpc::net::TcpTransport;
    use std::net::{TcpListener, TcpStream};

    const T: Duration = Duration::from_secs(30);

    fn open() -> RequestLimits {
        RequestLimits {
            max_elements: 1 << 20,
            max_request_words: 1 << 24,
            max_mask_words: 1 << 24,
        }
    }

    /// A dealer session on a thread, joined to both parties by TCP on loopback; returns each
    /// party's seed and handle (client, server) and the dealer thread. Both handles may be used
    /// from one thread: per request, the server's first (its request makes the client's public
    /// words, which wait in the client's socket).
    fn session(
        limits: RequestLimits,
    ) -> (
        [([u8; 32], DealerHandle); 2],
        std::thread::JoinHandle<Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let party = |role: u64| {
            std::thread::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                let mut link = DealerLink {
                    transport: Box::new(TcpTransport::new(stream, T).unwrap()),
                    timeout: T,
                };
                let seed = recv_seed(link.transport.as_mut(), T).unwrap();
                (seed, DealerHandle::remote(link, seed, role))
            })
        };
        // The client connects first, so the first accepted connection is the client's.
        let client = party(0);
        let (a, _) = listener.accept().unwrap();
        let server = party(1);
        let (b, _) = listener.accept().unwrap();
        let dealer = std::thread::spawn(move || {
            let mut a = TcpTransport::new(a, T)?;
            let mut b = TcpTransport::new(b, T)?;
            run_session(&mut a, &mut b, T, &limits)
        });
        ([client.join().unwrap(), server.join().unwrap()], dealer)
    }

    #[test]
    fn a_dealer_session_serves_both_parties_consistent_triples() {
        let ([(seed0, mut client), (seed1, mut server)], dealer) = session(open());
        let triple = Correlation::MulTriple { len: 5 };
        let b = server.get(&triple).unwrap();
        let a = client.get(&triple).unwrap();
        assert_ne!(seed0, seed1, "each party has its own seed");
        for i in 0..5 {
            let x = a[0][i].wrapping_add(b[0][i]);
            let y = a[1][i].wrapping_add(b[1][i]);
            let z = a[2][i].wrapping_add(b[2][i]);
            assert_eq!(x.wrapping_mul(y), z);
        }
        drop((client, server));
        dealer.join().unwrap().unwrap();
    }

    #[test]
    fn requests_past_the_shapes_limits_end_the_session() {
        // Issue 24: one request for a triple of 2^37 elements aborted the dealer; now the limits
        // refuse it before anything is allocated, and the dealer thread returns an error.
        let limits = RequestLimits {
            max_elements: 1000,
            max_request_words: 10_000,
            max_mask_words: 10_000,
        };
        let ([_client, (_, mut h)], dealer) = session(limits);
        assert!(h.get(&Correlation::MulTriple { len: 100 }).is_ok());
        drop(h.get(&Correlation::MulTriple { len: 1 << 37 }));
        let err = dealer.join().unwrap().unwrap_err().to_string();
        assert!(
            err.contains("larger than the served model's shape allows"),
            "{err}"
        );
    }

    #[test]
    fn what_the_client_receives_does_not_rebuild_the_servers_shares() {
        // Issue 10: a party gets only its own seed and the components meant for it. The client's
        // view (its seed and the public words) must not reproduce the server's shares.
        let requests = [
            Correlation::MulTriple { len: 64 },
            Correlation::Comparison {
                len: 4,
                bits: 63,
                skip: 0,
            },
        ];
        let ([(seed0, mut client), (seed1, mut server)], dealer) = session(open());
        let (mut view0, mut view1) = (Vec::new(), Vec::new());
        for c in &requests {
            view1.push(server.get(c).unwrap());
            view0.push(client.get(c).unwrap());
        }
        drop((client, server));
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
