//! Less-than-zero: shares of x -> additive shares of the bit [x < 0], i.e. the top bit of x, by
//! function secret sharing from the dealer (Boyle et al. 2021; the construction SIGMA and Orca use).
//!
//! The dealer draws a uniform mask r and gives the parties shares of r, shares of m = msb(r) and
//! the two keys of a distributed comparison function ([`crate::mpc::dcf`]) for
//! g(z) = (1 - 2m) [z < r_lo] on 63-bit z, where r_lo is r without its top bit. The parties open
//! y = x + r (uniform, so it reveals nothing) and, with y_lo = y without its top bit,
//!   msb(x) = msb(y) xor m xor [y_lo < r_lo]          (the borrow of y - r into the top bit)
//!   m xor c = m + (1 - 2m) c,  so  shares of m xor c = shares of m + DCF(y_lo),
//! and xor with the public msb(y) is local (1 - v where msb(y) = 1). Exact for every x.
//!
//! Cost: 1 round, 8 bytes per element each way. Dealer bytes: party 1 gets its share of m
//! (8 bytes an element) and both parties get the keys' correction words (`dcf::WORDS` * 8 = 1,536
//! bytes an element); each party's root seeds and shares of r come from its own seed. Evaluating a
//! key takes 189 AES blocks per element and party. The Kogge-Stone circuit this replaces took
//! 8 rounds and 192 bytes an element each way. The opening can share a round with other protocols
//! ([`Round::ltz`]).
//!
//! Bounded inputs ([`Round::ltz_bounded`]): when x is known to lie in
//! [-2^k, 2^k), its sign is bit k of x, so the same construction on bit k and the low k bits
//! (m = bit k of r, a DCF over k bits) is exact with a key of k levels instead of 63: evaluation
//! and key bytes shrink by k / 63.
//!
//! Coarse comparisons ([`Round::ltz_coarse`]): a key may also skip the low s bits,
//! comparing y_lo >> s with r_lo >> s (k - s levels). That borrow differs from the exact one only
//! when the two agree above bit s and y_lo < r_lo, i.e. when x lies in (-2^s, 0) or (2^k - 2^s,
//! 2^k): there the bit may flip (x just below zero reading as non-negative, x just below 2^k as
//! negative). So on [-2^k, 2^k - 2^s] the answer is exact except within 2^s below zero. A piecewise function whose pieces agree near their cut-off (GeLU's, within 1.2e-4
//! over 2^-8) can compare at that resolution: GeLU keeps 8 fractional bits of x - t, so its keys
//! take 46 - f - extra + 8 levels (22 in the forward, 38 on f-bit inputs) instead of 46.
//!
//! Many thresholds, one key ([`Round::ltz_thresholds`]): [x < t] for public t is [x - t < 0],
//! and (x - t) + r = y - t is public once y = x + r is open, so the key for r evaluated at y - t
//! answers it (the top bit of y - t read per threshold). One opening and one key serve every
//! threshold on the same value; only the evaluations grow with their number. The outputs are
//! shares of exactly what separate comparisons of x - t would give, and a key's evaluations at
//! many public points reveal nothing more than one (each party's key alone is pseudorandom). The
//! grids of the reciprocal and of LayerNorm (over a hundred points a row) and GeLU's four cut-offs
//! take one key a value this way.
//!
//! Products with the bit in the same round ([`stage_products`]). With x = y - r public-minus-shared,
//! t x = t y - t r, and t y is local; t r follows from u = m xor c (t = u, or 1 - u when msb(y) = 1)
//! and u r = m r + (1 - 2m) c r, so a DCF whose payload also carries (1 - 2m) r gives it, with the
//! dealer's shares of m r. Any other value w opened as w + r_w in the same round is multiplied
//! alike (payload word (1 - 2m) r_w). So select(t, a, b) and max(a, b) = a - [a - b < 0] (a - b)
//! take the comparison's one round instead of two, 8 bytes an element and operand each way. The key
//! may be bounded and coarse as above ([`Round::ltz_products_coarse`]): the products are exact for
//! whichever bit it gives (softmax's maximum, [`super::max::max_value_coarse`]).

