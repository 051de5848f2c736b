//! `post verify`: secure generation. The private model runs on secret shares between the client
//! (prompt, public model) and the server (private model); standard secure decoding (one secure
//! forward per token) and POST decoding (K public drafts verified in one secure forward) run through
//! the same engine and the same decoding loop as `post draft`.
//! `--forward-only` measures one secure forward over N new tokens instead.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::prompts::PromptArgs;
use super::{DecodeArgs, PairArgs};
use crate::bench::secure::{forward_costs_by_layers, logit_error, print_forward_costs};
use crate::decoding::Verifier;
use crate::model::loader::{load_model, Registry};
use crate::model::{Config, Gpt2};
use crate::model::{Llama, LlamaConfig, Model};
use crate::mpc::{EngineConfig, LinkModel};
use crate::secure::generation::{
    generate_connected, generate_simulated, id_string, print_summary, summarise, Generation,
    VerifyReport, VerifyRow,
};
use crate::secure::PrivateModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// One secure forward and one secure sampling step per generated token.
    Standard,
    /// K public drafts per step, verified in one secure forward.
    Post,
    /// Both, on the same prompts and the same engine.
    Both,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub models: PairArgs,
    #[command(flatten)]
    pub input: PromptArgs,
    #[command(flatten)]
    pub decode: DecodeArgs,
    #[arg(long, value_enum, default_value = "both")]
    pub method: Method,
    /// Derive the dealer's and both parties' randomness from N: reproducible simulation, not secure
    /// (default: each party's stream from its own OS-random seed).
    #[arg(long, value_name = "N")]
    pub sim_seed: Option<u64>,
    /// Simulated link: lan, wan, or bw=200mbps,rtt=40ms; repeat to run each.
    #[arg(long = "net", default_values = ["lan"], value_name = "NET")]
    pub nets: Vec<String>,
    /// Append one row per (prompt, method, net) to this CSV file.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Measure one secure forward over each of --tokens new tokens instead of generating.
    #[arg(long)]
    pub forward_only: bool,
    /// With --forward-only: new tokens per forward, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub tokens: Vec<usize>,
    /// With --forward-only: cached positions before the forward (default: min(128, window - max tokens)).
    #[arg(long)]
    pub context: Option<usize>,
    /// With --forward-only: the model to measure instead of the pair's private one: a model
    /// reference, `random-gpt2-small` (GPT-2 small's shape with GPT-2's random initialisation) or
    /// `random-llama-68m` / `random-llama-160m` (JackFram's shapes, random).
    #[arg(long, value_name = "MODEL", conflicts_with_all = ["pair", "public", "private"])]
    pub model: Option<String>,
    /// With --forward-only: measure the model's first N decoder layers at full width (with the
    /// embedding, final norm and head) and project the full model's costs from them (rounds
    /// exactly, bytes and time by layer); LLaMA-style models.
    #[arg(long, value_name = "N", requires = "forward_only")]
    pub layers: Option<usize>,
    /// Run the client party against a server process (`post serve`) at this address, with the
    /// public model of --public (the private model stays on the server).
    #[arg(long, value_name = "ADDR", requires = "dealer", conflicts_with_all = ["forward_only", "pair", "private"])]
    pub connect: Option<String>,
    /// With --connect: the dealer process (`post dealer`).
    #[arg(long, value_name = "ADDR")]
    pub dealer: Option<String>,
    /// With --connect: the server's public key (required with --key).
    #[arg(long, value_name = "FILE", requires = "connect")]
    pub trust: Vec<std::path::PathBuf>,
    /// With --connect: the dealer's public key (required with --key).
    #[arg(long, value_name = "FILE", requires = "connect")]
    pub dealer_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub keys: crate::cli::serve::KeyArgs,
    /// With --connect: seconds to wait for each message of the server before the session ends
    /// with an error naming the protocol phase.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = crate::cli::serve::parse_timeout)]
    pub timeout: f64,
    /// With --connect: shape the link to the server in real time as this profile (the server must
    /// shape alike: `post serve --shape`).
    #[arg(long, value_name = "NET", requires = "connect")]
    pub shape: Option<String>,
    /// With --forward-only: also open the secure logits of a 32-token forward (24 tokens, then 8
    /// through the cache) and compare them with candle's.
    #[arg(long)]
    pub logit_error: bool,
}

