//! The `post` binary end to end: the JSON of `post draft`, and one clear line (never a panic) for
//! each kind of bad input.

mod common;

use common::{post, post_error, post_ok};

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};

fn draft_with(public: &Path, private: &str) -> String {
    post_error(&[
        "draft",
        "--public",
        public.to_str().unwrap(),
        "--private",
        private,
        "--prompt-ids",
        "1,2",
    ])
}

#[test]
fn draft_prints_the_promised_json() {
    let json: serde_json::Value = serde_json::from_str(&post_ok(&[
        "draft",
        "--pair",
        "tiny",
        "--prompt",
        "def load(path):",
        "--draft-len",
        "4",
        "--json",
    ]))
    .unwrap();
    let result = &json["results"][0];
    for key in [
        "id",
        "prompt_ids",
        "output_ids",
        "text",
        "steps",
        "mean_accepted",
        "acceptance_rate",
    ] {
        assert!(result.get(key).is_some(), "missing {key} in {result}");
    }
    assert_eq!(result["output_ids"].as_array().unwrap().len(), 32);
    assert!(result["text"].is_string());
    let steps = result["steps"].as_u64().unwrap();
    assert!((1..=32).contains(&steps));
    let rate = result["acceptance_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate));
}

#[test]
fn draft_without_tokenizer_reports_null_text_and_reads_jsonl() {
    let dir = common::temp_dir("jsonl");
    let cfg = common::tiny_config(50, 16, 1, 2, 32);
    let model_dir = dir.join("m");
    common::write_model_dir(&model_dir, &cfg, &common::random_weights(&cfg, 1, 0.3));
    let prompts = dir.join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\":\"x\",\"prompt_ids\":[1,2]}\n{\"id\":\"y\",\"prompt_ids\":[3]}\n",
    )
    .unwrap();
    let m = model_dir.to_str().unwrap();
    let json: serde_json::Value = serde_json::from_str(&post_ok(&[
        "draft",
        "--public",
        m,
        "--private",
        m,
        "--prompts",
        prompts.to_str().unwrap(),
        "--json",
        "--max-new-tokens",
        "5",
    ]))
    .unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1]["id"], "y");
    assert!(results[0]["text"].is_null());
    // The same model drafting for itself at T=0 is accepted every time.
    assert_eq!(results[0]["acceptance_rate"].as_f64().unwrap(), 1.0);
    let err = post_error(&["draft", "--public", m, "--private", m, "--prompt", "hello"]);
    assert!(err.contains("no tokenizer"), "{err}");
}

