//! Secure decoding against plaintext decoding: identical tokens at T = 0, the private model's
//! distribution at T > 0.

mod common;

use post::model::loader::{load_pair, Registry};
use post::mpc::{EngineConfig, LinkModel};
use post::secure::SecureVerifier;
use post::spec::{decode_with, speculative_decode, DecodeOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

fn registry() -> Registry {
    Registry::from_file(&common::models_dir().join("registry.json")).unwrap()
}

fn ideal() -> EngineConfig {
    EngineConfig {
        link: LinkModel::ideal(),
        ..EngineConfig::default()
    }
}

#[test]
fn secure_greedy_decoding_reproduces_plaintext_on_the_tiny_pair() {
    let pair = load_pair("tiny-public", "tiny-private", &registry()).unwrap();
    let (public, private) = (&pair.public.model, &pair.private.model);
    let mut verifier = SecureVerifier::start(private, &ideal(), 0.0).unwrap();
    for prompt in [vec![7u32], vec![1, 2, 3, 4], vec![42, 999, 0, 512, 77]] {
        let opts = |k| DecodeOptions {
            draft_len: k,
            temperature: 0.0,
            max_new_tokens: 16,
            stop_token: None,
        };
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        let want = speculative_decode(public, private, &prompt, &opts(0), &mut rng).unwrap();
        for k in [0, 3] {
            let got = decode_with(public, &mut verifier, &prompt, &opts(k), &mut rng).unwrap();
            assert_eq!(got.output_ids, want.output_ids, "K={k}, prompt {prompt:?}");
            println!("K={k}: steps {}, accepted {}", got.steps, got.accepted);
        }
    }
    verifier.finish().unwrap();
}

#[test]
fn secure_post_decoding_emits_the_private_distribution() {
    // A random private model over 4 tokens and a noisy copy as the public one, K = 2, three tokens:
    // when both drafts pass, the third token is the bonus, drawn by the secure inverse CDF from the
    // private model's last row; rejections draw from the residual.
    let cfg = common::tiny_config(4, 16, 1, 2, 32);
    let weights = common::random_weights(&cfg, 12, 0.3);
    let noise = common::random_weights(&cfg, 13, 0.1);
    let noisy = weights
        .iter()
        .map(|(name, w)| (name.clone(), (w + &noise[name]).unwrap()))
        .collect();
    let private = common::build_model(&cfg, &weights);
    let public = common::build_model(&cfg, &noisy);
    let prompt = [1u32, 3, 2];
    const RUNS: usize = 1500;
    let opts = DecodeOptions {
        draft_len: 2,
        temperature: 1.0,
        max_new_tokens: 3,
        stop_token: None,
    };
    let mut verifier = SecureVerifier::start(&private, &ideal(), 1.0).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let mut counts = std::collections::HashMap::new();
    let (mut accepted, mut drafted, mut bonus) = (0, 0, 0);
    let start = std::time::Instant::now();
    for _ in 0..RUNS {
        let out = decode_with(&public, &mut verifier, &prompt, &opts, &mut rng).unwrap();
        assert_eq!(out.output_ids.len(), 3);
        accepted += out.accepted;
        drafted += out.drafted;
        bonus += usize::from(out.steps == 1);
        *counts.entry(out.output_ids).or_insert(0usize) += 1;
    }
    println!(
        "{RUNS} runs in {:.1} s; {accepted} of {drafted} drafts accepted, {bonus} bonus tokens",
        start.elapsed().as_secs_f64()
    );
    let expected = common::exact_distribution(&private, &prompt, 1.0, 3);
    let (stat, dof) = common::chi_square(&counts, &expected, RUNS);
    let critical = common::chi_square_critical(dof, 3.72);
    println!("chi-square {stat:.1} (critical {critical:.1}, {dof} dof)");
    assert!(
        stat < critical,
        "chi-square {stat:.1} >= {critical:.1} with {dof} dof"
    );
    assert!(
        accepted > 0 && accepted < drafted && bonus > RUNS / 5,
        "{accepted}/{drafted}, {bonus} bonus"
    );
    verifier.finish().unwrap();
}