impl VerifyArgs {
    /// The methods of --method, each with its drafts per step.
    fn methods(&self) -> Vec<(&'static str, usize)> {
        let k = self.decode.draft_len;
        match self.method {
            Method::Standard => vec![("standard", 0)],
            Method::Post => vec![("post", k)],
            Method::Both => vec![("standard", 0), ("post", k)],
        }
    }

    /// How every prompt is decoded, from the decoding flags.
    fn generation(&self) -> Generation {
        Generation {
            methods: self.methods(),
            temperature: self.decode.temperature,
            max_new_tokens: self.decode.max_new_tokens,
            seed: self.decode.seed,
            ignore_eos: self.decode.ignore_eos,
            print_rows: !self.decode.json,
            csv: self.csv.clone(),
        }
    }
}

fn links(nets: &[String]) -> Result<Vec<(String, LinkModel)>> {
    nets.iter()
        .map(|n| Ok((n.clone(), LinkModel::parse(n)?)))
        .collect()
}

pub fn run(args: &VerifyArgs, registry: Option<&Path>) -> Result<()> {
    let decode = &args.decode;
    decode.validate()?;
    let links = links(&args.nets)?;
    let registry = Registry::locate(registry)?;
    if args.forward_only {
        return forward_only(args, &registry, &links);
    }
    if args.model.is_some() {
        bail!("--model goes with --forward-only (generation takes --pair or --public/--private)")
    }
    if let Some(addr) = &args.connect {
        return run_connected(args, &registry, addr);
    }
    // Fail on a bad output path before hours of simulation.
    if let Some(path) = &args.csv {
        crate::report::append_csv::<VerifyRow>(path, &[])?;
    }
    let prompts = args.input.prompts()?;
    let pair = args.models.load(&registry)?;
    let vocab = pair.private.config().vocab_size;
    let prepared: Vec<(Value, Vec<u32>)> = prompts
        .iter()
        .map(|p| {
            Ok((
                p.id.clone(),
                args.input.prepare(p, &pair, decode.max_new_tokens, vocab)?,
            ))
        })
        .collect::<Result<_>>()?;
    let (rows, results) = generate_simulated(
        &pair.public.model,
        &pair.private.model,
        pair.tokenizer(),
        &prepared,
        &links,
        args.sim_seed,
        &args.generation(),
    )?;
    let summary = summarise(&rows);
    let randomness = match args.sim_seed {
        Some(n) => format!("fixed simulation seed {n} (reproducible, not secure)"),
        None => "separate OS-random seeds per party".to_string(),
    };
    if decode.json {
        let report = VerifyReport {
            results,
            summary,
            randomness,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(&summary);
        println!("randomness: {randomness}");
    }
    Ok(())
}

/// The client party of a session with a server process: one session for every prompt and method.
fn run_connected(args: &VerifyArgs, registry: &Registry, addr: &str) -> Result<()> {
    let decode = &args.decode;
    let dealer = args
        .dealer
        .as_deref()
        .context("--connect needs --dealer ADDR (the dealer process)")?;
    let public_name = args
        .models
        .public
        .as_deref()
        .context("--connect needs --public MODEL (the private model stays on the server)")?;
    let public = load_model(public_name, registry)?;
    let prompts = args.input.prompts()?;
    let engine = EngineConfig {
        link: LinkModel::ideal(),
        timeout: std::time::Duration::from_secs_f64(args.timeout),
        shape: args.shape.as_deref().map(LinkModel::parse).transpose()?,
        ..EngineConfig::default()
    };
    crate::cli::serve::check_plaintext_peer(&args.keys, addr, "the server")?;
    crate::cli::serve::check_plaintext_peer(&args.keys, dealer, "the dealer")?;
    let link = args.keys.link_config(engine.timeout)?;
    if link.encrypted() && (args.trust.is_empty() || args.dealer_key.is_none()) {
        anyhow::bail!(
            "--key needs --trust SERVER.pub and --dealer-key DEALER.pub (the keys to pin)"
        )
    }
    let links = crate::deploy::client::ClientLinks {
        link,
        server_key: crate::link::Trust::load(&args.trust)?,
        dealer_key: crate::link::Trust::load(args.dealer_key.as_slice())?,
    };
    eprintln!("connecting to {addr} (dealer {dealer}); the server shares its model first");
    let verifier = crate::deploy::client::connect(
        addr,
        dealer,
        &links,
        &engine,
        decode.temperature,
        public.config().vocab_size,
    )?;
    let window = public.config().n_positions.min(verifier.window());
    let mut prepared = Vec::new();
    for p in &prompts {
        let mut ids = p.token_ids(public.tokenizer.as_ref())?;
        if args.input.truncate_prompts && ids.len() + decode.max_new_tokens > window {
            let keep = window.saturating_sub(decode.max_new_tokens).max(1);
            ids.drain(..ids.len().saturating_sub(keep));
        }
        prepared.push((id_string(&p.id), ids));
    }
    let (rows, results) = generate_connected(
        &public.model,
        public.tokenizer.as_ref(),
        verifier,
        &prepared,
        &args.generation(),
    )?;
    let summary = summarise(&rows);
    if decode.json {
        let report = VerifyReport {
            results,
            summary,
            randomness: "separate OS-random seeds per party, from the dealer process".to_string(),
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// GPT-2 small's shape with GPT-2's random initialisation (no download needed).
pub const RANDOM_GPT2_SMALL: &str = "random-gpt2-small";
/// The shapes of JackFram/llama-68m and llama-160m (the POST paper's drafters) with LLaMA's
/// random initialisation: `--model random-llama-68m`, `random-llama-160m`.
fn random_llama(name: &str) -> Option<LlamaConfig> {
    match name {
        "random-llama-68m" => Some(LlamaConfig::sized(768, 3072, 2, 12, 12)),
        "random-llama-160m" => Some(LlamaConfig::sized(768, 3072, 12, 12, 12)),
        _ => None,
    }
}

fn forward_only(
    args: &VerifyArgs,
    registry: &Registry,
    links: &[(String, LinkModel)],
) -> Result<()> {
    let (name, model): (String, Model) =
        match (&args.model, &args.models.pair, &args.models.private) {
            (Some(m), _, _) if m == RANDOM_GPT2_SMALL => {
                (m.clone(), Gpt2::random(&Config::gpt2_small(), 0)?.into())
            }
            (Some(m), _, _) => match random_llama(m) {
                Some(cfg) => (m.clone(), Llama::random(&cfg, 0)?.into()),
                None => (m.clone(), load_model(m, registry)?.model),
            },
            (None, Some(_), _) | (None, None, Some(_)) => {
                let pair = args.models.load(registry)?;
                (pair.private.name.clone(), pair.private.model)
            }
            _ => bail!("--forward-only needs --model MODEL, --pair NAME or --private MODEL"),
        };
    let shape = model.secure_shape();
    let window = shape.window();
    let max_new = args.tokens.iter().copied().max().unwrap_or(1);
    let context = args
        .context
        .unwrap_or_else(|| 128.min(window.saturating_sub(max_new)));
    if args.tokens.contains(&0) || context + max_new > window {
        bail!("--context {context} + {max_new} new tokens must fit the context window of {window} (and every --tokens value be at least 1)")
    }
    eprintln!("{name}: sharing the weights, then one secure forward per (net, tokens) at context {context}");
    if args.logit_error {
        let len = 32.min(window);
        let ids: Vec<u32> = (0..len)
            .map(|i| ((i * 7919 + 11) % shape.vocab_size()) as u32)
            .collect();
        let e = logit_error(&model, &EngineConfig::default(), &ids, len * 3 / 4)?;
        println!(
            "{name}: secure vs candle logits over {len} positions: max |error| {:.3e}, mean {:.3e} (largest |logit| {:.1})",
            e.max, e.mean, e.max_abs_logit
        );
    }
    let (rows, by_part) =
        forward_costs_by_layers(&name, model, links, context, &args.tokens, args.layers)?;
    if let Some(path) = &args.csv {
        crate::report::append_csv(path, &rows)?;
    }
    print_forward_costs(&rows, &by_part, args.decode.json)
}
