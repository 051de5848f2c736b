//! Plaintext draft-and-verify decoding: the public model drafts K tokens, the private model scores
//! them in one forward pass, and the speculative rule accepts a prefix plus one sampled token.
//! This is the oracle the secure path is checked against; K = 0 is plain autoregressive decoding.

use anyhow::{bail, Result};
use rand::{Rng, RngCore};

use super::adaptive::{DraftPolicy, Fixed};
use super::rule::{verify_drafts, Verdict};
use super::sampling::{probabilities, sample};
use crate::model::{KvCache, LanguageModel};

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Drafts per verification step (0: plain decoding with the private model alone).
    pub draft_len: usize,
    /// 0 is greedy; otherwise logits are divided by it before the softmax.
    pub temperature: f64,
    pub max_new_tokens: usize,
    /// Stop after this token (the private model's end of text), when set.
    pub stop_token: Option<u32>,
}

impl DecodeOptions {
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )
        }
        Ok(())
    }
}

/// What one prompt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Generated token ids, the prompt excluded.
    pub output_ids: Vec<u32>,
    /// Verification steps (private forward passes).
    pub steps: usize,
    /// Drafts proposed over all steps.
    pub drafted: usize,
    /// Drafts accepted over all steps.
    pub accepted: usize,
    /// For each generated token: whether it was a draft the verifier accepted (otherwise the
    /// verifier sampled it itself).
    pub from_draft: Vec<bool>,
}

impl Decoded {
    /// Accepted drafts per verification step.
    pub fn mean_accepted(&self) -> f64 {
        ratio(self.accepted, self.steps)
    }

    /// Accepted drafts over proposed drafts.
    pub fn acceptance_rate(&self) -> f64 {
        ratio(self.accepted, self.drafted)
    }

