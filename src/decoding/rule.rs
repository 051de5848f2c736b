//! The speculative-sampling rule (Leviathan et al. 2023, Chen et al. 2023).
//!
//! Draft x_i was drawn from q_i. Accept it with probability min(1, p_i(x_i) / q_i(x_i)); at the first
//! rejection draw from the residual norm(max(0, p_i - q_i)); when all K pass, draw a bonus token from
//! p_{K+1}. Every emitted token then follows p exactly.

use rand::Rng;

use super::sampling::sample;

/// How many drafts were accepted, and the one token sampled after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub accepted: usize,
    pub next: u32,
}

/// Applies the rule. `q` has one distribution per draft, `p` one more (the bonus position).
pub fn verify_drafts(
    drafts: &[u32],
    q: &[Vec<f64>],
    p: &[Vec<f64>],
    rng: &mut impl Rng,
) -> Verdict {
    assert_eq!(q.len(), drafts.len(), "one draft distribution per draft");
    assert_eq!(
        p.len(),
        drafts.len() + 1,
        "one target distribution per draft plus the bonus"
    );
    for (i, &x) in drafts.iter().enumerate() {
        let (p_x, q_x) = (p[i][x as usize], q[i][x as usize]);
        // u < p/q, written without the division: u * q < p. A draft with q_x = 0 cannot occur.
        let u: f64 = rng.random();
        if u * q_x < p_x {
            continue;
        }
        let residual: Vec<f64> = p[i]
            .iter()
            .zip(&q[i])
            .map(|(pi, qi)| (pi - qi).max(0.0))
            .collect();
        // p = q leaves no residual, but then no draft is ever rejected; guard against rounding.
        let next = if residual.iter().sum::<f64>() > 0.0 {
            sample(&residual, rng)
        } else {
            sample(&p[i], rng)
        };
        return Verdict { accepted: i, next };
    }
    Verdict {
        accepted: drafts.len(),
        next: sample(&p[drafts.len()], rng),
    }
}
