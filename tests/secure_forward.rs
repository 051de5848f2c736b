//! The secure GPT-2 forward against candle: logits opened from shares, through the shared KV cache
//! (the first tokens in one forward, the rest in a second one).

mod common;

use post::bench::secure::logit_error;
use post::model::loader::{load_model, Registry};
use post::mpc::EngineConfig;

fn registry() -> Registry {
    Registry::from_file(&common::models_dir().join("registry.json")).unwrap()
}

/// (max, mean) absolute logit error of a model over a sequence split in two forwards.
fn error_of(name: &str, len: usize, split: usize) -> (f64, f64) {
    let model = load_model(name, &registry()).unwrap().model;
    let vocab = model.config().vocab_size;
    let ids: Vec<u32> = (0..len).map(|i| ((i * 7919 + 11) % vocab) as u32).collect();
    let engine = EngineConfig {
        seed: Some(1),
        ..EngineConfig::default()
    };
    let (max, mean) = logit_error(&model, &engine, &ids, split).unwrap();
    println!("{name}: {len} positions, max |error| {max:.2e}, mean {mean:.2e}");
    (max, mean)
}

#[test]
fn secure_logits_match_candle_on_the_tiny_model() {
    // Every weight random, LayerNorm gains included; logits up to ~12.
    let (max, mean) = error_of("tiny-private", 24, 17);
    assert!(max < 1e-2 && mean < 1e-3, "max {max}, mean {mean}");
}

#[test]
fn secure_logits_match_candle_on_the_shipped_models() {
    for name in [
        "default-private",
        "default-public",
        "default-aligned-public",
    ] {
        let (max, mean) = error_of(name, 100, 96);
        assert!(max < 5e-3 && mean < 5e-4, "{name}: max {max}, mean {mean}");
    }
}