    /// Emitted tokens per verification step.
    pub fn tokens_per_step(&self) -> f64 {
        ratio(self.output_ids.len(), self.steps)
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Scores drafts with the private model and applies the speculative rule: in plaintext
/// ([`PlainVerifier`]) or under two-party computation (`secure::SecureVerifier`). The decoding loop
/// below is the same for both, so the rule's inputs and the cache rollback exist once.
pub trait Verifier {
    /// The private model's context window.
    fn window(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// Forgets every position (a new prompt).
    fn reset(&mut self) -> Result<()>;
    /// Scores `drafts` after the committed `tokens` (q: the public model's distribution of each
    /// draft) in one forward pass and applies the rule.
    fn verify(
        &mut self,
        tokens: &[u32],
        drafts: &[u32],
        q: &[Vec<f64>],
        rng: &mut dyn RngCore,
    ) -> Result<Verdict>;
    /// Keeps the first `len` positions of the private model's cache.
    fn rollback(&mut self, len: usize) -> Result<()>;
    /// Seconds on the verifier's clock so far, if it keeps one (the secure verifier's simulated
    /// time); an adaptive draft length learns each pass's cost from it.
    fn clock(&mut self) -> Option<f64> {
        None
    }
}

/// The private model in plaintext candle: the oracle the secure verifier is tested against.
pub struct PlainVerifier<'a> {
    model: &'a dyn LanguageModel,
    cache: KvCache,
    temperature: f64,
}

impl<'a> PlainVerifier<'a> {
    pub fn new(model: &'a dyn LanguageModel, temperature: f64) -> Self {
        Self {
            model,
            cache: model.new_cache(),
            temperature,
        }
    }
}

impl Verifier for PlainVerifier<'_> {
    fn window(&self) -> usize {
        self.model.window()
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn reset(&mut self) -> Result<()> {
        self.cache = self.model.new_cache();
        Ok(())
    }

    fn verify(
        &mut self,
        tokens: &[u32],
        drafts: &[u32],
        q: &[Vec<f64>],
        mut rng: &mut dyn RngCore,
    ) -> Result<Verdict> {
        let mut input = tokens[self.cache.len()..].to_vec();
        input.extend(drafts);
        let rows = self.model.forward_rows(&input, &mut self.cache)?;
        let k = drafts.len();
        let p: Vec<Vec<f64>> = rows[rows.len() - k - 1..]
            .iter()
            .map(|r| probabilities(r, self.temperature))
            .collect();
        Ok(verify_drafts(drafts, q, &p, &mut rng))
    }

    fn rollback(&mut self, len: usize) -> Result<()> {
        Ok(self.cache.truncate(len)?)
    }
}

/// Decodes after `prompt` with the private model in plaintext. The output follows the private
/// model's distribution at `temperature` exactly, whatever the public model proposes.
pub fn speculative_decode(
    public: &dyn LanguageModel,
    private: &dyn LanguageModel,
    prompt: &[u32],
    opts: &DecodeOptions,
    rng: &mut impl Rng,
) -> Result<Decoded> {
    let mut verifier = PlainVerifier::new(private, opts.temperature);
    decode_with(public, &mut verifier, prompt, opts, rng)
}

/// The draft-and-verify loop: the public model drafts K tokens, `verifier` scores them in one pass
/// and applies the rule; K = 0 is plain decoding with the private model alone.
pub fn decode_with(
    public: &dyn LanguageModel,
    verifier: &mut impl Verifier,
    prompt: &[u32],
    opts: &DecodeOptions,
    rng: &mut impl Rng,
) -> Result<Decoded> {
    decode_with_policy(
        public,
        verifier,
        prompt,
        opts,
        &mut Fixed(opts.draft_len),
        rng,
    )
}

/// [`decode_with`] where `policy` picks each step's draft length (`opts.draft_len` is ignored).
pub fn decode_with_policy(
    public: &dyn LanguageModel,
    verifier: &mut impl Verifier,
    prompt: &[u32],
    opts: &DecodeOptions,
    policy: &mut dyn DraftPolicy,
    rng: &mut impl Rng,
) -> Result<Decoded> {
    opts.validate()?;
    if public.vocab_size() != verifier.vocab_size() {
        bail!(
            "public and private vocabularies differ ({} vs {})",
            public.vocab_size(),
            verifier.vocab_size()
        )
    }
    let (private_window, public_window) = (verifier.window(), public.window());
    if prompt.is_empty() {
        bail!("empty prompt: at least one token is needed")
    }
    if prompt.len() > private_window {
        bail!(
            "the prompt has {} tokens, more than the private model's context window of {}",
            prompt.len(),
            private_window
        )
    }
    verifier.reset()?;
    let mut tokens = prompt.to_vec();
    let mut public_cache = public.new_cache();
    let mut out = Decoded {
        output_ids: Vec::new(),
        steps: 0,
        drafted: 0,
        accepted: 0,
        from_draft: Vec::new(),
    };
    // The last token is fed at position tokens.len() - 1, which must lie inside the private window.
    while out.output_ids.len() < opts.max_new_tokens && tokens.len() <= private_window {
        let n = tokens.len();
        let remaining = opts.max_new_tokens - out.output_ids.len();
        // Drafts occupy positions n..n+k of the private pass and n-1..n+k-2 of the public drafting.
        let k = policy
            .next()
            .min(remaining - 1)
            .min(private_window - n)
            .min((public_window + 1).saturating_sub(n));

        let mut drafts = Vec::with_capacity(k);
        let mut q = Vec::with_capacity(k);
        let mut input = tokens[public_cache.len()..].to_vec();
        for _ in 0..k {
            let rows = public.forward_rows(&input, &mut public_cache)?;
            let q_i = probabilities(
                rows.last().expect("at least one new token"),
                opts.temperature,
            );
            let x = sample(&q_i, rng);
            drafts.push(x);
            q.push(q_i);
            input = vec![x];
        }

        let clock = verifier.clock();
        let verdict = verifier.verify(&tokens, &drafts, &q, rng)?;
        let seconds = clock.zip(verifier.clock()).map(|(a, b)| b - a);
        policy.observe(k, verdict.accepted, seconds);
        let mut emitted = drafts[..verdict.accepted].to_vec();
        emitted.push(verdict.next);
        out.steps += 1;
        out.drafted += k;
        out.accepted += verdict.accepted;
        let stop_at = opts
            .stop_token
            .and_then(|stop| emitted.iter().position(|&t| t == stop));
        if let Some(i) = stop_at {
            emitted.truncate(i + 1);
        }
        tokens.extend(&emitted);
        out.from_draft
            .extend((0..emitted.len()).map(|i| i < verdict.accepted));
        out.output_ids.extend(&emitted);
        if stop_at.is_some() {
            break;
        }
        // Both caches keep only positions whose tokens were committed; the newest token is fed next step.
        let valid = tokens.len() - 1;
        public_cache.truncate(valid)?;
        verifier.rollback(valid)?;
    }
    Ok(out)
}
