//! One party of the two-party computation: its id, its end of the channel, its dealer handle,
//! the fixed-point encoding and the approximation settings. Protocols take `&mut Party` and touch
//! the network only through [`Party::open_many`], [`Party::open_wide`], [`Party::reveal_to`],
//! [`Party::announce`] and input sharing.

use rand::RngCore;
use rand_chacha::ChaCha12Rng;

use super::correlation::Correlation;
use super::dealer_handle::DealerHandle;
use super::error::MpcError;
use super::fixed::FixedPoint;
use super::net::Channel;
use super::ring::{wide_from_words, words_from_wide, RingTensor};

pub use super::error::Result;

/// Words of one message of [`Party::open_in_place`] (32 MB): larger openings, such as a large
/// vocabulary's token table, travel in several.
pub const OPEN_CHUNK_WORDS: usize = 1 << 22;

/// Party 0 is the client (prompt owner), party 1 the server (model owner).
pub const CLIENT: usize = 0;
pub const SERVER: usize = 1;

/// Knobs of the non-linear approximations; every field is documented where it is used.
#[derive(Debug, Clone, PartialEq)]
pub struct ApproxConfig {
    /// exp(x) = s(x / 2^n)^(2^n) for a quartic start s: n squarings (see `protocols::exp`).
    pub exp_iters: u32,
    /// Elements compared at once in each level of the max tournament (2 = binary tree).
    pub max_arity: usize,
}

impl Default for ApproxConfig {
    fn default() -> Self {
        Self {
            exp_iters: 5,
            max_arity: 2,
        }
    }
}

pub struct Party {
    pub id: usize,
    pub net: Channel,
    pub dealer: DealerHandle,
    pub fp: FixedPoint,
    pub approx: ApproxConfig,
    /// This party's own private randomness (input sharing, its coin in the coin toss).
    rng: ChaCha12Rng,
    /// Every value opened to both parties, one entry per opening, while recording (leakage tests).
    openings: Option<Vec<Vec<u64>>>,
}

impl Party {
    pub fn new(
        id: usize,
        net: Channel,
        dealer: DealerHandle,
        fp: FixedPoint,
        approx: ApproxConfig,
        rng: ChaCha12Rng,
    ) -> Self {
        Self {
            id,
            net,
            dealer,
            fp,
            approx,
            rng,
            openings: None,
        }
    }

    /// Starts keeping every opened value (what this party learns from each opening).
    pub fn record_openings(&mut self) {
        self.openings = Some(Vec::new());
    }

    /// The values opened since recording started, one entry per opening.
    pub fn take_openings(&mut self) -> Vec<Vec<u64>> {
        self.openings.take().unwrap_or_default()
    }

    /// Fills `out` from this party's private randomness (its coin in the session's coin toss).
    pub fn random_bytes(&mut self, out: &mut [u8]) {
        self.rng.fill_bytes(out);
    }

    pub fn is_client(&self) -> bool {
        self.id == CLIENT
    }

    /// Runs `f` with its traffic and time counted under `label` (nested labels form a path).
    pub fn labelled<T>(
        &mut self,
        label: &str,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.net.push_label(label);
        let out = f(self);
        self.net.pop_label();
        out
    }

    /// This party's shares of a correlation, as tensors of the given shapes. Dealer time is offline.
    pub fn deal(&mut self, corr: &Correlation, shapes: &[&[usize]]) -> Result<Vec<RingTensor>> {
        self.net.clock();
        let before = self.dealer.bytes_received;
        let started = std::time::Instant::now();
        let parts = self.dealer.get(corr)?;
        self.net
            .record_dealer_bytes((self.dealer.bytes_received - before) as usize);
        self.net.record_dealer_time(started.elapsed().as_secs_f64());
        self.net.skip_time();
        parts
            .into_iter()
            .zip(shapes)
            .map(|(values, shape)| RingTensor::new(shape, values))
            .collect()
    }

    /// This party's shares of a correlation as flat words, one vector per component length.
    pub fn deal_words(&mut self, corr: &Correlation, lens: &[usize]) -> Result<Vec<Vec<u64>>> {
        let shapes: Vec<[usize; 1]> = lens.iter().map(|&len| [len]).collect();
        let shapes: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
        Ok(self
            .deal(corr, &shapes)?
            .into_iter()
            .map(RingTensor::into_data)
            .collect())
    }

    /// Opens additive shares to both parties in one round (one exchange of every share at once).
    pub fn open_many(&mut self, shares: &[&RingTensor]) -> Result<Vec<RingTensor>> {
        let flat: Vec<u64> = shares
            .iter()
            .flat_map(|s| s.data().iter().copied())
            .collect();
        let theirs = self.net.exchange_u64s(&flat)?;
        let opened: Vec<u64> = flat
            .iter()
            .zip(&theirs)
            .map(|(a, b)| a.wrapping_add(*b))
            .collect();
        if let Some(log) = self.openings.as_mut() {
            log.push(opened.clone());
        }
        RingTensor::split_like(&opened, shares)
    }

