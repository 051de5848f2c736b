//! The secure GPT-2 forward against candle: logits opened from shares, through the shared KV cache
//! (the first tokens in one forward, the rest in a second one).

use crate::common::registry;

use post::bench::secure::{logit_error, LogitError};
use post::model::loader::load_model;
use post::mpc::EngineConfig;

/// Absolute logit error of a model over a sequence split in two forwards.
fn error_of(name: &str, len: usize, split: usize) -> LogitError {
    let model = load_model(name, &registry())
        .unwrap()
        .model
        .into_gpt2()
        .unwrap();
    let vocab = model.config().vocab_size;
    let ids: Vec<u32> = (0..len).map(|i| ((i * 7919 + 11) % vocab) as u32).collect();
    let engine = EngineConfig {
        seed: Some(1),
        ..EngineConfig::default()
    };
    let e = logit_error(&model, &engine, &ids, split).unwrap();
    println!(
        "{name}: {len} positions, max |error| {:.2e}, mean {:.2e}, largest |logit| {:.1}",
        e.max, e.mean, e.max_abs_logit
    );
    e
}

#[test]
fn secure_logits_match_candle_on_the_tiny_model() {
    // Every weight random, LayerNorm gains included; logits up to ~12.
    let e = error_of("tiny-private", 24, 17);
    assert!(e.max < 1e-2 && e.mean < 1e-3, "{e:?}");
}

#[test]
fn secure_logits_match_candle_on_the_shipped_models() {
    for name in [
        "default-private",
        "default-public",
        "default-aligned-public",
    ] {
        // Relative to the largest logit: the pair retrained in issue 11 has sharper logits (up to
        // 17) and measures max errors of 3.0e-4 (public), 4.2e-4 (private) and 6.5e-4 (aligned)
        // of that scale, means of 3.4e-5 to 6.6e-5.
        let e = error_of(name, 100, 96);
        let scale = e.max_abs_logit;
        assert!(
            e.max < 1e-3 * scale && e.mean < 1e-4 * scale,
            "{name}: {e:?}"
        );
    }
}

/// A tiny random LLaMA: GQA with 2 key-value heads for 4 query heads, untied head, vocabulary
/// 256; a wide initialisation so that its logits spread over a few units.
fn tiny_llama() -> post::model::Llama {
    let mut cfg = post::model::LlamaConfig::sized(64, 160, 2, 4, 2);
    cfg.vocab_size = 256;
    cfg.max_position_embeddings = 128;
    cfg.initializer_range = 0.15;
    post::model::Llama::random(&cfg, 26).unwrap()
}

/// Greedy decoding of the plaintext model, every step a fresh forward over the whole sequence.
fn greedy(model: &post::model::Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let rows = model.forward_rows(&ids, &mut model.new_cache()).unwrap();
        let last = rows.last().unwrap();
        let best = (0..last.len()).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        ids.push(best as u32);
    }
    ids[prompt.len()..].to_vec()
}

#[test]
fn secure_llama_logits_match_candle_on_a_tiny_model() {
    use post::bench::secure::forward_costs;
    use post::mpc::LinkModel;
    let model = tiny_llama();
    let ids: Vec<u32> = (0..24).map(|i| ((i * 7919 + 11) % 256) as u32).collect();
    let engine = EngineConfig {
        seed: Some(1),
        ..EngineConfig::default()
    };
    let e = logit_error(&model, &engine, &ids, 17).unwrap();
    println!(
        "tiny llama: max |error| {:.2e}, mean {:.2e}, largest |logit| {:.1}",
        e.max, e.mean, e.max_abs_logit
    );
    // GPT-2's bound for its tiny random model; logits here reach a few units.
    assert!(e.max_abs_logit > 1.0, "{e:?}");
    assert!(e.max < 1e-2 && e.mean < 1e-3, "{e:?}");

    // Rounds: at a context of 96 + 4 (softmax's tournament over 65-128 positions: 7 levels) a
    // layer takes GPT-2's 37, and the forward 2 x 37 + 1 + 5.
    let links = [("ideal".to_string(), LinkModel::ideal())];
    let (rows, parts) =
        forward_costs("tiny-llama", model.clone().into(), &links, 96, &[4]).unwrap();
    let layer = |i: usize| parts[&format!("block{i}")].rounds;
    println!(
        "tiny llama: {} rounds a forward, {} a layer",
        rows[0].rounds,
        layer(0)
    );
    for (label, want) in [
        ("block0/norm+qkv", 5),
        ("block0/attn/scores", 1),
        ("block0/attn/softmax", 20),
        ("block0/attn/o_proj", 1),
        ("block0/norm+gate_up", 5),
        ("block0/mlp/silu_mul", 4),
        ("block0/mlp/down_proj", 1),
    ] {
        assert_eq!(parts[label].rounds, want, "{label}");
    }
    assert_eq!((layer(0), layer(1)), (37, 37));
    assert_eq!(rows[0].rounds, 2 * 37 + 1 + 5);
}

