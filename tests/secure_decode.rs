//! Secure decoding against plaintext decoding: identical tokens at T = 0, the private model's
//! distribution at T > 0.

mod common;

use common::{registry, two_sample_chi_square, uniformity_chi_square};

use post::decoding::{decode_with, speculative_decode, DecodeOptions};
use post::model::loader::load_pair;
use post::mpc::{EngineConfig, LinkModel};
use post::secure::SecureVerifier;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

/// No latency, and a fixed simulation seed so that a run is reproducible (the one-ulp truncation
/// noise of the engine depends on the dealer's randomness).
fn ideal() -> EngineConfig {
    EngineConfig {
        link: LinkModel::ideal(),
        seed: Some(1),
        ..EngineConfig::default()
    }
}

#[test]
fn secure_greedy_decoding_reproduces_plaintext_on_the_tiny_pair() {
    let pair = load_pair("tiny-public", "tiny-private", &registry()).unwrap();
    let (public, private) = (&pair.public.model, pair.private.model.gpt2().unwrap());
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
            let revealed = |v: &SecureVerifier| {
                v.client_counters()
                    .get("reveal")
                    .map_or((0, 0), |c| (c.bytes_recv, c.rounds))
            };
            let before = revealed(&verifier);
            let got = decode_with(public, &mut verifier, &prompt, &opts(k), &mut rng).unwrap();
            assert_eq!(got.output_ids, want.output_ids, "K={k}, prompt {prompt:?}");
            // What sampling reveals to the client per step: the token, and with drafts the number
            // of leading acceptances, one word each, never the bits after the first rejection.
            let (bytes, messages) = revealed(&verifier);
            let (bytes, messages) = (bytes - before.0, messages - before.1);
            assert_eq!(bytes, 8 * messages);
            let steps = got.steps as u64;
            assert!(messages >= steps && messages <= if k == 0 { steps } else { 2 * steps });
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
    // 600 runs (was 1500): the chi-square's false alarm stays at its 1e-4 tail (z = 3.72; 1 in
    // 20,000 simulated samples from p), and the planted bias below is still caught (simulated power
    // 0.9995 at 600, 0.995 at 500).
    const RUNS: usize = 600;
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
    // The check has power at this sample size: a sampler whose rejections redraw from p instead
    // of the residual fails it in at least 99% of samples of RUNS.
    let planted = common::resampling_p_distribution(&public, &private, &prompt, 1.0, 3, 2);
    let power = common::chi_square_power(&planted, &expected, RUNS, 3.72, 2000);
    println!("power against resampling p: {power:.4}");
    assert!(power >= 0.99, "power {power:.4} against resampling p");
    assert!(
        accepted > 0 && accepted < drafted && bonus > RUNS / 5,
        "{accepted}/{drafted}, {bonus} bonus"
    );
    verifier.finish().unwrap();
}

#[test]
fn the_server_sees_uniform_bytes_and_only_the_announced_shapes_in_a_whole_generation() {
    let pair = load_pair("tiny-public", "tiny-private", &registry()).unwrap();
    let opts = DecodeOptions {
        draft_len: 3,
        temperature: 1.0,
        max_new_tokens: 10,
        stop_token: None,
    };
    let mut views = Vec::new();
    for prompt in [vec![5u32, 17, 900, 3], vec![0u32, 0, 0, 0]] {
        let mut verifier = SecureVerifier::start_recording(
            pair.private.model.gpt2().unwrap(),
            &ideal(),
            1.0,
            true,
        )
        .unwrap();
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let out = decode_with(&pair.public.model, &mut verifier, &prompt, &opts, &mut rng).unwrap();
        let view = verifier.finish().unwrap();
        assert!(
            view.transcript.len() > 1_000_000,
            "{}",
            view.transcript.len()
        );
        // 255 dof: the critical value at p = 1e-3 is 330.
        let chi = uniformity_chi_square(&view.transcript);
        assert!(
            chi < 330.0,
            "prompt {prompt:?}: chi-square {chi:.1} against uniform bytes"
        );

        // The announcements are the client's coin toss (its commitment, then its coin, which
        // must match), the step shapes and a final stop, nothing else: per step [1, keep, n_new, k].
        // The accepted counts come from the protocol's opening, one per step.
        let ann = &view.announcements;
        assert_eq!(ann.last().unwrap(), &vec![0, 0, 0, 0]);
        let coin = |words: &Vec<u64>| -> [u8; 32] {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            bytes.try_into().unwrap()
        };
        assert_eq!(
            coin(&ann[0]),
            post::secure::coins::commitment(&coin(&ann[1]))
        );
        let (mut i, mut steps, mut tokens) = (2, 0, prompt.len());
        while ann[i][0] == 1 {
            let (keep, n_new, k) = (ann[i][1] as usize, ann[i][2] as usize, ann[i][3] as usize);
            assert_eq!(
                keep + n_new - k,
                tokens,
                "step {steps}: the input is the uncached tokens + drafts"
            );
            // Each step continues from every verified position (the first from none).
            assert_eq!(keep, if steps == 0 { 0 } else { tokens - 1 });
            assert!(k <= 3);
            let n = view.accepted[steps];
            assert!(n <= k);
            tokens += n + 1;
            steps += 1;
            i += 1;
        }
        assert_eq!(i, ann.len() - 1);
        assert_eq!(
            (steps, tokens - prompt.len()),
            (out.steps, out.output_ids.len())
        );
        views.push(view.transcript);
    }
    let chi = two_sample_chi_square(&views[0], &views[1]);
    assert!(
        chi < 330.0,
        "the two prompts' transcripts differ: chi-square {chi:.1}"
    );

    // The check has power: the client's one-hot rows sent in clear among the traffic fail it.
    let mut leaky = views[0].clone();
    for id in [5u64, 17, 900, 3] {
        let mut row = vec![0u64; 1000];
        row[id as usize] = 1;
        leaky.extend(row.iter().flat_map(|v| v.to_le_bytes()));
    }
    assert!(uniformity_chi_square(&leaky) > 330.0);
}

