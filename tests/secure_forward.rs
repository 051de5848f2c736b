//! The secure GPT-2 forward against candle: logits opened from shares, through the shared KV cache.

mod common;

use post::bench::secure::logit_error;
use post::model::loader::{load_model, Registry};
use post::mpc::EngineConfig;

fn registry() -> Registry {
    Registry::from_file(&common::models_dir().join("registry.json")).unwrap()
}

#[test]
fn secure_logits_match_candle_on_the_tiny_model() {
    let model = load_model("tiny-private", &registry()).unwrap().model;
    let ids: Vec<u32> = vec![7, 999, 0, 512, 77, 3, 41, 600, 2, 18];
    let (max, mean) = logit_error(&model, &EngineConfig::default(), &ids, 7).unwrap();
    println!("tiny-private: max {max:.2e}, mean {mean:.2e}");
    assert!(max < 1e-2 && mean < 2e-3, "max {max}, mean {mean}");
}
