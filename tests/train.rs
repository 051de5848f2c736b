//! Training and distillation on tiny models: the loss falls, checkpoints are Hugging Face folders
//! the loader reads, runs are deterministic and resumable, the distillation losses match their f64
//! definitions, and distillation raises the acceptance of drafts.

mod common;

use common::post;

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use post::model::loader::load_dir;
use post::model::{Config, LanguageModel, Llama, LlamaConfig, Model, Tokenizer};
use post::train::data::TokenStream;
use post::train::distill::{loss_fn, DistillLoss};
use post::train::{fit, next_token_loss, TrainOptions, Trainee, TrainerState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

fn corpus(dir: &Path) -> std::path::PathBuf {
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "def", "return", "(x)",
        "+ 1",
    ];
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(words[rng.random_range(0..words.len())]);
        text.push(if i % 12 == 11 { '\n' } else { ' ' });
    }
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

fn tiny_cfg(vocab: usize) -> Config {
    common::tiny_config(vocab, 32, 1, 2, 32)
}

fn options(steps: usize) -> TrainOptions {
    TrainOptions {
        steps,
        batch_size: 8,
        seq_len: 16,
        lr: 1e-2,
        warmup: 5,
        min_lr_ratio: 0.1,
        weight_decay: 0.0,
        grad_clip: 1.0,
        seed: 3,
        checkpoint_every: 1000,
    }
}

fn train_tiny(
    dir: &Path,
    steps: usize,
) -> (Trainee, Tokenizer, post::train::FitReport, TokenStream) {
    let file = corpus(dir);
    let tokenizer = Tokenizer::train_bpe(std::slice::from_ref(&file), 300).unwrap();
    let trainee = Trainee::fresh(tiny_cfg(tokenizer.vocab_size()), 3).unwrap();
    let stream = TokenStream::from_files(&[file], &tokenizer).unwrap();
    let opts = options(steps);
    let report = fit(
        &trainee,
        &tokenizer,
        &opts,
        &dir.join("ckpt"),
        0,
        "test",
        DType::F32,
        |step| stream.batch(opts.seed, step, opts.batch_size, opts.seq_len),
        |m, x, y| next_token_loss(&m.forward(x, &mut m.new_cache())?, y),
    )
    .unwrap();
    (trainee, tokenizer, report, stream)
}

#[test]
fn training_lowers_the_loss_and_writes_a_loadable_checkpoint() {
    let dir = common::temp_dir("train");
    let (trainee, tokenizer, report, _) = train_tiny(&dir, 150);
    // A model that learned only token frequencies would sit at the corpus's unigram entropy;
    // words split into several BPE tokens make the next token predictable well below it.
    let text = std::fs::read_to_string(dir.join("corpus.txt")).unwrap();
    let ids = tokenizer.encode(&text).unwrap();
    let mut counts = std::collections::HashMap::new();
    for id in &ids {
        *counts.entry(id).or_insert(0usize) += 1;
    }
    let n = ids.len() as f64;
    let unigram: f64 = counts
        .values()
        .map(|&c| -(c as f64 / n) * (c as f64 / n).ln())
        .sum();
    assert!(
        report.final_loss < unigram - 0.3,
        "loss {} vs unigram entropy {unigram}",
        report.final_loss
    );
    let loaded = load_dir("ckpt", &dir.join("ckpt"), &dir.join("ckpt")).unwrap();
    let ids = [5u32, 9, 40, 7];
    let a = loaded
        .model
        .forward_rows(&ids, &mut loaded.model.new_cache())
        .unwrap();
    let b = trainee
        .model
        .forward_rows(&ids, &mut trainee.model.new_cache())
        .unwrap();
    let diff = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "reloaded logits differ by {diff}");
    assert!(
        loaded.tokenizer.is_some(),
        "the checkpoint carries its tokenizer"
    );
}