use super::round::{Round, Slot, Stage};
use crate::mpc::correlation::Correlation;
use crate::mpc::dcf;
use crate::mpc::error::MpcError;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::{wide_from_words, RingTensor};
use rayon::prelude::*;

/// A comparison waiting for its opening: this party's key material.
pub(crate) struct LtzStage {
    roots: Vec<u128>,
    m: Vec<u64>,
    words: Vec<u64>,
    bits: usize,
    skip: usize,
}

/// Deals the keys for `x`, whose elements lie in [-2^bits, 2^bits) (`bits` = [`dcf::BITS`]: any
/// ring element), comparing above bit `skip` (0: exact), and returns the masked value x + r to open.
pub(crate) fn stage(
    p: &mut Party,
    x: &[u64],
    bits: usize,
    skip: usize,
) -> Result<(Vec<u64>, LtzStage)> {
    let len = x.len();
    let keys = p.deal(
        &Correlation::Comparison { len, bits, skip },
        &[
            &[len],
            &[2 * len],
            &[len],
            &[dcf::words(1, bits - skip) * len],
        ],
    )?;
    let mut keys = keys.into_iter().map(RingTensor::into_data);
    let mut next = || keys.next().unwrap_or_default();
    let (r, roots, m, words) = (next(), next(), next(), next());
    let masked = x.iter().zip(&r).map(|(x, r)| x.wrapping_add(*r)).collect();
    let roots = wide_from_words(&roots);
    Ok((
        masked,
        LtzStage {
            roots,
            m,
            words,
            bits,
            skip,
        },
    ))
}

impl LtzStage {
    /// Shares of [x < t] for every public t of `thresholds` (threshold-major), from the one
    /// opened y = x + r: y - t = (x - t) + r is x - t masked by the same r, so the one key
    /// evaluated at y - t gives [x - t < 0], with the top bit of y - t read per threshold.
    pub(crate) fn finish_at(&self, party: usize, y: &[u64], thresholds: &[u64]) -> Vec<u64> {
        let client = party == crate::mpc::CLIENT;
        let bits = self.bits;
        let shifted: Vec<u64> = thresholds
            .iter()
            .flat_map(|t| y.iter().map(move |y| y.wrapping_sub(*t)))
            .collect();
        let shares = evaluate_keys(
            party,
            &self.roots,
            &self.words,
            &shifted,
            (1, bits, self.skip),
        );
        shares
            .iter()
            .zip(self.m.iter().cycle())
            .zip(&shifted)
            .map(|((v, m), y)| {
                let g = m.wrapping_add(*v);
                if (y >> bits) & 1 == 0 {
                    g
                } else if client {
                    1u64.wrapping_sub(g)
                } else {
                    g.wrapping_neg()
                }
            })
            .collect()
    }
}

/// This party's DCF outputs (`width` words each) at bits `skip..bits` of every opened y, in
/// parallel chunks. `y` may hold several inputs per key (key i takes y[i], y[len + i], ...).
fn evaluate_keys(
    party: usize,
    roots: &[u128],
    words: &[u64],
    y: &[u64],
    (width, bits, skip): (usize, usize, usize),
) -> Vec<u64> {
    let low = (1u64 << bits) - 1;
    let inputs: Vec<u64> = y.iter().map(|y| (y & low) >> skip).collect();
    let levels = bits - skip;
    let key_len = dcf::words(width, levels);
    let len = roots.len();
    const CHUNK: usize = 512;
    // Chunks of consecutive keys, for each pass over the keys.
    let chunks: Vec<(usize, usize)> = (0..inputs.len() / len.max(1))
        .flat_map(|pass| (0..len).step_by(CHUNK).map(move |start| (pass, start)))
        .collect();
    chunks
        .par_iter()
        .flat_map_iter(|&(pass, start)| {
            let end = (start + CHUNK).min(len);
            let xs = &inputs[pass * len + start..pass * len + end];
            let keys = &words[start * key_len..end * key_len];
            dcf::evaluate_many(party, &roots[start..end], keys, xs, (width, levels))
        })
        .collect()
}

