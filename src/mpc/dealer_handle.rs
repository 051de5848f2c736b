//! One party's access to the dealer ([`DealerHandle`]): its shares of each correlation, the free
//! components from its own seed and the rest from the dealer, which is a thread of this process
//! ([`start_dealer`]) or a process over a link ([`DealerHandle::remote`]).

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};

use rand::{RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha12Rng;

use super::correlation::{draw, Correlation, Sharing};
use super::dealer::Dealer;
use super::dealer_wire::{decode_words, frame_bytes, DealerLink};
use super::error::{MpcError, Result};

enum Source {
    /// Party 0 of a session with a dealer process: public components arrive over TCP.
    RemoteClient(DealerLink),
    /// Party 1 of a session with a dealer process: requests go out, corrections come back.
    RemoteServer(DealerLink),
    /// Party 0: everything from its own seed, except public components (comparison keys' correction
    /// words), which the dealer sends.
    Seed { public: Receiver<Vec<Vec<u64>>> },
    /// Party 1: free components from its seed, derived ones from the dealer thread.
    Dealer {
        requests: Sender<Correlation>,
        replies: Receiver<Vec<Vec<u64>>>,
    },
}

/// One party's access to the dealer.
pub struct DealerHandle {
    rng: ChaCha12Rng,
    source: Source,
    mask_shapes: HashMap<u64, (usize, usize)>,
    next_mask_id: u64,
    /// Bytes of corrections received so far.
    pub bytes_received: u64,
}

impl DealerHandle {
    /// This party's shares of the components of `corr`, in order.
    pub fn get(&mut self, corr: &Correlation) -> Result<Vec<Vec<u64>>> {
        corr.check()?;
        let comps = corr.components(&self.mask_shapes);
        match *corr {
            Correlation::WeightMask { id, k, n } | Correlation::WideWeightMask { id, k, n } => {
                self.mask_shapes.insert(id, (k, n));
            }
            Correlation::RowMask { id, rows, width } => {
                self.mask_shapes.entry(id).or_insert((0, width)).0 += rows;
            }
            Correlation::RowTruncate { id, rows } => {
                if let Some(shape) = self.mask_shapes.get_mut(&id) {
                    shape.0 = shape.0.min(rows);
                }
            }
            Correlation::WeightTriple { id, .. }
            | Correlation::HeadTriple { id, .. }
            | Correlation::WideWeightTriple { id, .. }
                if !self.mask_shapes.contains_key(&id) =>
            {
                return Err(MpcError::BadConfig(format!(
                    "product against unknown mask {id}"
                )));
            }
            _ => {}
        }
        let needs_public = comps.iter().any(|c| c.0 == Sharing::Public);
        let (party0, delivered) = match &mut self.source {
            Source::Seed { public } if needs_public => {
                (true, public.recv().map_err(|_| MpcError::PeerClosed)?)
            }
            Source::RemoteClient(link) if needs_public => {
                let limit =
                    frame_bytes(comps.iter().filter(|c| c.0 == Sharing::Public).map(|c| c.1));
                (
                    true,
                    decode_words(&link.transport.recv(link.timeout, limit)?)?,
                )
            }
            Source::Seed { .. } | Source::RemoteClient(_) => (true, Vec::new()),
            Source::Dealer { requests, replies } => {
                requests
                    .send(corr.clone())
                    .map_err(|_| MpcError::PeerClosed)?;
                (false, replies.recv().map_err(|_| MpcError::PeerClosed)?)
            }
            Source::RemoteServer(link) => {
                let request = serde_json::to_vec(corr)
                    .map_err(|e| MpcError::Malformed(format!("a correlation request: {e}")))?;
                link.transport.send(request)?;
                let limit = frame_bytes(comps.iter().filter(|c| c.2).map(|c| c.1));
                (
                    false,
                    decode_words(&link.transport.recv(link.timeout, limit)?)?,
                )
            }
        };
        // Party 0 takes its public components from the dealer, party 1 its derived ones; every
        // other component comes from the party's own seed.
        let mut delivered = delivered.into_iter();
        let mut out = Vec::with_capacity(comps.len());
        for &(sharing, len, derived) in &comps {
            let from_dealer = if party0 {
                sharing == Sharing::Public
            } else {
                derived
            };
            if from_dealer {
                let words = delivered.next().ok_or_else(|| {
                    MpcError::Malformed("the dealer sent too few components".into())
                })?;
                self.bytes_received += 8 * words.len() as u64;
                out.push(words);
            } else {
                out.push(draw(&mut self.rng, len));
            }
        }
        Ok(out)
    }

    /// This party's handle on a session with a dealer process (`role` 0: client, 1: server).
    pub fn remote(link: DealerLink, seed: [u8; 32], role: u64) -> Self {
        Self {
            rng: ChaCha12Rng::from_seed(seed),
            source: if role == 0 {
                Source::RemoteClient(link)
            } else {
                Source::RemoteServer(link)
            },
            mask_shapes: HashMap::new(),
            next_mask_id: 0,
            bytes_received: 0,
        }
    }

    /// A fresh id for a weight mask (both parties number them the same way).
    pub fn new_mask_id(&mut self) -> u64 {
        self.next_mask_id += 1;
        self.next_mask_id
    }
}

/// Starts a dealer thread and returns the two parties' handles. Each party's stream has its own
/// 256-bit seed, which only that party and the dealer hold: drawn from the OS, or derived from
/// `simulation_seed` for reproducible (not secure) simulation.
pub fn start_dealer(simulation_seed: Option<u64>) -> (DealerHandle, DealerHandle) {
    let (mut seed0, mut seed1) = ([0u8; 32], [0u8; 32]);
    match simulation_seed {
        Some(seed) => {
            let mut master = ChaCha12Rng::seed_from_u64(seed);
            master.fill_bytes(&mut seed0);
            master.fill_bytes(&mut seed1);
        }
        None => {
            rand::rngs::OsRng
                .try_fill_bytes(&mut seed0)
                .expect("the OS random number generator");
            rand::rngs::OsRng
                .try_fill_bytes(&mut seed1)
                .expect("the OS random number generator");
        }
    }
    let (req_tx, req_rx) = channel::<Correlation>();
    let (rep_tx, rep_rx) = channel::<Vec<Vec<u64>>>();
    let (pub_tx, pub_rx) = channel::<Vec<Vec<u64>>>();
    let mut dealer = Dealer::new(ChaCha12Rng::from_seed(seed0), ChaCha12Rng::from_seed(seed1));
    std::thread::spawn(move || {
        for corr in req_rx {
            let (corrections, public) = dealer.corrections(&corr);
            // Party 0 may have left once its part is done; party 1's reply is what matters.
            if !public.is_empty() {
                let _ = pub_tx.send(public);
            }
            if rep_tx.send(corrections).is_err() {
                break;
            }
        }
    });
    let handle = |seed, source| DealerHandle {
        rng: ChaCha12Rng::from_seed(seed),
        source,
        mask_shapes: HashMap::new(),
        next_mask_id: 0,
        bytes_received: 0,
    };
    (
        handle(seed0, Source::Seed { public: pub_rx }),
        handle(
            seed1,
            Source::Dealer {
                requests: req_tx,
                replies: rep_rx,
            },
        ),
    )
}
