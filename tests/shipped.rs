//! The trained models that ship in `models/`: both pairs load, share one tokenizer, draft, and the
//! private model is the better one on the code domain it was specialised to.

use std::path::Path;

use post::model::loader::{load_named_pair, Registry};
use post::spec::{speculative_decode, DecodeOptions};
use post::train::cross_entropy_on;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

fn registry() -> Registry {
    Registry::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/registry.json"))
        .unwrap()
}

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
fn the_private_model_knows_code_better_than_the_public_one() {
    let pair = load_named_pair("default", &registry()).unwrap();
    let tokenizer = pair.tokenizer().unwrap();
    let code = prompts("code-completion.jsonl", tokenizer, 40);
    let (private_ce, _) = cross_entropy_on(&pair.private.model, &code).unwrap();
    let (public_ce, _) = cross_entropy_on(&pair.public.model, &code).unwrap();
    assert!(
        private_ce + 0.2 < public_ce,
        "code cross-entropy: private {private_ce:.3}, public {public_ce:.3}"
    );
}
