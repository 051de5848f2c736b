//! `post bench`: measurements, each as typed rows written through `report` (terminal table, CSV).
//!
//! - `--mode secure`: the paper's speedup table: standard and POST secure decoding per pair,
//!   dataset, network, draft length and temperature (a grid, resumable: see `bench/grid.rs`).
//! - `--mode latency`: one secure forward over N new tokens against one token, per network.
//! - `--mode forward`: the plaintext candle forward's speed; `--mode perplexity`: models on prompt
//!   sets; `--mode engine`: the secure engine's micro-benchmarks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::bench::decoding::{DraftLen, Weights};
use crate::bench::grid::{dataset_label, run_grid_sharded, Grid, Shard};
use crate::bench::secure::{forward_costs_by_layers, latency_rows, LatencyRow};
use crate::bench::{engine, plot};
use crate::model::loader::{load_model, Registry};
use crate::mpc::LinkModel;
use crate::report::{append_csv, print_table, write_csv};
use crate::secure::PrivateModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Standard vs POST secure decoding: the speedup table.
    Secure,
    /// One secure forward over N new tokens, relative to one token.
    Latency,
    /// Plaintext candle forward speed.
    Forward,
    /// Perplexity of models on prompt sets.
    Perplexity,
    /// Secure-engine micro-benchmarks (matmul throughput, per-protocol costs).
    Engine,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "secure")]
    pub mode: Mode,
    /// Output: a CSV file for secure (default results/bench.csv; rows are appended, cells already
    /// there are skipped), latency and perplexity (appended); a folder for engine (default results).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Links: lan, wan, or bw=...,rtt=... (repeatable; `lan,wan` also works).
    #[arg(long = "net", default_values = ["lan", "wan"])]
    pub nets: Vec<String>,
    /// Registry pairs (secure; latency uses the private model of the first) (repeatable).
    #[arg(long = "pair", default_values = ["default-aligned"])]
    pub pairs: Vec<String>,
    /// Prompt sets, JSON lines (secure, perplexity) (repeatable).
    #[arg(long = "dataset", value_name = "FILE.jsonl", default_values = ["datasets/code-completion.jsonl"])]
    pub datasets: Vec<PathBuf>,
    /// Secure: the first N prompts of each dataset.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub prompts: usize,
    /// Secure: drafts per step, comma-separated; `auto` picks K each step (expected tokens per
    /// second of the measured pass cost, up to 8).
    #[arg(long = "draft-len", value_delimiter = ',', default_value = "4")]
    pub draft_lens: Vec<DraftLen>,
    /// Secure: sampling temperatures, comma-separated.
    #[arg(long = "temperature", value_delimiter = ',', default_value = "0")]
    pub temperatures: Vec<f64>,
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Seed of the client's sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Reproducible engine randomness (not secure); default: OS seeds per party.
    #[arg(long, value_name = "N")]
    pub sim_seed: Option<u64>,
    /// Do not stop at the private model's end-of-text token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Trained checkpoints, or the same shapes with random weights (costs only).
    #[arg(long, value_enum, default_value = "trained")]
    pub weights: Weights,
    /// Draw figures (SVG) next to the CSV file.
    #[arg(long)]
    pub plot: bool,
    /// Forward, latency: the model (default: the first pair's private model); perplexity: models,
    /// comma-separated.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Forward, latency: new tokens per forward, comma-separated (default 1,8 / 1,2,4,8,16,32).
    #[arg(long, value_delimiter = ',')]
    pub tokens: Vec<usize>,
    /// Forward, latency: positions already in the KV cache (default 32 / min(128, window - max tokens)).
    #[arg(long)]
    pub context: Option<usize>,
    /// Latency: measure the model's first N decoder layers at full width (with the embedding,
    /// final norm and head) and project the full model's costs (rounds exactly, bytes and time by
    /// layer); LLaMA-style models.
    #[arg(long, value_name = "N")]
    pub layers: Option<usize>,
    /// Forward: timed calls per token count (the median is reported); engine: matmul repeats.
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
}

impl BenchArgs {
    /// `--net lan,wan` as two links; a custom `bw=..,rtt=..` keeps its comma.
    fn net_names(&self) -> Vec<String> {
        self.nets
            .iter()
            .flat_map(|n| {
                if n.contains('=') {
                    vec![n.clone()]
                } else {
                    n.split(',').map(|s| s.trim().to_string()).collect()
                }
            })
            .filter(|n| !n.is_empty())
            .collect()
    }

    fn links(&self) -> Result<Vec<(String, LinkModel)>> {
        self.net_names()
            .into_iter()
            .map(|n| Ok((n.clone(), LinkModel::parse(&n)?)))
            .collect()
    }
}

pub fn run(args: &BenchArgs, registry: Option<&Path>) -> Result<()> {
    match args.mode {
        Mode::Secure => secure(args, registry),
        Mode::Latency => latency(args, registry),
        Mode::Forward => forward(args, registry),
        Mode::Engine => engine(args),
        Mode::Perplexity => perplexity(args, registry),
    }
}

