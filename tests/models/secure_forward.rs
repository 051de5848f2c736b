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