/// A comparison of x and the products of its bit with x and with other values: this party's
/// key material, waiting for the opening of x + r_0 and of every w_j + r_j.
pub(crate) struct LtzProductStage {
    roots: Vec<u128>,
    /// Shares of the masks r_0 .. r_(k-1).
    masks: Vec<Vec<u64>>,
    m: Vec<u64>,
    /// Shares of m r_j.
    m_masks: Vec<Vec<u64>>,
    words: Vec<u64>,
    bits: usize,
    skip: usize,
}

/// Deals the keys for [x < 0] with its products by x and by each of `others`, and returns the
/// values to open: x + r_0, then each w_j + r_j. The key compares bits `skip..bits` of x, as
/// [`stage`] does (`bits` = [`dcf::BITS`], `skip` = 0: exact for any x); the products are exact
/// for whatever bit it gives.
pub(crate) fn stage_products(
    p: &mut Party,
    x: &[u64],
    others: &[&[u64]],
    (bits, skip): (usize, usize),
) -> Result<(Vec<u64>, LtzProductStage)> {
    let len = x.len();
    let operands = 1 + others.len();
    let width = 1 + operands;
    if width > dcf::MAX_WIDTH {
        return Err(MpcError::BadConfig(format!(
            "a comparison multiplies at most {} values in its round, got {operands}",
            dcf::MAX_WIDTH - 1
        )));
    }
    let mut shapes = vec![vec![len], vec![2 * len]];
    shapes.extend(vec![vec![len]; others.len() + 1 + operands]);
    shapes.push(vec![dcf::words(width, bits - skip) * len]);
    let shape_refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
    let parts = p.deal(
        &Correlation::ComparisonProducts {
            len,
            operands,
            bits,
            skip,
        },
        &shape_refs,
    )?;
    let mut parts = parts.into_iter().map(RingTensor::into_data);
    let mut next = || parts.next().unwrap_or_default();
    let r0 = next();
    let roots = wide_from_words(&next());
    let mut masks = vec![r0];
    masks.extend((0..others.len()).map(|_| next()));
    let m = next();
    let m_masks = (0..operands).map(|_| next()).collect();
    let words = next();
    let mut masked = Vec::with_capacity(len * operands);
    for (v, r) in std::iter::once(x).chain(others.iter().copied()).zip(&masks) {
        if v.len() != len {
            return Err(MpcError::ShapeMismatch {
                op: "comparison products",
                left: vec![len],
                right: vec![v.len()],
            });
        }
        masked.extend(v.iter().zip(r).map(|(v, r)| v.wrapping_add(*r)));
    }
    Ok((
        masked,
        LtzProductStage {
            roots,
            masks,
            m,
            m_masks,
            words,
            bits,
            skip,
        },
    ))
}

impl LtzProductStage {
    /// The bit, then one product per operand.
    pub(crate) fn outputs(&self) -> usize {
        1 + self.masks.len()
    }