/// The columns of the speedup table shown on the terminal.
pub const SPEEDUP_COLUMNS: &[&str] = &[
    "pair",
    "weights",
    "dataset",
    "net",
    "method",
    "draft_len",
    "mean_draft_len",
    "temperature",
    "tokens",
    "secure_steps",
    "mean_accepted",
    "online_rounds",
    "online_mb",
    "sec_per_pass",
    "sec_per_token",
    "speedup",
];

fn secure(args: &BenchArgs, registry: Option<&Path>) -> Result<()> {
    let grid = Grid {
        pairs: args.pairs.clone(),
        aligned: None,
        datasets: args.datasets.clone(),
        nets: args.net_names(),
        draft_lens: args.draft_lens.clone(),
        temperatures: args.temperatures.clone(),
        prompts: args.prompts,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        sim_seed: args.sim_seed,
        weights: args.weights,
        ignore_eos: args.ignore_eos,
        out: None,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results/bench.csv"));
    run_and_report(&grid, &Registry::locate(registry)?, &out, args.plot)
}

/// A CSV output must be a file in an existing folder (a typo in the folder fails now, not after
/// hours of measurement).
fn check_output_file(out: &Path) -> Result<()> {
    if out.is_dir() {
        bail!("--out {} is a folder; give a CSV file", out.display())
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!(
                "the folder of {} does not exist: create {} first",
                out.display(),
                dir.display()
            )
        }
    }
    Ok(())
}

/// Runs a grid into `out`, prints its rows, and draws its figures when asked.
pub fn run_and_report(grid: &Grid, registry: &Registry, out: &Path, plot: bool) -> Result<()> {
    run_and_report_sharded(grid, registry, out, plot, None)
}

/// [`run_and_report`] over one shard of the grid's cells (`post sweep --shard`).
pub fn run_and_report_sharded(
    grid: &Grid,
    registry: &Registry,
    out: &Path,
    plot: bool,
    shard: Option<Shard>,
) -> Result<()> {
    check_output_file(out)?;
    let rows = run_grid_sharded(grid, registry, out, shard)?;
    print_table(&rows, SPEEDUP_COLUMNS)?;
    println!("rows in {}", out.display());
    if plot {
        for figure in [
            plot::speedup_bars(&rows, out)?,
            plot::accepted_vs_draft_len(&rows, out)?,
        ]
        .into_iter()
        .flatten()
        {
            println!("figure {}", figure.display());
        }
    }
    Ok(())
}

