//! Fixed-point encoding of reals in Z_2^64: x -> round(x * 2^f) as a two's-complement u64.
//!
//! Default f = 16 (CrypTen's choice). Why 16 for GPT-2: the exact truncation protocol needs every
//! product to stay below 2^61 before it is shifted, i.e. |a * b| < 2^(61 - 2f) = 2^29 ~ 5e8. GPT-2's
//! largest activations (residual outliers of a few thousand) square to ~1e7, and a LayerNorm sum of
//! squares over 1024 dimensions stays below 2^55 at 2f fractional bits, while f = 16 still resolves
//! 1.5e-5. SPU's f = 18 would leave only 3e7 of head-room for those products.

use super::error::MpcError;
use super::ring::RingTensor;

/// Bound on any ring value that enters truncation: |x| < 2^TRUNC_BOUND_BITS.
pub const TRUNC_BOUND_BITS: u32 = 61;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedPoint {
    pub frac_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        Self { frac_bits: 16 }
    }
}

impl FixedPoint {
    pub fn new(frac_bits: u32) -> Result<Self, MpcError> {
        if !(4..=24).contains(&frac_bits) {
            return Err(MpcError::BadConfig(format!(
                "frac_bits must be in 4..=24, got {frac_bits}"
            )));
        }
        Ok(Self { frac_bits })
    }

    pub fn scale(&self) -> f64 {
        (1u64 << self.frac_bits) as f64
    }

    /// Largest magnitude a fixed-point value may have: one that fits truncation after a product with 1.
    pub fn limit(&self) -> f64 {
        2f64.powi((TRUNC_BOUND_BITS - 2 * self.frac_bits) as i32)
    }

    /// The ring element of one real; out of range is an error, never a silent wrap.
    pub fn encode_one(&self, x: f64) -> Result<u64, MpcError> {
        if !x.is_finite() || x.abs() >= self.limit() {
            return Err(MpcError::OutOfRange {
                value: x,
                limit: self.limit(),
            });
        }
        Ok((x * self.scale()).round() as i64 as u64)
    }

    pub fn decode_one(&self, v: u64) -> f64 {
        v as i64 as f64 / self.scale()
    }

    pub fn encode(&self, shape: &[usize], xs: &[f64]) -> Result<RingTensor, MpcError> {
        let data = xs
            .iter()
            .map(|&x| self.encode_one(x))
            .collect::<Result<Vec<_>, _>>()?;
        RingTensor::new(shape, data)
    }

    /// Decodes, and in debug builds reports a value past the range (the sign of a wrapped product).
    pub fn decode(&self, t: &RingTensor) -> Result<Vec<f64>, MpcError> {
        let out: Vec<f64> = t.data().iter().map(|&v| self.decode_one(v)).collect();
        if cfg!(debug_assertions) {
            if let Some(&bad) = out.iter().find(|x| x.abs() >= self.limit()) {
                return Err(MpcError::OutOfRange {
                    value: bad,
                    limit: self.limit(),
                });
            }
        }
        Ok(out)
    }

    /// A public real as a ring constant (for local multiplication by public values, with truncation after).
    pub fn constant(&self, x: f64) -> u64 {
        (x * self.scale()).round() as i64 as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trips_within_half_an_ulp() {
        let fp = FixedPoint::default();
        for x in [0.0, 1.0, -1.0, 3.25, -2999.5, 1e-5, 123456.789, -5e8] {
            let back = fp.decode_one(fp.encode_one(x).unwrap());
            assert!((back - x).abs() <= 0.5 / fp.scale(), "{x} -> {back}");
        }
    }

    #[test]
    fn out_of_range_is_an_error() {
        let fp = FixedPoint::default();
        assert!(matches!(
            fp.encode_one(fp.limit() * 2.0),
            Err(MpcError::OutOfRange { .. })
        ));
        assert!(fp.encode_one(f64::NAN).is_err());
        assert!(FixedPoint::new(40).is_err());
    }
}