#[test]
fn the_same_seed_gives_the_same_weights() {
    let (d1, d2) = (common::temp_dir("seed-a"), common::temp_dir("seed-b"));
    train_tiny(&d1, 8);
    train_tiny(&d2, 8);
    let a = std::fs::read(d1.join("ckpt/model.safetensors")).unwrap();
    let b = std::fs::read(d2.join("ckpt/model.safetensors")).unwrap();
    assert!(a == b, "two runs with one seed wrote different weights");
    // ... and training changed them: the checkpoint is not the initialisation.
    let trained = load_dir("a", &d1.join("ckpt"), &d1.join("ckpt")).unwrap();
    let init = Trainee::fresh(trained.model.config(), 3).unwrap();
    let ids = [5u32, 9, 40, 7];
    let x = trained
        .model
        .forward_rows(&ids, &mut trained.model.new_cache())
        .unwrap();
    let y = init
        .model
        .forward_rows(&ids, &mut init.model.new_cache())
        .unwrap();
    let moved = x
        .iter()
        .flatten()
        .zip(y.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 0.1, "logits moved by only {moved}");
}

#[test]
fn a_trainee_starts_from_the_models_random_weights() {
    // The benchmarks' random models (`Gpt2::random`) and the trainer's starting point are one
    // initialisation: the same weights for the same seed.
    let cfg = tiny_cfg(64);
    for seed in [0, 3] {
        let model = post::model::Gpt2::random(&cfg, seed).unwrap();
        let trainee = Trainee::fresh(&cfg, seed).unwrap();
        let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let same = trainee.model.gpt2().unwrap();
        assert_eq!(flat(model.wte()), flat(same.wte()));
        assert_eq!(flat(model.wpe()), flat(same.wpe()));
        assert_eq!(flat(&model.ln_f().weight), flat(&same.ln_f().weight));
        let ids = [5u32, 9, 40, 7];
        let x = model.forward_rows(&ids, &mut model.new_cache()).unwrap();
        let y = trainee
            .model
            .forward_rows(&ids, &mut trainee.model.new_cache())
            .unwrap();
        assert_eq!(x, y, "seed {seed}: every weight agrees");
    }
}

fn state(dir: &Path) -> TrainerState {
    serde_json::from_str(&std::fs::read_to_string(dir.join("trainer_state.json")).unwrap()).unwrap()
}

/// `post train` on a one-layer model over `corpus`, checkpointing every 2 steps into `out`.
fn tiny_train_args<'a>(corpus: &'a str, out: &'a str) -> [&'a str; 21] {
    [
        "train",
        "--corpus",
        corpus,
        "--out",
        out,
        "--vocab-size",
        "300",
        "--n-layer",
        "1",
        "--n-embd",
        "32",
        "--n-head",
        "2",
        "--n-positions",
        "32",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "2",
    ]
}

#[test]
fn post_train_trains_a_llama_with_grouped_query_attention() {
    let dir = common::temp_dir("train-llama");
    let file = corpus(&dir);
    let out = dir.join("run");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let mut args = tiny_train_args(f, o).to_vec();
    let heads = args.iter().position(|&a| a == "--n-head").unwrap() + 1;
    args[heads] = "4";
    args.extend([
        "--arch",
        "llama",
        "--n-kv-head",
        "2",
        "--steps",
        "60",
        "--warmup",
        "5",
        "--lr",
        "1e-2",
    ]);
    let stdout = common::post_ok(&args);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let loaded = load_dir("run", &out, &out).unwrap();
    let Model::Llama(llama) = &loaded.model else {
        panic!(
            "post train --arch llama wrote a {} model",
            loaded.model.architecture()
        )
    };
    assert_eq!(
        (llama.cfg.num_attention_heads, llama.cfg.num_kv_heads()),
        (4, 2)
    );
    assert_eq!(llama.cfg.intermediate_size, 32 * 8 / 3);
    // 60 steps of a 300-token BPE: well below the uniform guess's ln(300) = 5.7 nats.
    let loss = report["final_loss"].as_f64().unwrap();
    assert!(loss < 4.5, "final loss {loss}");
    let e = String::from_utf8_lossy(
        &post(&[&tiny_train_args(f, o)[..], &["--n-kv-head", "2"]].concat()).stderr,
    )
    .to_string();
    assert!(e.contains("--arch llama"), "{e}");
}

