//! The trained models that ship in `models/`: both pairs load, share one tokenizer, draft, and the
//! private model is the better one on the code domain it was specialised to.

use crate::common::registry;
use std::path::Path;

use post::decoding::{speculative_decode, DecodeOptions};
use post::model::loader::load_named_pair;
use post::train::cross_entropy_on;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

fn prompts(name: &str, tokenizer: &post::model::Tokenizer, n: usize) -> Vec<Vec<u32>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets")
        .join(name);
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            tokenizer.encode(v["prompt"].as_str().unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn shipped_pairs_load_and_decode_exactly_at_temperature_zero() {
    let registry = registry();
    for name in ["default", "default-aligned"] {
        let pair = load_named_pair(name, &registry).unwrap();
        let tokenizer = pair.tokenizer().expect("shipped models carry a tokenizer");
        let prompt = tokenizer
            .encode("def read_config(path):\n    \"\"\"Read a configuration file.\"\"\"\n")
            .unwrap();
        let greedy = DecodeOptions {
            draft_len: 0,
            temperature: 0.0,
            max_new_tokens: 24,
            stop_token: None,
        };
        let plain = speculative_decode(
            &pair.private.model,
            &pair.private.model,
            &prompt,
            &greedy,
            &mut ChaCha12Rng::seed_from_u64(0),
        )
        .unwrap();
        let spec = DecodeOptions {
            draft_len: 4,
            ..greedy
        };
        let drafted = speculative_decode(
            &pair.public.model,
            &pair.private.model,
            &prompt,
            &spec,
            &mut ChaCha12Rng::seed_from_u64(0),
        )
        .unwrap();
        assert_eq!(
            plain.output_ids, drafted.output_ids,
            "{name}: drafting changed the greedy output"
        );
        assert!(drafted.steps < 24, "{name}: no draft was ever accepted");
    }
}

#[test]
fn the_private_model_meets_its_perplexity_target_on_held_out_code() {
    // Issue 11's target: perplexity at most 30 on datasets/code-completion.jsonl (98 before the
    // retraining; 20.3 measured with `post bench --mode perplexity`).
    let pair = load_named_pair("default", &registry()).unwrap();
    let code = prompts("code-completion.jsonl", pair.tokenizer().unwrap(), 150);
    let (ce, tokens) = cross_entropy_on(&pair.private.model, &code).unwrap();
    assert!(tokens > 7000, "only {tokens} tokens scored");
    assert!(ce.exp() <= 30.0, "private perplexity {:.2}", ce.exp());
}

/// Share of distinct 4-grams among all 4-grams of a token sequence.
fn distinct_4gram_share(ids: &[u32]) -> f64 {
    let grams: Vec<&[u32]> = ids.windows(4).collect();
    let distinct: std::collections::HashSet<&[u32]> = grams.iter().copied().collect();
    distinct.len() as f64 / grams.len() as f64
}

#[test]
fn the_private_model_does_not_degenerate_into_repetition() {
    // Greedy 32-token continuations of the first 30 code prompts: the undertrained model of
    // before issue 11 repeated itself (0.28 of its 4-grams distinct over all 150 prompts; 0.78 now).
    let pair = load_named_pair("default", &registry()).unwrap();
    let tokenizer = pair.tokenizer().unwrap();
    let greedy = DecodeOptions {
        draft_len: 0,
        temperature: 0.0,
        max_new_tokens: 32,
        stop_token: None,
    };
    let shares: Vec<f64> = prompts("code-completion.jsonl", tokenizer, 30)
        .into_iter()
        .map(|mut prompt| {
            prompt.drain(..prompt.len().saturating_sub(96));
            let out = speculative_decode(
                &pair.private.model,
                &pair.private.model,
                &prompt,
                &greedy,
                &mut ChaCha12Rng::seed_from_u64(0),
            )
            .unwrap();
            distinct_4gram_share(&out.output_ids)
        })
        .collect();
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    assert!(mean > 0.6, "distinct 4-gram share {mean:.3}");
    assert!(distinct_4gram_share(&[1, 2, 1, 2, 1, 2, 1, 2]) < 0.5);
}

#[test]
fn the_main_jobs_temperature_keeps_completions_from_looping() {
    // Issue 27: greedy 32-token continuations of the shipped private model loop (distinct 4-gram
    // share 0.65 over the first 30 code prompts, 0.47 over the main job's 3), so the main job
    // decodes at T = 0.6 (`just verify`): 0.87 to 0.89 there, over two seeds. The decoding is
    // the main job's own (the aligned public model drafts, the private one verifies), in
    // plaintext: the secure session samples the same distribution.
    let pair = load_named_pair("default-aligned", &registry()).unwrap();
    let tokenizer = pair.tokenizer().unwrap();
    let opts = DecodeOptions {
        draft_len: 4,
        temperature: 0.6,
        max_new_tokens: 32,
        stop_token: None,
    };
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let shares: Vec<f64> = prompts("code-completion.jsonl", tokenizer, 30)
        .into_iter()
        .map(|mut prompt| {
            prompt.drain(..prompt.len().saturating_sub(96));
            let out = speculative_decode(
                &pair.public.model,
                &pair.private.model,
                &prompt,
                &opts,
                &mut rng,
            )
            .unwrap();
            assert_eq!(out.from_draft.len(), out.output_ids.len());
            distinct_4gram_share(&out.output_ids)
        })
        .collect();
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    println!("distinct 4-gram share at T = 0.6: {mean:.3}");
    assert!(mean >= 0.7, "distinct 4-gram share {mean:.3} at T = 0.6");
}

#[test]
fn the_private_model_knows_code_better_than_the_public_one_and_more_so_than_text() {
    // Code-specialised: its advantage (public minus private cross-entropy, nats per token) is
    // larger on held-out code than on held-out prose (measured on all 150 prompts: 2.16 vs 0.56).
    let pair = load_named_pair("default", &registry()).unwrap();
    let tokenizer = pair.tokenizer().unwrap();
    let advantage = |set: &str| {
        let prompts = prompts(set, tokenizer, 40);
        let (private_ce, _) = cross_entropy_on(&pair.private.model, &prompts).unwrap();
        let (public_ce, _) = cross_entropy_on(&pair.public.model, &prompts).unwrap();
        public_ce - private_ce
    };
    let (code, text) = (
        advantage("code-completion.jsonl"),
        advantage("text-continuation.jsonl"),
    );
    assert!(code > 1.0, "advantage on code {code:.3}");
    assert!(
        code > text + 0.5,
        "advantage on code {code:.3}, on text {text:.3}"
    );
}

/// Pooled acceptance (accepted / drafted) of a pair on the first `n` code-completion prompts at
/// T = 0, K = 4, 32 new tokens, prompts cut to their last 96 tokens.
fn acceptance(pair_name: &str, n: usize) -> f64 {
    let pair = load_named_pair(pair_name, &registry()).unwrap();
    let tokenizer = pair.tokenizer().unwrap();
    let opts = DecodeOptions {
        draft_len: 4,
        temperature: 0.0,
        max_new_tokens: 32,
        stop_token: None,
    };
    let (mut accepted, mut drafted) = (0, 0);
    for mut prompt in prompts("code-completion.jsonl", tokenizer, n) {
        prompt.drain(..prompt.len().saturating_sub(96));
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        let out = speculative_decode(
            &pair.public.model,
            &pair.private.model,
            &prompt,
            &opts,
            &mut rng,
        )
        .unwrap();
        accepted += out.accepted;
        drafted += out.drafted;
    }
    accepted as f64 / drafted as f64
}

#[test]
fn distillation_raises_acceptance_by_a_wide_margin() {
    let (aligned, unaligned) = (acceptance("default-aligned", 60), acceptance("default", 60));
    println!("acceptance at K = 4, T = 0: aligned {aligned:.3}, unaligned {unaligned:.3}");
    // Measured on the pair retrained in issue 11: aligned 0.605, unaligned 0.078.
    assert!(
        aligned > 0.5 && aligned > unaligned + 0.4,
        "aligned {aligned:.3} vs unaligned {unaligned:.3}"
    );
}
