//! `post bench`: measurements. `--mode forward` times the plaintext candle forward of one model
//! for a list of new-token counts (the cost a verification step pays in plaintext); `--mode engine`
//! measures the secure engine (matmul throughput, per-protocol rounds, bytes and time).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::model::loader::{load_model, Registry};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to measure: `forward` (plaintext forward speed) or `engine` (secure-engine micro-benchmarks).
    #[arg(long, default_value = "forward")]
    pub mode: String,
    /// Where `--mode engine` writes its CSV files (engine-matmul.csv, engine-protocols.csv).
    #[arg(long, default_value = "results", value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Link profiles for `--mode engine`: lan, wan, or bw=...,rtt=... (repeatable).
    #[arg(long = "net", default_values = ["lan", "wan"])]
    pub nets: Vec<String>,
    /// The model to time (forward mode), or the models to score (perplexity mode, comma-separated).
    #[arg(long, default_value = "tiny-private", value_name = "MODEL")]
    pub model: String,
    /// Prompt sets (JSON lines) scored by `--mode perplexity` (repeatable).
    #[arg(long, value_name = "FILE.jsonl")]
    pub prompts: Vec<std::path::PathBuf>,
    /// New tokens per forward call, comma-separated.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    pub tokens: Vec<usize>,
    /// Positions already in the KV cache before each timed call.
    #[arg(long, default_value_t = 32)]
    pub context: usize,
    /// Timed calls per token count (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
}

pub fn run(args: &BenchArgs, registry: Option<&Path>) -> Result<()> {
    match args.mode.as_str() {
        "forward" => forward(args, registry),
        "engine" => engine(args),
        "perplexity" => perplexity(args, registry),
        other => {
            bail!("--mode {other:?} is not built yet (available: forward, engine, perplexity)")
        }
    }
}

fn forward(args: &BenchArgs, registry: Option<&Path>) -> Result<()> {
    if args.repeats == 0 || args.tokens.contains(&0) {
        bail!("--repeats and every --tokens value must be at least 1")
    }
    let registry = Registry::locate(registry)?;
    let loaded = load_model(&args.model, &registry)?;
    let model = &loaded.model;
    let cfg = model.config();
    let max_new = args.tokens.iter().copied().max().unwrap_or(1);
    if args.context + max_new > cfg.n_positions {
        bail!(
            "--context {} + {} new tokens exceed the context window of {}",
            args.context,
            max_new,
            cfg.n_positions
        )
    }
    let ids: Vec<u32> = (0..args.context + max_new)
        .map(|i| (i * 7919 % cfg.vocab_size) as u32)
        .collect();
    println!("model,context,new_tokens,median_ms,tokens_per_s");
    for &t in &args.tokens {
        let mut times = Vec::with_capacity(args.repeats);
        for _ in 0..args.repeats + 1 {
            let mut cache = model.new_cache();
            model.forward_rows(&ids[..args.context], &mut cache)?;
            let start = Instant::now();
            model.forward_rows(&ids[args.context..args.context + t], &mut cache)?;
            times.push(start.elapsed().as_secs_f64());
        }
        times.remove(0); // warm-up
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{},{},{},{:.3},{:.1}",
            loaded.name,
            args.context,
            t,
            median * 1e3,
            t as f64 / median
        );
    }
    Ok(())
}

fn engine(args: &BenchArgs) -> Result<()> {
    use crate::bench::{engine, write_csv};
    use crate::mpc::LinkModel;
    let links = args
        .nets
        .iter()
        .map(|n| LinkModel::parse(n).map(|l| (n.clone(), l)))
        .collect::<Result<Vec<_>, _>>()?;
    let shapes = [(768, 768, 768), (768, 768, 3072), (8, 768, 50257)];
    let bar = crate::cli::progress(shapes.len() + links.len(), "engine");
    let mut matmuls = Vec::new();
    for (m, k, n) in shapes {
        bar.set_message(format!("matmul {m}x{k}x{n}"));
        matmuls.push(engine::matmul_throughput(
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
    println!(
        "{:<18} {:>10} {:>11} {:>11} {:>9}  kernel",
        "matmul m x k x n", "u64 GOP/s", "f64 GFMA/s", "f32 GFMA/s", "u64/f64"
    );
    for r in &matmuls {
        println!(
            "{:<18} {:>10.2} {:>11.2} {:>11.2} {:>9.2}  {}",
            r.shape, r.u64_gops, r.f64_gflops, r.f32_gflops, r.u64_over_f64, r.kernel
        );
    }
    println!();
    println!(
        "{:<46} {:<18} {:<5} {:>6} {:>12} {:>12} {:>9} {:>9}",
        "protocol", "shape", "link", "rounds", "online B", "dealer B", "sim s", "compute s"
    );
    for r in &protocols {
        println!(
            "{:<46} {:<18} {:<5} {:>6} {:>12} {:>12} {:>9.3} {:>9.3}",
            r.protocol,
            r.shape,
            r.link,
            r.rounds,
            r.online_bytes,
            r.dealer_bytes,
            r.sim_seconds,
            r.compute_seconds
        );
    }
    write_csv(&args.out.join("engine-matmul.csv"), &matmuls)?;
    write_csv(&args.out.join("engine-protocols.csv"), &protocols)?;
    println!(
        "\nwrote {} and {}",
        args.out.join("engine-matmul.csv").display(),
        args.out.join("engine-protocols.csv").display()
    );
    Ok(())
}

/// Perplexity of each model on each prompt set: exp of the mean next-token cross-entropy over the
/// prompts' tokens (each prompt scored from its second token on).
fn perplexity(args: &BenchArgs, registry: Option<&Path>) -> Result<()> {
    if args.prompts.is_empty() {
        bail!("--mode perplexity needs --prompts FILE.jsonl")
    }
    let registry = Registry::locate(registry)?;
    println!("model,dataset,tokens,cross_entropy,perplexity");
    for name in args
        .model
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        let loaded = load_model(name, &registry)?;
        for path in &args.prompts {
            let prompts = super::prompts::read_jsonl(path)?;
            let sequences = prompts
                .iter()
                .map(|p| p.token_ids(loaded.tokenizer.as_ref()))
                .collect::<Result<Vec<_>>>()?;
            let (ce, tokens) = crate::train::cross_entropy_on(&loaded.model, &sequences)?;
            println!(
                "{},{},{},{:.4},{:.2}",
                name,
                path.display(),
                tokens,
                ce,
                ce.exp()
            );
        }
    }
    Ok(())
}
