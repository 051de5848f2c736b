//! The speculative sampler emits exactly the private model's distribution, and temperature 0
//! reproduces the private model's greedy output for every draft length.

use crate::common;

use std::collections::HashMap;

use post::decoding::sampling::sample;
use post::decoding::{speculative_decode, verify_drafts, DecodeOptions};
use post::model::loader::{load_pair, Registry};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

fn random_distribution(rng: &mut impl Rng, size: usize) -> Vec<f64> {
    let raw: Vec<f64> = (0..size).map(|_| rng.random::<f64>().powi(2)).collect();
    let sum: f64 = raw.iter().sum();
    raw.into_iter().map(|x| x / sum).collect()
}

#[test]
fn rule_over_many_steps_emits_the_target_distribution() {
    // Position j has its own p_j and q_j (context-free), so the first three emitted tokens must be
    // independent draws from p_0, p_1, p_2, however the steps split them into accepted drafts. With
    // K = 2 the third token is the bonus whenever both drafts pass, so the bonus is counted too.
    const V: usize = 5;
    const K: usize = 2;
    const RUNS: usize = 60_000;
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let p: Vec<Vec<f64>> = (0..8).map(|_| random_distribution(&mut rng, V)).collect();
    let q: Vec<Vec<f64>> = (0..8).map(|_| random_distribution(&mut rng, V)).collect();
    let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut accepted_total = 0;
    for _ in 0..RUNS {
        let mut emitted: Vec<u32> = Vec::new();
        while emitted.len() < 3 {
            let s = emitted.len();
            let drafts: Vec<u32> = (0..K).map(|i| sample(&q[s + i], &mut rng)).collect();
            let verdict = verify_drafts(&drafts, &q[s..s + K], &p[s..s + K + 1], &mut rng);
            accepted_total += verdict.accepted;
            emitted.extend(&drafts[..verdict.accepted]);
            emitted.push(verdict.next);
        }
        *counts.entry(emitted[..3].to_vec()).or_default() += 1;
    }
    let mut expected = HashMap::new();
    for a in 0..V {
        for b in 0..V {
            for c in 0..V {
                expected.insert(
                    vec![a as u32, b as u32, c as u32],
                    p[0][a] * p[1][b] * p[2][c],
                );
            }
        }
    }
    let (stat, dof) = common::chi_square(&counts, &expected, RUNS);
    let critical = common::chi_square_critical(dof, 3.72); // upper 1e-4 tail
    assert!(
        stat < critical,
        "chi-square {stat:.1} >= {critical:.1} with {dof} dof"
    );
    // Drafts from a different q are accepted sometimes, not always: the rule is exercised both ways.
    assert!(
        accepted_total > RUNS / 4 && accepted_total < RUNS * K,
        "{accepted_total}"
    );
}

#[test]
fn identical_draft_and_target_are_always_accepted() {
    let mut rng = ChaCha12Rng::seed_from_u64(3);
    let p: Vec<Vec<f64>> = (0..5).map(|_| random_distribution(&mut rng, 6)).collect();
    for _ in 0..1000 {
        let drafts: Vec<u32> = (0..4).map(|i| sample(&p[i], &mut rng)).collect();
        assert_eq!(verify_drafts(&drafts, &p[..4], &p, &mut rng).accepted, 4);
    }
}

#[test]
fn decoder_on_tiny_models_emits_the_private_distribution() {
    // Two unrelated random models over 6 tokens: the public one drafts badly, yet the output must
    // follow the private model (joint of the first three tokens, chi-square). K = 2 drafts and three
    // tokens: when both drafts pass, the third token is the bonus, so it is counted. One layer: the
    // rule does not depend on depth, and a forward costs half of two layers' (12,000 runs).
    let cfg = common::tiny_config(6, 16, 1, 2, 32);
    let public = common::random_model(&cfg, 11, 0.5);
    let private = common::random_model(&cfg, 12, 0.5);
    let prompt = [1u32, 4, 2];
    // 3,000 runs (was 6,000): false alarms stay at the 1e-4 tail (z = 3.72), and the planted bias
    // below is caught in every one of 2,000 simulated samples at 1,000 runs already.
    const RUNS: usize = 3_000;
    for temperature in [1.0, 0.7] {
        let opts = DecodeOptions {
            draft_len: 2,
            temperature,
            max_new_tokens: 3,
            stop_token: None,
        };
        let mut rng = ChaCha12Rng::seed_from_u64(5);
        let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
        let (mut accepted, mut drafted) = (0, 0);
        for _ in 0..RUNS {
            let out = speculative_decode(&public, &private, &prompt, &opts, &mut rng).unwrap();
            assert_eq!(out.output_ids.len(), 3);
            accepted += out.accepted;
            drafted += out.drafted;
            *counts.entry(out.output_ids.clone()).or_default() += 1;
        }
        let expected = common::exact_distribution(&private, &prompt, temperature, 3);
        let (stat, dof) = common::chi_square(&counts, &expected, RUNS);
        let critical = common::chi_square_critical(dof, 3.72);
        assert!(
            stat < critical,
            "T={temperature}: chi-square {stat:.1} >= {critical:.1} with {dof} dof"
        );
        // The check has power: rejections that redraw from p instead of the residual fail it.
        let planted =
            common::resampling_p_distribution(&public, &private, &prompt, temperature, 3, 2);
        let power = common::chi_square_power(&planted, &expected, RUNS, 3.72, 500);
        assert!(power >= 0.99, "T={temperature}: power {power:.4}");
        assert!(
            accepted > 0 && accepted < drafted,
            "T={temperature}: {accepted} of {drafted} accepted"
        );
    }
}