    /// From the opened values: shares of t = [x < 0], then of t x, then of t w_j for each other value.
    pub(crate) fn finish(self, party: usize, opened: &[u64]) -> Vec<Vec<u64>> {
        let client = party == crate::mpc::CLIENT;
        let operands = self.masks.len();
        let width = 1 + operands;
        let len = self.m.len();
        let y = &opened[..len];
        let payloads = evaluate_keys(
            party,
            &self.roots,
            &self.words,
            y,
            (width, self.bits, self.skip),
        );
        let mut out = vec![Vec::with_capacity(len); 1 + operands];
        for i in 0..len {
            let v = &payloads[i * width..(i + 1) * width];
            let u = self.m[i].wrapping_add(v[0]);
            let flip = (y[i] >> self.bits) & 1 == 1;
            // t = u, or 1 - u when the opened top bit is set.
            let t = match (flip, client) {
                (false, _) => u,
                (true, true) => 1u64.wrapping_sub(u),
                (true, false) => u.wrapping_neg(),
            };
            out[0].push(t);
            for j in 0..operands {
                let ur = self.m_masks[j][i].wrapping_add(v[1 + j]);
                let tr = if flip {
                    self.masks[j][i].wrapping_sub(ur)
                } else {
                    ur
                };
                let opened_j = opened[j * len + i];
                out[1 + j].push(opened_j.wrapping_mul(t).wrapping_sub(tr));
            }
        }
        out
    }
}

/// The slots of a comparison with products ([`Round::ltz_products`]).
pub struct LtzProducts {
    /// Shares of t = [x < 0].
    pub bit: Slot,
    /// Shares of t x.
    pub times_x: Slot,
    /// Shares of t w for each other value w.
    pub times: Vec<Slot>,
}

/// A staged comparison against public thresholds and the shape of its input, as a round runs it.
struct LtzJob {
    stage: LtzStage,
    thresholds: Vec<u64>,
    shape: Vec<usize>,
}

impl Stage for LtzJob {
    fn outputs(&self) -> usize {
        self.thresholds.len()
    }

    fn finish(self: Box<Self>, party: usize, opened: &[u64]) -> Result<Vec<RingTensor>> {
        let bits = self.stage.finish_at(party, opened, &self.thresholds);
        let len = opened.len();
        (0..self.thresholds.len())
            .map(|i| RingTensor::new(&self.shape, bits[i * len..(i + 1) * len].to_vec()))
            .collect()
    }
}

/// A staged comparison with products and the shape of its input, as a round runs it.
struct LtzProductsJob(LtzProductStage, Vec<usize>);

impl Stage for LtzProductsJob {
    fn outputs(&self) -> usize {
        self.0.outputs()
    }

    fn finish(self: Box<Self>, party: usize, opened: &[u64]) -> Result<Vec<RingTensor>> {
        let LtzProductsJob(stage, shape) = *self;
        stage
            .finish(party, opened)
            .into_iter()
            .map(|out| RingTensor::new(&shape, out))
            .collect()
    }
}

impl Round {
    /// Shares of [x < 0] (see the module doc).
    pub fn ltz(&mut self, p: &mut Party, x: &RingTensor) -> Result<Slot> {
        self.ltz_bounded(p, x, dcf::BITS as u32)
    }

    /// Shares of [x < 0] for x known to lie in [-2^bits, 2^bits): the comparison's key covers the
    /// low `bits` bits only (one level of key evaluation a bit, 63 for a whole ring element).
    /// Elements outside that range get a wrong bit.
    pub fn ltz_bounded(&mut self, p: &mut Party, x: &RingTensor, bits: u32) -> Result<Slot> {
        self.ltz_coarse(p, x, bits, 0)
    }

    /// [`Self::ltz_bounded`] at the resolution of 2^`skip`: the key skips the low `skip` bits
    /// (`bits - skip` levels). Exact on [-2^bits, 2^bits - 2^skip] except that x in (-2^skip, 0)
    /// may read as non-negative (see the module doc): for functions whose pieces agree near
    /// their cut-offs.
    pub fn ltz_coarse(
        &mut self,
        p: &mut Party,
        x: &RingTensor,
        bits: u32,
        skip: u32,
    ) -> Result<Slot> {
        Ok(self.ltz_thresholds(p, x, &[0], bits, skip)?[0])
    }