#[test]
fn bad_model_folders_are_named() {
    let dir = common::temp_dir("bad-models");
    let cfg = common::tiny_config(1000, 16, 1, 2, 32);
    let weights = common::random_weights(&cfg, 1, 0.3);

    let err = draft_with(&dir.join("does-not-exist"), "tiny-private");
    assert!(
        err.contains("does-not-exist") && err.contains("not a folder"),
        "{err}"
    );

    let partial = dir.join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(
        partial.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let err = draft_with(&partial, "tiny-private");
    assert!(err.contains("no model.safetensors"), "{err}");

    let malformed = dir.join("malformed");
    common::write_model_dir(&malformed, &cfg, &weights);
    std::fs::write(
        malformed.join("config.json"),
        "{\"vocab_size\": 1000, \"n_embd\": ",
    )
    .unwrap();
    let err = draft_with(&malformed, "tiny-private");
    assert!(
        err.contains("malformed") && err.contains("config.json"),
        "{err}"
    );

    let missing = dir.join("missing-tensor");
    let mut without = weights.clone();
    without.remove("h.0.mlp.c_fc.bias");
    common::write_model_dir(&missing, &cfg, &without);
    let err = draft_with(&missing, "tiny-private");
    assert!(err.contains("h.0.mlp.c_fc.bias"), "{err}");

    let wrong = dir.join("wrong-shape");
    let mut reshaped = weights.clone();
    reshaped.insert(
        "h.0.attn.c_proj.weight".into(),
        Tensor::zeros((16, 17), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    common::write_model_dir(&wrong, &cfg, &reshaped);
    let err = draft_with(&wrong, "tiny-private");
    assert!(err.contains("shape") && err.contains("c_proj"), "{err}");

    let other_vocab = dir.join("other-vocab");
    let small = common::tiny_config(500, 16, 1, 2, 32);
    common::write_model_dir(
        &other_vocab,
        &small,
        &common::random_weights(&small, 1, 0.3),
    );
    let err = draft_with(&other_vocab, "tiny-private");
    assert!(err.contains("vocabulary"), "{err}");
}

#[test]
fn differing_tokenizers_are_refused() {
    let dir = common::temp_dir("tokenizers");
    let cfg = common::tiny_config(50257, 8, 1, 2, 16);
    let weights = common::random_weights(&cfg, 1, 0.3);
    let (a, b) = (dir.join("a"), dir.join("b"));
    common::write_model_dir(&a, &cfg, &weights);
    common::write_model_dir(&b, &cfg, &weights);
    let gpt2 = common::models_dir().join("gpt2-tokenizer");
    for file in ["vocab.json", "merges.txt"] {
        std::fs::copy(gpt2.join(file), a.join(file)).unwrap();
    }
    std::fs::copy(
        common::models_dir().join("tiny-gpt2-ref/tokenizer.json"),
        b.join("tokenizer.json"),
    )
    .unwrap();
    let err = post_error(&[
        "draft",
        "--public",
        a.to_str().unwrap(),
        "--private",
        b.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(
        err.contains("tokenizers") && err.contains("differ"),
        "{err}"
    );
}

#[test]
fn bad_flags_and_prompts_get_one_clear_line() {
    let err = post_error(&["draft", "--pair", "no-such-pair", "--prompt-ids", "1"]);
    assert!(
        err.contains("unknown pair") && err.contains("no-such-pair"),
        "{err}"
    );
    let err = post_error(&[
        "draft",
        "--pair",
        "tiny",
        "--prompt-ids",
        "1",
        "--draft-len",
        "0",
    ]);
    assert!(err.contains("--draft-len"), "{err}");
    let err = post_error(&[
        "draft",
        "--pair",
        "tiny",
        "--prompt-ids",
        "1",
        "--temperature",
        "-0.5",
    ]);
    assert!(err.contains("--temperature"), "{err}");
    let err = post_error(&["draft", "--pair", "tiny", "--prompt-ids", "1,two"]);
    assert!(err.contains("\"two\""), "{err}");
    let err = post_error(&["draft", "--pair", "tiny", "--prompt-ids", "1,5000"]);
    assert!(err.contains("5000") && err.contains("vocabulary"), "{err}");
    let long: Vec<String> = (0..65).map(|i| (i % 900).to_string()).collect();
    let err = post_error(&["draft", "--pair", "tiny", "--prompt-ids", &long.join(",")]);
    assert!(err.contains("context window"), "{err}");
    let err = post_error(&[
        "draft",
        "--pair",
        "tiny",
        "--prompts",
        "/no/such/file.jsonl",
    ]);
    assert!(err.contains("/no/such/file.jsonl"), "{err}");
    let err = post_error(&["sweep", "/no/such/grid.toml"]);
    assert!(err.contains("cannot read grid /no/such/grid.toml"), "{err}");
    let err = post_error(&[
        "--registry",
        "/no/such/registry.json",
        "draft",
        "--pair",
        "tiny",
        "--prompt-ids",
        "1",
    ]);
    assert!(err.contains("registry"), "{err}");
}

#[test]
fn an_absent_hub_model_names_the_cache_path() {
    let cache = common::temp_dir("hf-cache");
    let out = Command::new(env!("CARGO_BIN_EXE_post"))
        .args([
            "draft",
            "--public",
            "gpt2",
            "--private",
            "gpt2-medium",
            "--prompt",
            "hi",
        ])
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(cache.to_str().unwrap()) && stderr.contains("\"gpt2\""),
        "{stderr}"
    );
}

#[test]
fn verify_refuses_bad_input_in_one_line() {
    let dir = common::temp_dir("verify-bad");
    let small = common::tiny_config(500, 16, 1, 2, 32);
    let other_vocab = dir.join("other-vocab");
    common::write_model_dir(
        &other_vocab,
        &small,
        &common::random_weights(&small, 1, 0.3),
    );
    let err = post_error(&[
        "verify",
        "--public",
        other_vocab.to_str().unwrap(),
        "--private",
        "tiny-private",
        "--prompt-ids",
        "1,2",
    ]);
    assert!(err.contains("vocabulary"), "{err}");
    let base = ["verify", "--pair", "tiny", "--prompt-ids", "1,2"];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    let err = post_error(&with(&base, &["--draft-len", "0"]));
    assert!(err.contains("--draft-len"), "{err}");
    let err = post_error(&with(&base, &["--net", "moon"]));
    assert!(err.contains("moon") && err.contains("lan"), "{err}");
    let err = post_error(&with(&base, &["--temperature", "-1"]));
    assert!(err.contains("temperature"), "{err}");
    let long: Vec<String> = (0..65).map(|i| (i % 1000).to_string()).collect();
    let err = post_error(&["verify", "--pair", "tiny", "--prompt-ids", &long.join(",")]);
    assert!(err.contains("context window"), "{err}");
    let err = post_error(&["verify", "--pair", "tiny", "--prompt-ids", "1,5000"]);
    assert!(err.contains("5000"), "{err}");
    let err = post_error(&[
        "verify",
        "--forward-only",
        "--model",
        "tiny-private",
        "--tokens",
        "1,70",
    ]);
    assert!(err.contains("context window"), "{err}");
}

#[test]
fn verify_prints_json_and_appends_csv_rows() {
    let dir = common::temp_dir("verify-json");
    let csv = dir.join("rows.csv");
    let args = [
        "verify",
        "--pair",
        "tiny",
        "--prompt-ids",
        "7,42,3",
        "--max-new-tokens",
        "6",
        "--method",
        "both",
        "--net",
        "lan",
        "--net",
        "wan",
        "--json",
        "--csv",
        csv.to_str().unwrap(),
    ];
    let json: serde_json::Value = serde_json::from_str(&post_ok(&args)).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "one result per (prompt, method, net)");
    // Greedy: every method and link gives the same tokens, those of plaintext `post draft`.
    let plain = post(&[
        "draft",
        "--pair",
        "tiny",
        "--prompt-ids",
        "7,42,3",
        "--max-new-tokens",
        "6",
        "--json",
    ]);
    let plain: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    for r in results {
        assert_eq!(r["output_ids"], plain["results"][0]["output_ids"], "{r}");
        assert!(r["costs"]["rounds"].as_u64().unwrap() > 100);
    }
    let summary = json["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 4);
    let wan: Vec<&serde_json::Value> = summary.iter().filter(|s| s["net"] == "wan").collect();
    // The same rounds cost far more on the WAN's 80 ms than on the LAN's 0.8 ms.
    let lan_standard = &summary[0];
    assert!(
        wan[0]["sim_seconds"].as_f64().unwrap()
            > 20.0 * lan_standard["sim_seconds"].as_f64().unwrap()
    );
    assert_eq!(lan_standard["speedup_vs_standard"].as_f64(), Some(1.0));
    // A second run appends rows under the one header.
    assert!(post(&args).status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 1 + 8, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("id,")).count(), 1);
}

#[test]
fn draft_runs_a_llama_pair_from_text() {
    // A Qwen2 drafting for a LLaMA: two architectures, one tokenizer (BOS added as configured).
    let json: serde_json::Value = serde_json::from_str(&post_ok(&[
        "draft",
        "--pair",
        "tiny-llama",
        "--prompt",
        "Hello world",
        "--draft-len",
        "3",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--json",
    ]))
    .unwrap();
    let result = &json["results"][0];
    assert_eq!(result["prompt_ids"][0], 1, "the BOS starts the prompt");
    assert_eq!(result["output_ids"].as_array().unwrap().len(), 8);
    assert!(result["text"].is_string());
    // The LLaMA folder by path, drafting for itself: every draft is accepted at T = 0.
    let dir = common::models_dir().join("tiny-llama-ref");
    let m = dir.to_str().unwrap();
    let json: serde_json::Value = serde_json::from_str(&post_ok(&[
        "draft",
        "--public",
        m,
        "--private",
        m,
        "--prompt-ids",
        "1,17,3",
        "--draft-len",
        "4",
        "--max-new-tokens",
        "10",
        "--temperature",
        "0",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["summary"]["acceptance_rate"], 1.0);
}

#[test]
fn the_secure_path_refuses_a_llama_model_with_one_clear_line() {
    let err = post_error(&["verify", "--pair", "tiny-llama", "--prompt-ids", "1,2"]);
    assert!(err.contains("GPT-2") && err.contains("qwen2"), "{err}");
}

#[test]
fn bench_times_a_llama_forward_in_plaintext() {
    let out = post_ok(&[
        "bench",
        "--mode",
        "forward",
        "--model",
        "tiny-llama",
        "--context",
        "8",
        "--tokens",
        "1,4",
        "--repeats",
        "2",
    ]);
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("tiny-llama")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, tokens) in rows.iter().zip(["1", "4"]) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1..3], ["8", tokens], "{row}");
        let ms: f64 = cells[3].parse().unwrap();
        assert!(ms > 0.0 && ms.is_finite(), "{row}");
    }
}