fn greedy(model: &dyn post::model::LanguageModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = DecodeOptions {
        draft_len: 0,
        temperature: 0.0,
        max_new_tokens: n,
        stop_token: None,
    };
    speculative_decode(
        model,
        model,
        prompt,
        &opts,
        &mut ChaCha12Rng::seed_from_u64(0),
    )
    .unwrap()
    .output_ids
}

#[test]
fn temperature_zero_reproduces_private_greedy_for_every_draft_length() {
    let registry = Registry::from_file(&common::models_dir().join("registry.json")).unwrap();
    let pair = load_pair("tiny-public", "tiny-private", &registry).unwrap();
    let (public, private) = (&pair.public.model, &pair.private.model);
    let mut total_accepted = 0;
    for prompt in [vec![7u32], vec![1, 2, 3, 4], vec![42, 999, 0, 512, 77]] {
        let want = greedy(private, &prompt, 24);
        // Plain decoding by hand, no speculative code involved.
        let mut seq = prompt.clone();
        for _ in 0..24 {
            let rows = private
                .forward_rows(&seq, &mut private.new_cache())
                .unwrap();
            seq.push(post::decoding::sampling::argmax(rows.last().unwrap()) as u32);
        }
        assert_eq!(want, seq[prompt.len()..]);
        for k in 1..=6 {
            let opts = DecodeOptions {
                draft_len: k,
                temperature: 0.0,
                max_new_tokens: 24,
                stop_token: None,
            };
            let out = speculative_decode(
                public,
                private,
                &prompt,
                &opts,
                &mut ChaCha12Rng::seed_from_u64(k as u64),
            )
            .unwrap();
            assert_eq!(out.output_ids, want, "K={k}, prompt {prompt:?}");
            assert!(out.steps <= 24);
            total_accepted += out.accepted;
        }
        // The adaptive draft length changes K from step to step, never the output.
        let opts = DecodeOptions {
            draft_len: 0,
            temperature: 0.0,
            max_new_tokens: 24,
            stop_token: None,
        };
        let mut policy = post::decoding::Adaptive::new(6);
        let out = post::decoding::decode_with_policy(
            public,
            &mut post::decoding::PlainVerifier::new(private, 0.0),
            &prompt,
            &opts,
            &mut policy,
            &mut ChaCha12Rng::seed_from_u64(9),
        )
        .unwrap();
        assert_eq!(out.output_ids, want, "adaptive K, prompt {prompt:?}");
    }
    assert!(
        total_accepted > 0,
        "the noisy public model should agree with the private one sometimes"
    );
}

#[test]
fn decoding_stops_at_the_context_window() {
    let cfg = common::tiny_config(6, 16, 1, 2, 8);
    let model = common::random_model(&cfg, 1, 0.5);
    let opts = DecodeOptions {
        draft_len: 4,
        temperature: 1.0,
        max_new_tokens: 50,
        stop_token: None,
    };
    let out = speculative_decode(
        &model,
        &model,
        &[1, 2, 3],
        &opts,
        &mut ChaCha12Rng::seed_from_u64(0),
    )
    .unwrap();
    // 8 positions can be fed; the token after the last one is still emitted.
    assert_eq!(out.output_ids.len(), 6);
    let too_long = speculative_decode(
        &model,
        &model,
        &[1; 9],
        &opts,
        &mut ChaCha12Rng::seed_from_u64(0),
    );
    assert!(too_long.unwrap_err().to_string().contains("context window"));
}

#[test]
fn every_draft_passes_when_the_public_model_is_the_private_one() {
    // q = p: u q < p always holds, so each step emits K drafts and the bonus token.
    let cfg = common::tiny_config(6, 16, 2, 2, 64);
    let model = common::random_model(&cfg, 4, 0.5);
    for temperature in [1.0, 0.7, 0.0] {
        let opts = DecodeOptions {
            draft_len: 3,
            temperature,
            max_new_tokens: 12,
            stop_token: None,
        };
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        for _ in 0..20 {
            let out = speculative_decode(&model, &model, &[1, 2], &opts, &mut rng).unwrap();
            assert_eq!(
                (out.steps, out.accepted, out.drafted),
                (3, 9, 9),
                "T={temperature}"
            );
            assert_eq!(out.tokens_per_step(), 4.0);
        }
    }
}