    /// Shares of [x < t] for each public t of `thresholds` (raw ring values at x's scale), one
    /// slot each, from one key and one opening of x + r: each x - t is x + r less the public t,
    /// so the key for r is evaluated at every (x + r) - t. Each x - t must lie in
    /// [-2^bits, 2^bits), and the key resolves it to 2^`skip` as [`Self::ltz_coarse`] does: exact
    /// on [-2^bits, 2^bits - 2^skip] but for x - t in (-2^skip, 0), which may read as non-negative.
    /// Dealer bytes and openings are those of one comparison whatever the number of thresholds;
    /// only the key evaluations grow with it.
    pub fn ltz_thresholds(
        &mut self,
        p: &mut Party,
        x: &RingTensor,
        thresholds: &[u64],
        bits: u32,
        skip: u32,
    ) -> Result<Vec<Slot>> {
        if !(1..=dcf::BITS as u32).contains(&bits) || skip >= bits || thresholds.is_empty() {
            return Err(MpcError::BadConfig(format!(
                "a comparison over {bits} bits skipping {skip} against {} thresholds: at most {} \
                 bits, fewer skipped, and at least one threshold",
                thresholds.len(),
                dcf::BITS
            )));
        }
        let (masked, stage) = stage(p, x.data(), bits as usize, skip as usize)?;
        let job = LtzJob {
            stage,
            thresholds: thresholds.to_vec(),
            shape: x.shape().to_vec(),
        };
        let first = self.push(masked, Box::new(job));
        Ok((0..thresholds.len()).map(|i| first.offset(i)).collect())
    }

    /// Shares of t = [x < 0], of t x and of t w for each of `others` (same shape as x), all from
    /// the comparison's own opening (see [`stage_products`]).
    pub fn ltz_products(
        &mut self,
        p: &mut Party,
        x: &RingTensor,
        others: &[&RingTensor],
    ) -> Result<LtzProducts> {
        self.ltz_products_coarse(p, x, others, dcf::BITS as u32, 0)
    }

    /// [`Self::ltz_products`] with the key of [`Self::ltz_coarse`]: x in [-2^bits, 2^bits),
    /// resolved to 2^`skip`. The products are exact for the bit the key gives.
    pub fn ltz_products_coarse(
        &mut self,
        p: &mut Party,
        x: &RingTensor,
        others: &[&RingTensor],
        bits: u32,
        skip: u32,
    ) -> Result<LtzProducts> {
        if !(1..=dcf::BITS as u32).contains(&bits) || skip >= bits {
            return Err(MpcError::BadConfig(format!(
                "a comparison over {bits} bits skipping {skip}: at most {} bits, and fewer skipped",
                dcf::BITS
            )));
        }
        for w in others {
            if w.shape() != x.shape() {
                return Err(MpcError::ShapeMismatch {
                    op: "comparison products",
                    left: x.shape().to_vec(),
                    right: w.shape().to_vec(),
                });
            }
        }
        let data: Vec<&[u64]> = others.iter().map(|w| w.data()).collect();
        let (masked, stage) = stage_products(p, x.data(), &data, (bits as usize, skip as usize))?;
        let first = self.push(masked, Box::new(LtzProductsJob(stage, x.shape().to_vec())));
        Ok(LtzProducts {
            bit: first,
            times_x: first.offset(1),
            times: (0..others.len()).map(|j| first.offset(2 + j)).collect(),
        })
    }
}

/// Additive shares of [x < 0] (integers 0/1) for several tensors at once: 1 round in all.
pub fn ltz_many(p: &mut Party, xs: &[&RingTensor]) -> Result<Vec<RingTensor>> {
    p.labelled("ltz", |p| {
        let mut round = Round::new();
        let slots = xs
            .iter()
            .map(|x| round.ltz(p, x))
            .collect::<Result<Vec<_>>>()?;
        let mut out = round.run(p)?;
        Ok(slots.into_iter().map(|s| out.take(s)).collect())
    })
}

pub fn ltz(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    Ok(ltz_many(p, &[x])?.remove(0))
}

/// 1 - b for shared integer bits b.
pub fn not(p: &Party, b: &RingTensor) -> RingTensor {
    p.add_constant(&b.neg(), 1)
}
