//! Turning logits into a distribution and drawing from it.
//!
//! Temperature 0 means greedy: the distribution is one-hot on the argmax (lowest index on ties),
//! so the same speculative rule gives exact argmax matching with no special case.

use rand::Rng;

/// The index of the largest value (the first one on ties).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// softmax(logits / temperature) in f64, or one-hot on the argmax for temperature 0.
pub fn probabilities(logits: &[f32], temperature: f64) -> Vec<f64> {
    if temperature == 0.0 {
        let mut probs = vec![0.0; logits.len()];
        probs[argmax(logits)] = 1.0;
        return probs;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / temperature).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Draws an index from `probs` (which need not be normalised, only non-negative with a positive sum).
pub fn sample(probs: &[f64], rng: &mut impl Rng) -> u32 {
    let total: f64 = probs.iter().sum();
    let target = rng.random::<f64>() * total;
    let mut acc = 0.0;
    let mut last_positive = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p;
            last_positive = i;
            if target < acc {
                return i as u32;
            }
        }
    }
    // Rounding left `target` just past the sum: the last token with mass is the right answer.
    last_positive as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    #[test]
    fn temperature_zero_is_one_hot_on_the_first_maximum() {
        assert_eq!(
            probabilities(&[1.0, 3.0, 3.0, -2.0], 0.0),
            vec![0.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn softmax_matches_f64_reference() {
        let probs = probabilities(&[0.5, -1.0, 2.0], 0.7);
        let raw: Vec<f64> = [0.5f64, -1.0, 2.0]
            .iter()
            .map(|l| (l / 0.7).exp())
            .collect();
        let sum: f64 = raw.iter().sum();
        for (p, r) in probs.iter().zip(raw) {
            assert!((p - r / sum).abs() < 1e-12);
        }
    }

    #[test]
    fn sample_never_picks_zero_mass() {
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let probs = [0.0, 0.3, 0.0, 0.7, 0.0];
        let mut counts = [0usize; 5];
        for _ in 0..20_000 {
            counts[sample(&probs, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[0] + counts[2] + counts[4], 0);
        let frac = counts[3] as f64 / 20_000.0;
        assert!((frac - 0.7).abs() < 0.02, "{frac}");
    }
}
