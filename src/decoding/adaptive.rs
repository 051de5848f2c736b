//! How many drafts to verify per step. `Fixed(K)` is the paper's rule; `Adaptive` (beyond the paper)
//! picks K each step to maximise expected tokens per second of the verification pass:
//!
//! - acceptance: each draft is taken as accepted with probability a, independently, given the
//!   ones before it were, so a step emits E(K) = (1 - a^(K+1)) / (1 - a) tokens on average; a is
//!   estimated from the steps so far as accepted / (accepted + rejections), with one accepted and
//!   one rejected draft as prior (a step with fewer accepted drafts than drafted ends in one
//!   rejection);
//! - cost: a pass over K + 1 tokens costs c(K) = c0 + c1 (K + 1), fitted by least squares to the
//!   passes measured so far (the verifier's clock: simulated seconds for the secure verifier). The
//!   first two steps try K_max / 2 and K_max, so that the fit has two points; without a clock
//!   (plaintext) c is flat and the policy drafts K_max.

/// Chooses the draft length of each step and learns from its outcome.
pub trait DraftPolicy {
    /// Drafts to verify in the next step (at least 1; the loop may cut it to fit the window).
    fn next(&self) -> usize;
    /// What a step with `k` drafts gave: accepted drafts, and the pass's cost when measured.
    fn observe(&mut self, k: usize, accepted: usize, seconds: Option<f64>);
}

/// The same K every step.
pub struct Fixed(pub usize);

impl DraftPolicy for Fixed {
    fn next(&self) -> usize {
        self.0
    }
    fn observe(&mut self, _k: usize, _accepted: usize, _seconds: Option<f64>) {}
}

/// Expected tokens per measured second; see the module comment.
#[derive(Debug, Clone)]
pub struct Adaptive {
    k_max: usize,
    steps: usize,
    accepted: usize,
    rejections: usize,
    /// (K + 1, seconds) of the measured passes.
    passes: Vec<(f64, f64)>,
}

impl Adaptive {
    pub fn new(k_max: usize) -> Self {
        Self {
            k_max: k_max.max(1),
            steps: 0,
            accepted: 0,
            rejections: 0,
            passes: Vec::new(),
        }
    }

    /// The per-draft acceptance estimate.
    pub fn acceptance(&self) -> f64 {
        (self.accepted as f64 + 1.0) / ((self.accepted + self.rejections) as f64 + 2.0)
    }

    /// Expected tokens emitted by a step with `k` drafts at acceptance `a`.
    pub fn expected_tokens(a: f64, k: usize) -> f64 {
        (0..=k).map(|i| a.powi(i as i32)).sum()
    }

    /// The fitted (c0, c1) of c(K) = c0 + c1 (K + 1); None before two distinct K were measured.
    pub fn cost_fit(&self) -> Option<(f64, f64)> {
        let n = self.passes.len() as f64;
        if n < 2.0 {
            return None;
        }
        let mx = self.passes.iter().map(|p| p.0).sum::<f64>() / n;
        let my = self.passes.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = self.passes.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx == 0.0 {
            return None;
        }
        let sxy: f64 = self.passes.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        // A pass never gets cheaper with more tokens: noise must not make c1 negative.
        let c1 = (sxy / sxx).max(0.0);
        Some(((my - c1 * mx).max(1e-12), c1))
    }
}

impl DraftPolicy for Adaptive {
    fn next(&self) -> usize {
        let explore = [(self.k_max / 2).max(1), self.k_max];
        if let Some(&k) = explore.get(self.steps) {
            return k;
        }
        let a = self.acceptance();
        let (c0, c1) = self.cost_fit().unwrap_or((1.0, 0.0));
        (1..=self.k_max)
            .max_by(|&x, &y| {
                let rate = |k: usize| Self::expected_tokens(a, k) / (c0 + c1 * (k + 1) as f64);
                rate(x).total_cmp(&rate(y))
            })
            .unwrap_or(1)
    }

    fn observe(&mut self, k: usize, accepted: usize, seconds: Option<f64>) {
        self.steps += 1;
        self.accepted += accepted;
        if accepted < k {
            self.rejections += 1;
        }
        if let Some(s) = seconds {
            self.passes.push(((k + 1) as f64, s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_k_that_maximises_tokens_per_second() {
        let mut p = Adaptive::new(8);
        assert_eq!(p.next(), 4, "first exploration step");
        p.observe(4, 4, Some(1.0 + 0.5 * 5.0));
        assert_eq!(p.next(), 8, "second exploration step");
        p.observe(8, 8, Some(1.0 + 0.5 * 9.0));
        let (c0, c1) = p.cost_fit().unwrap();
        assert!((c0 - 1.0).abs() < 1e-9 && (c1 - 0.5).abs() < 1e-9);
        // a = (12 + 1) / (12 + 2); brute force over K with the same formulas, by hand:
        let a: f64 = 13.0 / 14.0;
        let best = (1..=8)
            .max_by(|&x, &y| {
                let r = |k: usize| {
                    (1.0 - a.powi(k as i32 + 1)) / (1.0 - a) / (1.0 + 0.5 * (k + 1) as f64)
                };
                r(x).total_cmp(&r(y))
            })
            .unwrap();
        assert_eq!(p.next(), best);
        // Rejections at the first draft make one draft the best choice when passes are costly per token.
        for _ in 0..50 {
            p.observe(4, 0, Some(1.0 + 0.5 * 5.0));
        }
        assert_eq!(p.next(), 1);
    }

    #[test]
    fn flat_cost_drafts_the_most() {
        let mut p = Adaptive::new(6);
        p.observe(3, 1, Some(2.0));
        p.observe(6, 1, Some(2.0));
        assert_eq!(p.next(), 6);
        let plain = Adaptive::new(5);
        assert_eq!(plain.next(), 2);
    }
}
