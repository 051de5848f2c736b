//! The speculative sampler emits exactly the private model's distribution, and temperature 0
//! reproduces the private model's greedy output for every draft length.

mod common;

use std::collections::HashMap;

use post::model::loader::{load_pair, Registry};
use post::model::Gpt2;
use post::spec::sampling::{probabilities, sample};
use post::spec::{speculative_decode, verify_drafts, DecodeOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Upper quantile of chi-square with `dof` degrees of freedom at z standard deviations (Wilson-Hilferty).
fn chi_square_critical(dof: usize, z: f64) -> f64 {
    let k = dof as f64;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Pearson's statistic over the cells with positive expected mass (cells with none must be empty).
fn chi_square(
    counts: &HashMap<Vec<u32>, usize>,
    expected: &HashMap<Vec<u32>, f64>,
    n: usize,
) -> (f64, usize) {
    for key in counts.keys() {
        assert!(
            expected.get(key).copied().unwrap_or(0.0) > 0.0,
            "{key:?} has no mass under p but was emitted"
        );
    }
    let mut stat = 0.0;
    let mut cells = 0;
    for (key, &prob) in expected {
        if prob > 0.0 {
            let want = prob * n as f64;
            let got = *counts.get(key).unwrap_or(&0) as f64;
            stat += (got - want).powi(2) / want;
            cells += 1;
        }
    }
    (stat, cells - 1)
}

fn random_distribution(rng: &mut impl Rng, size: usize) -> Vec<f64> {
    let raw: Vec<f64> = (0..size).map(|_| rng.random::<f64>().powi(2)).collect();
    let sum: f64 = raw.iter().sum();
    raw.into_iter().map(|x| x / sum).collect()
}

#[test]
fn rule_over_many_steps_emits_the_target_distribution() {
    // Position j has its own p_j and q_j (context-free), so the first three emitted tokens must be
    // independent draws from p_0, p_1, p_2, however the steps split them into accepted drafts.
    const V: usize = 5;
    const K: usize = 3;
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
    let (stat, dof) = chi_square(&counts, &expected, RUNS);
    let critical = chi_square_critical(dof, 3.72); // upper 1e-4 tail
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

/// Exact joint probability of the first two tokens after `prompt` under `model` at `temperature`.
fn exact_two_token_distribution(
    model: &Gpt2,
    prompt: &[u32],
    temperature: f64,
) -> HashMap<Vec<u32>, f64> {
    let first = probabilities(
        model
            .forward_rows(prompt, &mut model.new_cache())
            .unwrap()
            .last()
            .unwrap(),
        temperature,
    );
    let mut joint = HashMap::new();
    for (a, &pa) in first.iter().enumerate() {
        let mut seq = prompt.to_vec();
        seq.push(a as u32);
        let second = probabilities(
            model
                .forward_rows(&seq, &mut model.new_cache())
                .unwrap()
                .last()
                .unwrap(),
            temperature,
        );
        for (b, &pb) in second.iter().enumerate() {
            joint.insert(vec![a as u32, b as u32], pa * pb);
        }
    }
    joint
}

#[test]
fn decoder_on_tiny_models_emits_the_private_distribution() {
    // Two unrelated random models over 6 tokens: the public one drafts badly, yet the output must
    // follow the private model (joint of the first two tokens, chi-square).
    let cfg = common::tiny_config(6, 16, 2, 2, 32);
    let public = common::random_model(&cfg, 11, 0.5);
    let private = common::random_model(&cfg, 12, 0.5);
    let prompt = [1u32, 4, 2];
    const RUNS: usize = 6_000;
    for temperature in [1.0, 0.7] {
        let opts = DecodeOptions {
            draft_len: 3,
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
            *counts.entry(out.output_ids[..2].to_vec()).or_default() += 1;
        }
        let expected = exact_two_token_distribution(&private, &prompt, temperature);
        let (stat, dof) = chi_square(&counts, &expected, RUNS);
        let critical = chi_square_critical(dof, 3.72);
        assert!(
            stat < critical,
            "T={temperature}: chi-square {stat:.1} >= {critical:.1} with {dof} dof"
        );
        assert!(
            accepted > 0 && accepted < drafted,
            "T={temperature}: {accepted} of {drafted} accepted"
        );
    }
}

fn greedy(model: &Gpt2, prompt: &[u32], n: usize) -> Vec<u32> {
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
            seq.push(post::spec::sampling::argmax(rows.last().unwrap()) as u32);
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
