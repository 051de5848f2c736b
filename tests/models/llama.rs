//! The candle LLaMA family against Hugging Face `transformers`: logits, greedy tokens and
//! tokenizer ids of a tiny random LLaMA (GQA, untied head) and a tiny Qwen2 (q/k/v biases, tied
//! head), saved by scripts/make_llama_fixture.py and loaded here through the real loader; the
//! loader's errors for an unknown architecture and a missing tensor.

use std::path::{Path, PathBuf};

use crate::common::{self, max_abs_diff};

use post::decoding::{speculative_decode, DecodeOptions};
use post::model::loader::{load_dir, load_model};
use post::model::{LoadedModel, Model};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
    texts: Vec<Text>,
}

#[derive(Deserialize)]
struct Case {
    input_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Text {
    text: String,
    ids: Vec<u32>,
}

const FOLDERS: [&str; 2] = ["tiny-llama-ref", "tiny-llama-qwen2-ref"];

fn folder(name: &str) -> PathBuf {
    common::models_dir().join(name)
}

fn fixture(name: &str) -> Fixture {
    let path = folder(name).join("fixture.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(name: &str) -> LoadedModel {
    let dir = folder(name);
    load_dir(name, &dir, &dir).unwrap()
}

/// A copy of a fixture folder that a test may break.
fn copy_of(name: &str, tag: &str) -> PathBuf {
    let dir = common::temp_dir(tag);
    for entry in std::fs::read_dir(folder(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn the_loader_picks_the_architecture_from_model_type() {
    let llama = load("tiny-llama-ref");
    let qwen = load("tiny-llama-qwen2-ref");
    assert_eq!(llama.model.architecture(), "llama");
    assert_eq!(qwen.model.architecture(), "qwen2");
    let (Model::Llama(l), Model::Llama(q)) = (&llama.model, &qwen.model) else {
        panic!("both are LLaMA-style models")
    };
    assert_eq!(l.cfg.num_kv_heads(), 2);
    assert_eq!(l.cfg.num_attention_heads, 4);
    assert!(!l.cfg.tie_word_embeddings && q.cfg.tie_word_embeddings);
    assert!(l.layers[0].self_attn.q_proj.bias.is_none());
    assert!(q.layers[0].self_attn.q_proj.bias.is_some());
    // A GPT-2 folder still loads as GPT-2.
    let gpt2 = load_model("tiny-private", &common::registry()).unwrap();
    assert_eq!(gpt2.model.architecture(), "gpt2");
}

#[test]
fn logits_match_hugging_face_in_one_pass_and_token_by_token() {
    for name in FOLDERS {
        let loaded = load(name);
        for case in fixture(name).cases {
            let got = loaded
                .model
                .forward_rows(&case.input_ids, &mut loaded.model.new_cache())
                .unwrap();
            let diff = max_abs_diff(&got, &case.logits);
            println!(
                "{name}: {} tokens, max |logit - HF logit| {diff:.2e}",
                case.input_ids.len()
            );
            assert!(
                diff < 1e-4,
                "{name}: max |logit difference| {diff} for {:?}",
                case.input_ids
            );
            let (stepwise, cached) = common::stepwise_logits(&loaded.model, &case.input_ids);
            let diff = max_abs_diff(&stepwise, &case.logits);
            assert!(
                diff < 1e-4,
                "{name} (cached): max |logit difference| {diff}"
            );
            assert_eq!(cached, case.input_ids.len());
        }
    }
}

#[test]
fn greedy_decoding_gives_hugging_faces_tokens_with_and_without_drafts() {
    // What `post draft` runs: the plaintext draft-and-verify loop at T = 0.
    let llama = load("tiny-llama-ref");
    let qwen = load("tiny-llama-qwen2-ref");
    for (name, private) in [("tiny-llama-ref", &llama), ("tiny-llama-qwen2-ref", &qwen)] {
        for case in fixture(name).cases {
            for (public, k) in [(&llama, 0), (private, 3), (&qwen, 4), (&llama, 2)] {
                let opts = DecodeOptions {
                    draft_len: k,
                    temperature: 0.0,
                    max_new_tokens: case.greedy_ids.len(),
                    stop_token: None,
                };
                let mut rng = ChaCha12Rng::seed_from_u64(1);
                let out = speculative_decode(
                    &public.model,
                    &private.model,
                    &case.input_ids,
                    &opts,
                    &mut rng,
                )
                .unwrap();
                assert_eq!(
                    out.output_ids, case.greedy_ids,
                    "{name}, K = {k}, drafts by {}",
                    public.name
                );
            }
        }
    }
}

#[test]
fn kv_cache_rollback_gives_the_logits_of_a_fresh_forward() {
    let loaded = load("tiny-llama-ref");
    let model = &loaded.model;
    let ids = [1u32, 42, 399, 0, 120];
    let mut cache = model.new_cache();
    model.forward_rows(&ids, &mut cache).unwrap();
    model.forward_rows(&[5, 6, 7], &mut cache).unwrap(); // drafts, then rejected
    cache.truncate(ids.len()).unwrap();
    let after_rollback = model.forward_rows(&[8, 9], &mut cache).unwrap();
    let seq: Vec<u32> = ids.iter().copied().chain([8, 9]).collect();
    let direct = model.forward_rows(&seq, &mut model.new_cache()).unwrap();
    let diff = max_abs_diff(&after_rollback, &direct[ids.len()..]);
    assert!(diff < 1e-5, "rollback vs fresh: {diff}");
    // The rolled-back drafts did change the logits: the check above could fail.
    let with_drafts = {
        let mut c = model.new_cache();
        model
            .forward_rows(&[1, 42, 399, 0, 120, 5, 6, 7], &mut c)
            .unwrap();
        model.forward_rows(&[8], &mut c).unwrap()
    };
    assert!(max_abs_diff(&with_drafts, &direct[ids.len()..ids.len() + 1]) > 1e-3);
}

#[test]
fn tokenizer_ids_equal_hugging_faces_bos_included() {
    let loaded = load("tiny-llama-ref");
    let tok = loaded
        .tokenizer
        .as_ref()
        .expect("the fixture has a tokenizer");
    assert_eq!(tok.bos(), Some(1));
    for text in fixture("tiny-llama-ref").texts {
        assert_eq!(tok.encode(&text.text).unwrap(), text.ids, "{:?}", text.text);
    }
    // Byte fallback: the emoji is four <0xNN> byte tokens, and decodes back to itself.
    let ids = tok.encode("🦙").unwrap();
    assert_eq!(tok.decode(&ids[1..]).unwrap(), "🦙");
}

#[test]
fn bos_follows_tokenizer_config_and_else_the_post_processor() {
    let texts = fixture("tiny-llama-ref").texts;
    // Without tokenizer_config.json, tokenizer.json's post-processor adds the BOS (transformers 5).
    let dir = copy_of("tiny-llama-ref", "llama-no-tokconfig");
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    let tok = post::model::Tokenizer::from_dir(&dir).unwrap().unwrap();
    assert_eq!(tok.encode(&texts[0].text).unwrap(), texts[0].ids);
    // `add_bos_token: false` drops it.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"add_bos_token": false, "bos_token": "<s>"}"#,
    )
    .unwrap();
    let tok = post::model::Tokenizer::from_dir(&dir).unwrap().unwrap();
    assert_eq!(tok.encode(&texts[0].text).unwrap(), texts[0].ids[1..]);
    // A BOS token the vocabulary lacks is one clear error.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"add_bos_token": true, "bos_token": "<begin>"}"#,
    )
    .unwrap();
    let err = format!(
        "{:#}",
        post::model::Tokenizer::from_dir(&dir).err().unwrap()
    );
    assert!(err.contains("<begin>"), "{err}");
}

fn load_error(dir: &Path) -> String {
    format!(
        "{:#}",
        load_dir("broken", dir, dir).err().expect("must fail")
    )
}

#[test]
fn an_unknown_model_type_is_one_clear_error_naming_it() {
    let dir = copy_of("tiny-llama-ref", "llama-bert");
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"llama\"", "\"bert\"")).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("\"bert\"") && err.contains("model_type"),
        "{err}"
    );
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn a_missing_tensor_is_one_clear_error_naming_it() {
    let dir = copy_of("tiny-llama-ref", "llama-missing");
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let gone = "model.layers.1.mlp.up_proj.weight";
    assert!(tensors.remove(gone).is_some());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = load_error(&dir);
    assert!(err.contains(gone), "{err}");
}

#[test]
fn unsupported_configs_are_refused_naming_the_field() {
    let cases = [
        (
            r#""rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#,
            "rope_scaling",
        ),
        (
            r#""model_type": "mistral", "sliding_window": 16"#,
            "sliding_window",
        ),
        (r#""hidden_act": "gelu""#, "hidden_act"),
    ];
    for (i, (field, named)) in cases.into_iter().enumerate() {
        let dir = copy_of("tiny-llama-ref", &format!("llama-refused-{i}"));
        let path = dir.join("config.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let patch: serde_json::Value = serde_json::from_str(&format!("{{{field}}}")).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            json[k] = v.clone();
        }
        std::fs::write(&path, json.to_string()).unwrap();
        let err = load_error(&dir);
        assert!(err.contains(named), "{field}: {err}");
    }
    // A Mistral whose window covers the whole context is plain attention: it loads.
    let dir = copy_of("tiny-llama-ref", "llama-mistral");
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("\"llama\"", "\"mistral\"")
        .replace("\"vocab_size\"", "\"sliding_window\": 64, \"vocab_size\"");
    std::fs::write(&path, text).unwrap();
    let mistral = load_dir("mistral", &dir, &dir).unwrap();
    let case = &fixture("tiny-llama-ref").cases[1];
    let got = mistral
        .model
        .forward_rows(&case.input_ids, &mut mistral.model.new_cache())
        .unwrap();
    assert!(max_abs_diff(&got, &case.logits) < 1e-4);
}

#[test]
fn sharded_checkpoints_load_through_their_index() {
    let dir = copy_of("tiny-llama-ref", "llama-sharded");
    let single = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&single, &candle_core::Device::Cpu).unwrap();
    std::fs::remove_file(&single).unwrap();
    let (mut first, mut second) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut map = serde_json::Map::new();
    for (name, t) in tensors {
        let (shard, file) = if name.contains("layers.1") || name.starts_with("lm_head") {
            (&mut second, "model-00002-of-00002.safetensors")
        } else {
            (&mut first, "model-00001-of-00002.safetensors")
        };
        map.insert(name.clone(), file.into());
        shard.insert(name, t);
    }
    candle_core::safetensors::save(&first, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&second, dir.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({ "metadata": {}, "weight_map": map }).to_string(),
    )
    .unwrap();
    let sharded = load_dir("sharded", &dir, &dir).unwrap();
    let case = &fixture("tiny-llama-ref").cases[2];
    let got = sharded
        .model
        .forward_rows(&case.input_ids, &mut sharded.model.new_cache())
        .unwrap();
    assert!(max_abs_diff(&got, &case.logits) < 1e-4);
}