#[test]
fn secure_llama_decoding_at_t0_gives_the_plaintext_tokens() {
    use post::decoding::{decode_with, DecodeOptions};
    use post::model::LanguageModel;
    use post::mpc::LinkModel;
    use post::secure::SecureVerifier;
    use rand::SeedableRng;
    let private = tiny_llama();
    // Drafters: the private model itself (every draft passes) and a random GPT-2 over the same
    // vocabulary (most are rejected), so both the accepting and the rejecting paths run.
    let gpt2 = crate::common::random_model(&crate::common::tiny_config(256, 32, 1, 2, 128), 3, 0.3);
    let drafters: [&dyn LanguageModel; 2] = [&private, &gpt2];
    let engine = EngineConfig {
        link: LinkModel::ideal(),
        seed: Some(1),
        ..EngineConfig::default()
    };
    let mut verifier = SecureVerifier::start(&private, &engine, 0.0).unwrap();
    for prompt in [vec![7u32], vec![1, 2, 3, 4, 200]] {
        let want = greedy(&private, &prompt, 12);
        for (d, public) in drafters.iter().enumerate() {
            for k in [0, 3] {
                let opts = DecodeOptions {
                    draft_len: k,
                    temperature: 0.0,
                    max_new_tokens: 12,
                    stop_token: None,
                };
                let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(0);
                let got = decode_with(*public, &mut verifier, &prompt, &opts, &mut rng).unwrap();
                assert_eq!(
                    got.output_ids, want,
                    "drafter {d}, K={k}, prompt {prompt:?}"
                );
                if d == 0 && k == 3 {
                    // Self-drafting at T = 0: every draft is the private argmax.
                    assert!(got.accepted > 0 && got.accepted == got.drafted, "{got:?}");
                }
                println!(
                    "drafter {d}, K={k}: steps {}, accepted {}",
                    got.steps, got.accepted
                );
            }
        }
    }
    verifier.finish().unwrap();
}

#[test]
fn costs_measured_on_two_layers_project_the_full_model() {
    use post::bench::secure::{forward_costs, forward_costs_by_layers};
    use post::mpc::LinkModel;
    let mut cfg = post::model::LlamaConfig::sized(64, 160, 4, 4, 2);
    cfg.vocab_size = 256;
    cfg.max_position_embeddings = 128;
    let model = post::model::Llama::random(&cfg, 27).unwrap();
    let links = [("lan".to_string(), LinkModel::lan())];
    let (full, _) = forward_costs("tiny-llama", model.clone().into(), &links, 40, &[1, 4]).unwrap();
    let (projected, parts) = forward_costs_by_layers(
        "tiny-llama",
        model.clone().into(),
        &links,
        40,
        &[1, 4],
        Some(2),
    )
    .unwrap();
    assert!(parts.contains_key("block1") && !parts.contains_key("block2"));
    for (f, p) in full.iter().zip(&projected) {
        assert_eq!(p.projected_from_layers, Some(2));
        // Layers from the second on are identical: rounds and bytes project exactly.
        assert_eq!(
            (p.rounds, p.client_mb, p.server_mb, p.dealer_mb),
            (f.rounds, f.client_mb, f.server_mb, f.dealer_mb),
            "{} tokens",
            f.new_tokens
        );
        // Time is measured compute plus the link: close, not equal.
        let ratio = p.sim_seconds / f.sim_seconds;
        assert!(
            (0.5..2.0).contains(&ratio),
            "sim seconds {} vs {}",
            p.sim_seconds,
            f.sim_seconds
        );
        println!(
            "{} tokens: {} rounds, sim {:.4} s projected, {:.4} s measured",
            f.new_tokens, f.rounds, p.sim_seconds, f.sim_seconds
        );
    }
    // GPT-2 has no by-layer path: a clear error.
    let gpt2 = crate::common::random_model(&crate::common::tiny_config(16, 16, 1, 2, 16), 1, 0.3);
    let err = forward_costs_by_layers("gpt2", gpt2.into(), &links, 2, &[1], Some(1)).unwrap_err();
    assert!(err.to_string().contains("LLaMA-style"), "{err}");
}

#[test]
fn secure_logits_match_candle_on_the_llama_fixture() {
    // The Hugging Face fixture (GQA 4/2 heads, untied head, d = 32, eps 1e-6) as the loader
    // reads it, over two forwards through the shared KV cache.
    let model = load_model("tiny-llama", &registry()).unwrap().model;
    let ids: Vec<u32> = (0..40).map(|i| ((i * 7919 + 11) % 256) as u32).collect();
    let engine = EngineConfig {
        seed: Some(1),
        ..EngineConfig::default()
    };
    let e = logit_error(&model, &engine, &ids, 29).unwrap();
    println!(
        "tiny-llama fixture: max |error| {:.2e}, mean {:.2e}, largest |logit| {:.2}",
        e.max, e.mean, e.max_abs_logit
    );
    assert!(e.max < 1e-2 && e.mean < 1e-3, "{e:?}");
}
