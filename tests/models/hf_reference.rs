//! The candle GPT-2 against Hugging Face `transformers`: logits and greedy tokens of a tiny random
//! model, saved by scripts/make_tiny_fixtures.py, loaded here through the real loader.

use crate::common::{self, max_abs_diff};

use post::decoding::sampling::argmax;
use post::model::loader::load_model;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    input_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy_ids: Vec<u32>,
}

fn fixture() -> Fixture {
    let path = common::models_dir().join("tiny-gpt2-ref/fixture.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tiny() -> post::model::LoadedModel {
    load_model("tiny-private", &common::registry()).unwrap()
}

#[test]
fn full_sequence_logits_match_hugging_face() {
    let loaded = tiny();
    for case in fixture().cases {
        let mut cache = loaded.model.new_cache();
        let got = loaded
            .model
            .forward_rows(&case.input_ids, &mut cache)
            .unwrap();
        let diff = max_abs_diff(&got, &case.logits);
        assert!(
            diff < 1e-4,
            "max |logit difference| {diff} for {:?}",
            case.input_ids
        );
    }
}

#[test]
fn incremental_kv_cached_logits_match_hugging_face() {
    let loaded = tiny();
    for case in fixture().cases {
        let (got, cached) = common::stepwise_logits(&loaded.model, &case.input_ids);
        let diff = max_abs_diff(&got, &case.logits);
        assert!(
            diff < 1e-4,
            "max |logit difference| {diff} for {:?}",
            case.input_ids
        );
        assert_eq!(cached, case.input_ids.len());
    }
}

#[test]
fn greedy_continuation_matches_hugging_face_with_and_without_cache() {
    let loaded = tiny();
    let model = &loaded.model;
    for case in fixture().cases {
        // Incremental: prefill once, then one token per call.
        let mut cache = model.new_cache();
        let mut rows = model.forward_rows(&case.input_ids, &mut cache).unwrap();
        let mut cached = Vec::new();
        for _ in 0..case.greedy_ids.len() {
            let next = argmax(rows.last().unwrap()) as u32;
            cached.push(next);
            rows = model.forward_rows(&[next], &mut cache).unwrap();
        }
        assert_eq!(cached, case.greedy_ids);
        // Uncached: the whole sequence again every step.
        let mut seq = case.input_ids.clone();
        for _ in 0..case.greedy_ids.len() {
            let rows = model.forward_rows(&seq, &mut model.new_cache()).unwrap();
            seq.push(argmax(rows.last().unwrap()) as u32);
        }
        assert_eq!(seq[case.input_ids.len()..], case.greedy_ids[..]);
    }
}

#[test]
fn cache_rollback_gives_the_same_logits_as_never_having_seen_the_tokens() {
    let loaded = tiny();
    let model = &loaded.model;
    let ids = [42u32, 999, 0, 512, 77];
    let mut cache = model.new_cache();
    model.forward_rows(&ids, &mut cache).unwrap();
    model.forward_rows(&[5, 6, 7], &mut cache).unwrap(); // drafts, then rejected
    cache.truncate(ids.len()).unwrap();
    let after_rollback = model.forward_rows(&[8], &mut cache).unwrap();
    let mut fresh = model.new_cache();
    let mut seq = ids.to_vec();
    seq.push(8);
    let direct = model.forward_rows(&seq, &mut fresh).unwrap();
    assert!(max_abs_diff(&after_rollback, &direct[ids.len()..]) < 1e-5);
}

#[test]
fn gpt2_tokenizer_gives_the_reference_ids() {
    let tok = post::model::Tokenizer::from_dir(&common::models_dir().join("gpt2-tokenizer"))
        .unwrap()
        .expect("shipped tokenizer");
    // Ids from OpenAI's encoder: "Hello" = 15496, " world" = 995, "!" = 0.
    assert_eq!(tok.encode("Hello world!").unwrap(), vec![15496, 995, 0]);
    assert_eq!(tok.decode(&[15496, 995, 0]).unwrap(), "Hello world!");
    assert_eq!(tok.vocab_size(), 50257);
}
