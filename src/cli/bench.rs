//! `post bench`: measurements. `--mode forward` times the plaintext candle forward of one model
//! for a list of new-token counts (the cost a verification step pays in plaintext).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::model::loader::{load_model, Registry};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to measure: `forward` (plaintext forward speed). Secure-engine modes come with later issues.
    #[arg(long, default_value = "forward")]
    pub mode: String,
    /// The model to time (forward mode).
    #[arg(long, default_value = "default-private", value_name = "MODEL")]
    pub model: String,
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
        other => bail!("--mode {other:?} is not built yet (available: forward)"),
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