/// The smallest gap between the largest and second-largest private logit along the plaintext
/// greedy path, and the output position where it occurs.
fn smallest_top2_margin(model: &post::model::Gpt2, prompt: &[u32], output: &[u32]) -> (f32, usize) {
    let mut seq = prompt.to_vec();
    seq.extend(output);
    let rows = model
        .forward_rows(&seq[..seq.len() - 1], &mut model.new_cache())
        .unwrap();
    rows[prompt.len() - 1..]
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut sorted = row.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            (sorted[0] - sorted[1], i)
        })
        .fold(
            (f32::INFINITY, 0),
            |best, m| if m.0 < best.0 { m } else { best },
        )
}

#[test]
fn secure_greedy_decoding_reproduces_plaintext_on_the_shipped_pair() {
    let pair = post::model::loader::load_named_pair("default-aligned", &registry()).unwrap();
    let (public, private) = (&pair.public.model, pair.private.model.gpt2().unwrap());
    let tokenizer = pair.tokenizer().unwrap();
    let text =
        std::fs::read_to_string(common::models_dir().join("../datasets/code-completion.jsonl"))
            .unwrap();
    let mut verifier = SecureVerifier::start(private, &ideal(), 0.0).unwrap();
    // The secure logits are within 5e-3 of candle's (tests/secure_forward.rs): a top-2 margin below
    // 1e-2 is a near-tie the secure path may break the other way.
    const NEAR_TIE: f32 = 1e-2;
    let mut compared_in_full = 0;
    for line in text.lines().take(4) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut prompt = tokenizer.encode(v["prompt"].as_str().unwrap()).unwrap();
        prompt.drain(..prompt.len().saturating_sub(96));
        let opts = |k| DecodeOptions {
            draft_len: k,
            temperature: 0.0,
            max_new_tokens: 32,
            stop_token: None,
        };
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        let want = speculative_decode(public, private, &prompt, &opts(0), &mut rng)
            .unwrap()
            .output_ids;
        let (margin, at) = smallest_top2_margin(private, &prompt, &want);
        // Compare up to a near-tie, and say so, rather than hide it.
        let checked = if margin < NEAR_TIE {
            println!(
                "{}: top-2 margin {margin:.2e} at output position {at}: compared up to it",
                v["id"]
            );
            at
        } else {
            compared_in_full += 1;
            want.len()
        };
        for k in [0, 4] {
            let got = decode_with(public, &mut verifier, &prompt, &opts(k), &mut rng).unwrap();
            assert_eq!(
                got.output_ids[..checked],
                want[..checked],
                "{} K={k}",
                v["id"]
            );
            println!(
                "{} K={k}: {} steps, smallest margin {margin:.3}",
                v["id"], got.steps
            );
            if k == 4 {
                assert!(
                    got.steps < 16,
                    "{}: the aligned pair should accept drafts",
                    v["id"]
                );
            }
        }
    }
    assert!(
        compared_in_full >= 3,
        "too many near-ties: only {compared_in_full} prompts compared in full"
    );
    verifier.finish().unwrap();
}

#[test]
fn private_sampling_at_a_low_temperature_stays_in_exp_domain() {
    // Logits [10, 9.9, -20, 0] at T = 0.05 shift to [0, -2, -600, -200]: far below exp's domain of
    // [-256, 0]. The next token must be 0 with probability 1 / (1 + e^-2) = 0.881, else 1, never 2 or 3.
    // Logits at f bits, and at 2f as the LM head leaves them before its truncation.
    use post::mpc::run_two_party;
    use post::secure::{private_sample_at, ClientDraws, StepUniforms};
    const DRAWS: usize = 300;
    for extra in [0u32, 16] {
        let (tokens, _) = run_two_party(&ideal(), move |p| {
            let logits = p
                .public(&p.fp.encode(&[1, 4], &[10.0, 9.9, -20.0, 0.0])?)
                .scale(1 << extra);
            let mut rng = ChaCha12Rng::seed_from_u64(8);
            let mut tokens = Vec::new();
            for _ in 0..DRAWS {
                let draws = ClientDraws {
                    drafts: vec![],
                    q: vec![],
                };
                let draws = p.is_client().then_some(&draws);
                // Both parties draw the same uniform (the same seed).
                let uniforms = StepUniforms::from_reals(&[], &[rand::Rng::random(&mut rng)]);
                let outcome = private_sample_at(p, &logits, extra, 0, 0.05, &uniforms, draws)?;
                assert_eq!(outcome.accepted, 0);
                tokens.push(outcome.next.unwrap_or(0));
            }
            Ok(tokens)
        })
        .unwrap();
        assert!(tokens.iter().all(|&t| t < 2), "extra {extra}: {tokens:?}");
        let zeros = tokens.iter().filter(|&&t| t == 0).count() as f64 / DRAWS as f64;
        // Binomial standard deviation sqrt(0.881 * 0.119 / 300) = 0.019: four of them.
        assert!(
            (zeros - 0.881).abs() < 0.075,
            "extra {extra}: token 0 drawn {zeros:.3} of the time"
        );
    }
}