fn latency(args: &BenchArgs, registry: Option<&Path>) -> Result<()> {
    let registry = Registry::locate(registry)?;
    let links = args.links()?;
    let tokens = if args.tokens.is_empty() {
        vec![1, 2, 4, 8, 16, 32]
    } else {
        args.tokens.clone()
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results/latency.csv"));
    check_output_file(&out)?;
    crate::report::ensure_schema(&out, &LatencyRow::default())?;
    let pair_name = &args.pairs[0];
    let pair = crate::bench::decoding::load_pair(pair_name, args.weights, &registry)?;
    let (name, model) = match &args.model {
        Some(m) if args.weights == Weights::Random => bail!(
            "--model {m} with --weights random: name the shape with --pair (its private model)"
        ),
        Some(m) => (m.clone(), load_model(m, &registry)?.model),
        None => (pair.private.name.clone(), pair.private.model),
    };
    let window = model.secure_shape().window();
    let max_new = tokens.iter().copied().max().unwrap_or(1);
    let context = args
        .context
        .unwrap_or_else(|| 128.min(window.saturating_sub(max_new)));
    eprintln!(
        "{name} ({} weights): one secure forward per (net, N) at context {context}",
        args.weights.name()
    );
    let (forward, _) =
        forward_costs_by_layers(&name, model, &links, context, &tokens, args.layers)?;
    let rows = latency_rows(&forward, args.weights.name())?;
    append_csv(&out, &rows)?;
    print_table(
        &rows,
        &[
            "model",
            "weights",
            "context",
            "n_tokens",
            "net",
            "rounds",
            "online_mb",
            "sim_seconds",
            "ratio_to_1",
            "dealer_mb",
            "dealer_seconds",
            "peak_rss_mb",
        ],
    )?;
    println!("rows appended to {}", out.display());
    if args.plot {
        let all: Vec<LatencyRow> = crate::report::read_csv(&out)?;
        if let Some(figure) = plot::latency_lines(&all, &out)? {
            println!("figure {}", figure.display());
        }
    }
    Ok(())
}

/// Plaintext forward speed of one model.
#[derive(Debug, Serialize)]
struct ForwardSpeedRow {
    model: String,
    context: usize,
    new_tokens: usize,
    median_ms: f64,
    tokens_per_s: f64,
}

fn forward(args: &BenchArgs, registry: Option<&Path>) -> Result<()> {
    let tokens = if args.tokens.is_empty() {
        vec![1, 8]
    } else {
        args.tokens.clone()
    };
    let context = args.context.unwrap_or(32);
    if args.repeats == 0 || tokens.contains(&0) {
        bail!("--repeats and every --tokens value must be at least 1")
    }
    let registry = Registry::locate(registry)?;
    let loaded = load_model(args.model.as_deref().unwrap_or("tiny-private"), &registry)?;
    let model = &loaded.model;
    let cfg = model.shape();
    let max_new = tokens.iter().copied().max().unwrap_or(1);
    if context + max_new > cfg.n_positions {
        bail!(
            "--context {context} + {max_new} new tokens exceed the context window of {}",
            cfg.n_positions
        )
    }
    let ids: Vec<u32> = (0..context + max_new)
        .map(|i| (i * 7919 % cfg.vocab_size) as u32)
        .collect();
    let mut rows = Vec::new();
    for &t in &tokens {
        let mut times = Vec::with_capacity(args.repeats);
        for _ in 0..args.repeats + 1 {
            let mut cache = model.new_cache();
            model.forward_rows(&ids[..context], &mut cache)?;
            let start = Instant::now();
            model.forward_rows(&ids[context..context + t], &mut cache)?;
            times.push(start.elapsed().as_secs_f64());
        }
        times.remove(0); // warm-up
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        rows.push(ForwardSpeedRow {
            model: loaded.name.clone(),
            context,
            new_tokens: t,
            median_ms: median * 1e3,
            tokens_per_s: t as f64 / median,
        });
    }
    print_table(
        &rows,
        &[
            "model",
            "context",
            "new_tokens",
            "median_ms",
            "tokens_per_s",
        ],
    )?;
    if let Some(out) = &args.out {
        append_csv(out, &rows)?;
    }
    Ok(())
}

fn engine(args: &BenchArgs) -> Result<()> {
    let links = args.links()?;
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("results"));
    let shapes = [(768, 768, 768), (768, 768, 3072), (8, 768, 50257)];
    let bar = crate::progress::progress(shapes.len() + links.len(), "engine");
    let mut matmuls = Vec::new();
    for (m, k, n) in shapes {
        bar.set_message(format!("matmul {m}x{k}x{n}"));
        matmuls.extend(engine::matmul_throughput(
            m,
            k,
            n,
            args.repeats.clamp(1, 5),
        )?);
        bar.inc(1);
    }
    let mut protocols = Vec::new();
    for (name, link) in &links {
        bar.set_message(format!("protocols on {name}"));
        protocols.extend(engine::protocol_costs(name, *link)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    print_table(
        &matmuls,
        &[
            "shape",
            "u64_gops",
            "f64_gflops",
            "f32_gflops",
            "u64_over_f64",
            "kernel",
            "dispatched",
        ],
    )?;
    println!();
    print_table(
        &protocols,
        &[
            "protocol",
            "shape",
            "link",
            "rounds",
            "online_bytes",
            "dealer_bytes",
            "sim_seconds",
            "compute_seconds",
        ],
    )?;
    let (a, b) = (
        dir.join("engine-matmul.csv"),
        dir.join("engine-protocols.csv"),
    );
    write_csv(&a, &matmuls)?;
    write_csv(&b, &protocols)?;
    println!("\nwrote {} and {}", a.display(), b.display());
    Ok(())
}

/// Perplexity of a model on a prompt set.
#[derive(Debug, Serialize)]
struct PerplexityRow {
    model: String,
    dataset: String,
    tokens: usize,
    cross_entropy: f64,
    perplexity: f64,
}

/// Perplexity of each model on each prompt set: exp of the mean next-token cross-entropy over the
/// prompts' tokens (each prompt scored from its second token on).
fn perplexity(args: &BenchArgs, registry: Option<&Path>) -> Result<()> {
    let registry = Registry::locate(registry)?;
    let models = args.model.as_deref().unwrap_or("default-private");
    let mut rows = Vec::new();
    for name in models.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let loaded = load_model(name, &registry)?;
        for path in &args.datasets {
            let prompts = crate::prompts::read_jsonl(path)?;
            let sequences = prompts
                .iter()
                .map(|p| p.token_ids(loaded.tokenizer.as_ref()))
                .collect::<Result<Vec<_>>>()?;
            let (ce, tokens) = crate::train::cross_entropy_on(&loaded.model, &sequences)?;
            rows.push(PerplexityRow {
                model: name.to_string(),
                dataset: dataset_label(path),
                tokens,
                cross_entropy: ce,
                perplexity: ce.exp(),
            });
        }
    }
    print_table(
        &rows,
        &["model", "dataset", "tokens", "cross_entropy", "perplexity"],
    )?;
    if let Some(out) = &args.out {
        append_csv(out, &rows)?;
    }
    Ok(())
}