    /// Opens 128-bit additive shares (mod 2^128) to both parties in one round: 16 bytes an
    /// element each way.
    pub fn open_wide(&mut self, shares: &[u128]) -> Result<Vec<u128>> {
        let theirs = wide_from_words(&self.net.exchange_u64s(&words_from_wide(shares))?);
        let opened: Vec<u128> = shares
            .iter()
            .zip(&theirs)
            .map(|(a, b)| a.wrapping_add(*b))
            .collect();
        if let Some(log) = self.openings.as_mut() {
            log.push(words_from_wide(&opened));
        }
        Ok(opened)
    }

    /// [`Self::open`] into the share's own buffer, a message of at most [`OPEN_CHUNK_WORDS`] at
    /// a time (one round each): a weight-sized opening holds no second weight-sized copy.
    pub fn open_in_place(&mut self, share: &mut RingTensor) -> Result<()> {
        for chunk in share.data_mut().chunks_mut(OPEN_CHUNK_WORDS) {
            let theirs = self.net.exchange_u64s(chunk)?;
            for (a, b) in chunk.iter_mut().zip(&theirs) {
                *a = a.wrapping_add(*b);
            }
        }
        if let Some(log) = self.openings.as_mut() {
            log.push(share.data().to_vec());
        }
        Ok(())
    }

    pub fn open(&mut self, share: &RingTensor) -> Result<RingTensor> {
        Ok(self.open_many(&[share])?.remove(0))
    }

    /// Reveals a shared value to `to` only (one message one way); the other party gets `None`.
    pub fn reveal_to(&mut self, to: usize, share: &RingTensor) -> Result<Option<RingTensor>> {
        if self.id == to {
            let theirs = self.net.recv_u64s(share.len())?;
            let sum = share
                .data()
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a.wrapping_add(*b))
                .collect();
            Ok(Some(RingTensor::new(share.shape(), sum)?))
        } else {
            self.net.send_u64s(share.data())?;
            Ok(None)
        }
    }

    /// A public value that `owner` tells the other party (one message one way), such as a shape
    /// or a cache length. Both get the values; the channel logs them apart from the shared traffic.
    pub fn announce(&mut self, owner: usize, values: &[u64], len: usize) -> Result<Vec<u64>> {
        if self.id == owner {
            if values.len() != len {
                return Err(MpcError::ShapeMismatch {
                    op: "announce",
                    left: vec![values.len()],
                    right: vec![len],
                });
            }
            self.net.send_public(values)?;
            Ok(values.to_vec())
        } else {
            self.net.recv_public(len)
        }
    }

    /// Secret-shares a private input of `owner`: the owner sends a uniform share and keeps the rest.
    /// The other party passes `None` and the shape.
    pub fn share_input(
        &mut self,
        owner: usize,
        value: Option<&RingTensor>,
        shape: &[usize],
    ) -> Result<RingTensor> {
        if self.id == owner {
            let value =
                value.ok_or_else(|| MpcError::BadConfig("the owner must pass its input".into()))?;
            if value.shape() != shape {
                return Err(MpcError::ShapeMismatch {
                    op: "share_input",
                    left: value.shape().to_vec(),
                    right: shape.to_vec(),
                });
            }
            let theirs: Vec<u64> = (0..value.len()).map(|_| self.rng.next_u64()).collect();
            self.net.send_u64s(&theirs)?;
            let mine = value
                .data()
                .iter()
                .zip(&theirs)
                .map(|(v, t)| v.wrapping_sub(*t))
                .collect();
            RingTensor::new(shape, mine)
        } else {
            let n = shape.iter().product();
            RingTensor::new(shape, self.net.recv_u64s(n)?)
        }
    }

    /// A public constant as a share: the client holds it, the server holds zero.
    pub fn public(&self, value: &RingTensor) -> RingTensor {
        if self.is_client() {
            value.clone()
        } else {
            RingTensor::zeros(value.shape())
        }
    }

    /// Adds a public constant (same value in every element) to a share.
    pub fn add_constant(&self, x: &RingTensor, c: u64) -> RingTensor {
        if self.is_client() {
            x.map(|v| v.wrapping_add(c))
        } else {
            x.clone()
        }
    }

    /// Adds a public tensor to a share.
    pub fn add_public(&self, x: &RingTensor, c: &RingTensor) -> Result<RingTensor> {
        if self.is_client() {
            x.add(c)
        } else {
            Ok(x.clone())
        }
    }
}