#[test]
fn an_interrupted_run_resumes_from_its_checkpoint_and_bad_input_is_named() {
    let dir = common::temp_dir("resume");
    let file = corpus(&dir);
    let out = dir.join("run");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let base = tiny_train_args(f, o);
    // The first run "stops" after 30 of its steps: its last checkpoint holds step 30.
    let fast = ["--lr", "1e-2", "--warmup", "5"];
    let run = post(&[&base[..], &fast, &["--steps", "30"]].concat());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(state(&out).step, 30);
    let text = std::fs::read_to_string(&file).unwrap();
    let loss_of = |dir: &Path| {
        let m = load_dir("m", dir, dir).unwrap();
        let ids = m.tokenizer.as_ref().unwrap().encode(&text).unwrap();
        let seqs: Vec<Vec<u32>> = ids.chunks(32).map(<[u32]>::to_vec).collect();
        post::train::cross_entropy_on(&m.model, &seqs).unwrap().0
    };
    let at_checkpoint = loss_of(&out);
    let resumed = post(&[&base[..], &fast, &["--steps", "32", "--resume"]].concat());
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(state(&out).step, 32);
    // The resumed run started from the checkpoint's weights: two more steps keep its loss, where
    // a re-initialised model (uniform: ln 300 = 5.7 nats) could not get near it in two steps.
    let after = loss_of(&out);
    let uniform = 300f64.ln();
    assert!(
        at_checkpoint < uniform - 1.5,
        "checkpoint loss {at_checkpoint}"
    );
    assert!(
        after < at_checkpoint + 0.1,
        "resumed loss {after} vs checkpoint {at_checkpoint}"
    );

    let err = |args: &[&str]| {
        let out = post(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let mut other_shape = base.to_vec();
    other_shape[10] = "64"; // --n-embd
    let e = err(&[&other_shape[..], &["--steps", "8", "--resume"]].concat());
    assert!(e.contains("incompatible"), "{e}");
    let empty_dir = dir.join("empty");
    let e = err(&[
        "train",
        "--corpus",
        f,
        "--out",
        empty_dir.to_str().unwrap(),
        "--resume",
        "--vocab-size",
        "300",
    ]);
    assert!(e.contains("no checkpoint"), "{e}");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let e = err(&[
        "train",
        "--corpus",
        empty.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
        "--tokenizer",
        o,
    ]);
    assert!(e.contains("holds no text"), "{e}");
    let e = err(&[
        "train",
        "--corpus",
        "/no/such/corpus.txt",
        "--out",
        dir.join("y").to_str().unwrap(),
    ]);
    assert!(e.contains("/no/such/corpus.txt"), "{e}");
    // A file where the checkpoint folder should be.
    let e = err(&[
        "train",
        "--corpus",
        f,
        "--out",
        file.to_str().unwrap(),
        "--vocab-size",
        "300",
    ]);
    assert!(e.contains("checkpoint folder"), "{e}");
}

/// f64 reference of the distillation losses on one row each.
fn reference(student: &[f32], teacher: &[f32]) -> (f64, f64, f64) {
    let soft = |l: &[f32]| {
        let m = l.iter().copied().fold(f32::MIN, f32::max) as f64;
        let e: Vec<f64> = l.iter().map(|&x| (x as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect::<Vec<f64>>()
    };
    let (q, p) = (soft(student), soft(teacher));
    let fkl = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
    let rkl = p.iter().zip(&q).map(|(p, q)| q * (q / p).ln()).sum();
    let tv = 0.5 * p.iter().zip(&q).map(|(p, q)| (p - q).abs()).sum::<f64>();
    (fkl, rkl, tv)
}

#[test]
fn distillation_losses_match_their_definitions() {
    let mut rng = ChaCha12Rng::seed_from_u64(4);
    let (b, t, v) = (2, 3, 7);
    let s: Vec<f32> = (0..b * t * v)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let te: Vec<f32> = (0..b * t * v)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let st = Tensor::from_vec(s.clone(), (b, t, v), &Device::Cpu).unwrap();
    let tt = Tensor::from_vec(te.clone(), (b, t, v), &Device::Cpu).unwrap();
    let targets = Tensor::zeros((b, t), DType::U32, &Device::Cpu).unwrap();
    let (mut fkl, mut rkl, mut tv) = (0.0, 0.0, 0.0);
    for r in 0..b * t {
        let (a, bb, c) = reference(&s[r * v..(r + 1) * v], &te[r * v..(r + 1) * v]);
        fkl += a / (b * t) as f64;
        rkl += bb / (b * t) as f64;
        tv += c / (b * t) as f64;
    }
    for (loss, want) in [
        (DistillLoss::ForwardKl, fkl),
        (DistillLoss::ReverseKl, rkl),
        (DistillLoss::TotalVariation, tv),
    ] {
        let got = loss
            .compute(&st, &tt, &targets, 1.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert!(
            (got - want).abs() < 1e-5,
            "{}: {got} vs {want}",
            loss.name()
        );
    }
}

/// Mean probability that the speculative rule accepts the student's draft: sum min(p, q).
fn acceptance(
    student: &dyn LanguageModel,
    teacher: &dyn LanguageModel,
    contexts: &[Vec<u32>],
) -> f64 {
    let mut total = 0.0;
    for ctx in contexts {
        let q = student.forward_rows(ctx, &mut student.new_cache()).unwrap();
        let p = teacher.forward_rows(ctx, &mut teacher.new_cache()).unwrap();
        let pq = post::decoding::sampling::probabilities(q.last().unwrap(), 1.0);
        let pp = post::decoding::sampling::probabilities(p.last().unwrap(), 1.0);
        total += pq.iter().zip(&pp).map(|(a, b)| a.min(*b)).sum::<f64>();
    }
    total / contexts.len() as f64
}

#[test]
fn distillation_raises_acceptance() {
    let dir = common::temp_dir("distill");
    let cfg = common::tiny_config(40, 32, 1, 2, 32);
    let teacher = common::random_model(&cfg, 21, 0.6);
    let student = Trainee::fresh(&cfg, 5).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(8);
    let tokens: Vec<u32> = (0..4000).map(|_| rng.random_range(0..40)).collect();
    let stream = TokenStream { tokens };
    let contexts: Vec<Vec<u32>> = (0..40)
        .map(|_| (0..10).map(|_| rng.random_range(0..40)).collect())
        .collect();
    let before = acceptance(&student.model, &teacher, &contexts);
    // A word-level tokenizer is enough to write the checkpoint.
    let tokenizer = Tokenizer::train_bpe(&[corpus(&dir)], 300).unwrap();
    let opts = TrainOptions {
        steps: 80,
        lr: 5e-3,
        ..options(80)
    };
    fit(
        &student,
        &tokenizer,
        &opts,
        &dir.join("student"),
        0,
        "test",
        DType::F32,
        |step| stream.batch(1, step, 8, 16),
        loss_fn(&teacher, DistillLoss::TotalVariation, 1.0),
    )
    .unwrap();
    let after = acceptance(&student.model, &teacher, &contexts);
    assert!(after > before + 0.1, "acceptance {before:.3} -> {after:.3}");
}

fn tiny_llama(vocab: usize, std: f64) -> LlamaConfig {
    LlamaConfig {
        vocab_size: vocab,
        max_position_embeddings: 32,
        initializer_range: std,
        ..LlamaConfig::sized(32, 64, 1, 4, 2)
    }
}

#[test]
fn distilling_a_llama_student_lowers_the_loss_and_raises_acceptance() {
    let dir = common::temp_dir("distill-llama");
    let teacher = Llama::random(&tiny_llama(40, 0.5), 21).unwrap();
    let student = Trainee::fresh(tiny_llama(40, 0.02), 5).unwrap();
    assert_eq!(student.model.architecture(), "llama");
    let mut rng = ChaCha12Rng::seed_from_u64(8);
    let tokens: Vec<u32> = (0..4000).map(|_| rng.random_range(0..40)).collect();
    let stream = TokenStream { tokens };
    let contexts: Vec<Vec<u32>> = (0..40)
        .map(|_| (0..10).map(|_| rng.random_range(0..40)).collect())
        .collect();
    let loss = loss_fn(&teacher, DistillLoss::ForwardKl, 1.0);
    // One held batch, scored before and after (the last training batch's loss is noisier).
    let (x, y) = stream.batch(99, 0, 8, 16).unwrap();
    let kl = |m: &Model| loss(m, &x, &y).unwrap().to_scalar::<f32>().unwrap() as f64;
    let first = kl(&student.model);
    let before = acceptance(&student.model, &teacher, &contexts);
    let tokenizer = Tokenizer::train_bpe(&[corpus(&dir)], 300).unwrap();
    let opts = TrainOptions {
        steps: 80,
        lr: 1e-2,
        ..options(80)
    };
    fit(
        &student,
        &tokenizer,
        &opts,
        &dir.join("student"),
        0,
        "test",
        DType::F32,
        |step| stream.batch(1, step, 8, 16),
        &loss,
    )
    .unwrap();
    let last = kl(&student.model);
    assert!(last < first * 0.8, "forward KL {first:.4} -> {last:.4}");
    let after = acceptance(&student.model, &teacher, &contexts);
    assert!(
        after > before + 0.05,
        "acceptance {before:.3} -> {after:.3}"
    );
    // The checkpoint is a LLaMA folder the loader reads back to the same logits.
    // (Its tokenizer, trained only to be written, is larger than the 40-token vocabulary.)
    let loaded = load_dir("student", &dir.join("student"), &dir).unwrap();
    assert!(matches!(loaded.model, Model::Llama(_)));
    let a = loaded
        .model
        .forward_rows(&contexts[0], &mut loaded.model.new_cache())
        .unwrap();
    let b = student
        .model
        .forward_rows(&contexts[0], &mut student.model.new_cache())
        .unwrap();
    let diff = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "reloaded logits differ by {diff}");
}

#[test]
fn post_distill_takes_a_llama_teacher_and_a_qwen2_student() {
    let dir = common::temp_dir("distill-llama-cli");
    let out = dir.join("aligned");
    let stdout = common::post_ok(&[
        "distill",
        "--teacher",
        "tiny-llama",
        "--student",
        "tiny-llama-qwen2",
        "--corpus",
        "README.md",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--warmup",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["steps"], 3, "{stdout}");
    let aligned = load_dir("aligned", &out, &out).unwrap();
    assert_eq!(aligned.model.architecture(), "qwen2");
    // The student's tokenizer, its BOS rule included, comes along.
    let tok = aligned.tokenizer.unwrap();
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.encode("Hello").unwrap()[0], 1);
}

#[test]
fn distilling_across_vocabularies_is_refused() {
    let dir = common::temp_dir("distill-vocab");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let small = common::tiny_config(50, 16, 1, 2, 16);
    let big = common::tiny_config(60, 16, 1, 2, 16);
    common::write_model_dir(&a, &small, &common::random_weights(&small, 1, 0.3));
    common::write_model_dir(&b, &big, &common::random_weights(&big, 1, 0.3));
    let out = post(&[
        "distill",
        "--teacher",
        a.to_str().unwrap(),
        "--student",
        b.to_str().unwrap(),
        "--corpus",
        "README.md",
        "--out",
        dir.join("o").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("vocabulary"), "{e}");
}

#[test]
fn a_killed_run_keeps_its_last_checkpoint_and_resumes() {
    let dir = common::temp_dir("killed");
    let file = corpus(&dir);
    let out = dir.join("run");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let args = tiny_train_args(f, o);
    // Killed on drop, so that a failing assertion below does not leave it running.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_post"))
            .args(args)
            .args(["--steps", "100000"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(out.join("trainer_state.json").is_file() && state(&out).step >= 4) {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(child);
    // Whatever the moment of the kill, the folder holds a complete checkpoint the loader reads.
    let saved = state(&out).step;
    assert!(
        saved >= 4 && saved.is_multiple_of(2),
        "checkpoint at step {saved}"
    );
    load_dir("run", &out, &out).expect("the last checkpoint loads");
    let resumed = post(
        &[
            &args[..],
            &["--steps", &(saved + 2).to_string(), "--resume"],
        ]
        .concat(),
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(state(&out).step, saved + 2);
}
