//! `post verify`: secure generation. The private model runs on secret shares between the client
//! (prompt, public model) and the server (private model); standard secure decoding (one secure
//! forward per token) and POST decoding (K public drafts verified in one secure forward) run through
//! the same engine and the same decoding loop as `post draft`.
//! `--forward-only` measures one secure forward over N new tokens instead.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::Serialize;
use serde_json::Value;

use super::prompts::PromptArgs;
use super::{DecodeArgs, PairArgs};
use crate::bench::secure::{forward_costs, logit_error};
use crate::decoding::{decode_with, Decoded, Verifier};
use crate::model::loader::{load_model, Registry};
use crate::model::{Config, Gpt2};
use crate::mpc::{EngineConfig, LinkModel};
use crate::progress::progress;
use crate::secure::{Costs, SecureVerifier};

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
    /// reference, or `random-gpt2-small` (GPT-2 small's shape with GPT-2's random initialisation).
    #[arg(long, value_name = "MODEL", conflicts_with_all = ["pair", "public", "private"])]
    pub model: Option<String>,
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

/// One (prompt, method, net) of a secure generation.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    pub id: String,
    pub method: String,
    pub net: String,
    pub draft_len: usize,
    pub temperature: f64,
    pub prompt_tokens: usize,
    pub tokens: usize,
    /// Secure forward passes (verification steps).
    pub steps: usize,
    pub accepted: usize,
    pub drafted: usize,
    /// Emitted tokens per secure forward.
    pub tokens_per_step: f64,
    pub rounds: u64,
    pub client_mb: f64,
    pub server_mb: f64,
    pub dealer_mb: f64,
    pub sim_seconds: f64,
    pub compute_seconds: f64,
    pub sim_seconds_per_token: f64,
    pub rounds_per_token: f64,
    pub mb_per_token: f64,
    /// The session's one-time weight preparation (same for every row of a session).
    pub setup_rounds: u64,
    pub setup_mb: f64,
    pub setup_sim_seconds: f64,
}

fn per(x: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        x / n as f64
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

impl VerifyRow {
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: String,
        method: &str,
        net: &str,
        args: &VerifyArgs,
        prompt_tokens: usize,
        d: &Decoded,
        c: &Costs,
        setup: &Costs,
    ) -> Self {
        let tokens = d.output_ids.len();
        let online = mb(c.client_bytes + c.server_bytes);
        Self {
            id,
            method: method.to_string(),
            net: net.to_string(),
            draft_len: if method == "post" {
                args.decode.draft_len
            } else {
                0
            },
            temperature: args.decode.temperature,
            prompt_tokens,
            tokens,
            steps: d.steps,
            accepted: d.accepted,
            drafted: d.drafted,
            tokens_per_step: d.tokens_per_step(),
            rounds: c.rounds,
            client_mb: mb(c.client_bytes),
            server_mb: mb(c.server_bytes),
            dealer_mb: mb(c.dealer_bytes),
            sim_seconds: c.sim_seconds,
            compute_seconds: c.compute_seconds,
            sim_seconds_per_token: per(c.sim_seconds, tokens),
            rounds_per_token: per(c.rounds as f64, tokens),
            mb_per_token: per(online, tokens),
            setup_rounds: setup.rounds,
            setup_mb: mb(setup.client_bytes + setup.server_bytes),
            setup_sim_seconds: setup.sim_seconds,
        }
    }
}

/// One generation of `--json`'s `results`.
#[derive(Debug, Serialize)]
pub struct VerifyResult {
    pub id: Value,
    pub method: String,
    pub net: String,
    pub prompt_ids: Vec<u32>,
    pub output_ids: Vec<u32>,
    pub text: Option<String>,
    pub costs: VerifyRow,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub results: Vec<VerifyResult>,
    pub summary: Vec<VerifySummary>,
    pub randomness: String,
}

/// Totals of the rows of one (method, net).
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    pub method: String,
    pub net: String,
    pub prompts: usize,
    pub tokens: usize,
    pub steps: usize,
    pub mean_accepted: f64,
    pub tokens_per_step: f64,
    pub rounds: u64,
    pub client_mb: f64,
    pub server_mb: f64,
    pub dealer_mb: f64,
    pub sim_seconds: f64,
    pub compute_seconds: f64,
    pub sim_seconds_per_token: f64,
    pub rounds_per_token: f64,
    pub mb_per_token: f64,
    pub setup_rounds: u64,
    pub setup_mb: f64,
    pub setup_sim_seconds: f64,
    /// Standard's simulated time per token over this method's (on the same net); 1 for standard.
    pub speedup_vs_standard: Option<f64>,
}

fn summarise(rows: &[VerifyRow]) -> Vec<VerifySummary> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows {
        let key = (r.method.clone(), r.net.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut out: Vec<VerifySummary> = keys
        .iter()
        .map(|(method, net)| {
            let group: Vec<&VerifyRow> = rows
                .iter()
                .filter(|r| &r.method == method && &r.net == net)
                .collect();
            let sum = |f: fn(&VerifyRow) -> f64| group.iter().map(|r| f(r)).sum::<f64>();
            let tokens = group.iter().map(|r| r.tokens).sum::<usize>();
            let steps = group.iter().map(|r| r.steps).sum::<usize>();
            let accepted = group.iter().map(|r| r.accepted).sum::<usize>();
            let rounds = group.iter().map(|r| r.rounds).sum::<u64>();
            let (client_mb, server_mb) = (sum(|r| r.client_mb), sum(|r| r.server_mb));
            let sim = sum(|r| r.sim_seconds);
            VerifySummary {
                method: method.clone(),
                net: net.clone(),
                prompts: group.len(),
                tokens,
                steps,
                mean_accepted: per(accepted as f64, steps),
                tokens_per_step: per(tokens as f64, steps),
                rounds,
                client_mb,
                server_mb,
                dealer_mb: sum(|r| r.dealer_mb),
                sim_seconds: sim,
                compute_seconds: sum(|r| r.compute_seconds),
                sim_seconds_per_token: per(sim, tokens),
                rounds_per_token: per(rounds as f64, tokens),
                mb_per_token: per(client_mb + server_mb, tokens),
                setup_rounds: group[0].setup_rounds,
                setup_mb: group[0].setup_mb,
                setup_sim_seconds: group[0].setup_sim_seconds,
                speedup_vs_standard: None,
            }
        })
        .collect();
    let standard: Vec<(String, f64)> = out
        .iter()
        .filter(|s| s.method == "standard")
        .map(|s| (s.net.clone(), s.sim_seconds_per_token))
        .collect();
    for s in &mut out {
        if let Some((_, base)) = standard.iter().find(|(net, _)| *net == s.net) {
            if s.sim_seconds_per_token > 0.0 {
                s.speedup_vs_standard = Some(base / s.sim_seconds_per_token);
            }
        }
    }
    out
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
    let tokenizer = pair.tokenizer();
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
    let methods: Vec<(&str, usize)> = match args.method {
        Method::Standard => vec![("standard", 0)],
        Method::Post => vec![("post", decode.draft_len)],
        Method::Both => vec![("standard", 0), ("post", decode.draft_len)],
    };
    let eos = pair.private.config().end_of_text();
    let bar = progress(links.len() * methods.len() * prepared.len(), "secure");
    let (mut rows, mut results) = (Vec::new(), Vec::new());
    for (net, link) in &links {
        let engine = EngineConfig {
            link: *link,
            seed: args.sim_seed,
            ..EngineConfig::default()
        };
        bar.set_message(format!("{net}: sharing the private model"));
        let mut verifier = SecureVerifier::start(&pair.private.model, &engine, decode.temperature)
            .context("cannot start the secure session")?;
        let setup = verifier.setup;
        for &(method, k) in &methods {
            let opts = decode.options(k, eos);
            let mut rng = ChaCha12Rng::seed_from_u64(decode.seed);
            for (id, ids) in &prepared {
                bar.set_message(format!("{net} {method} prompt {id}"));
                let before = verifier.totals()?;
                let decoded = decode_with(&pair.public.model, &mut verifier, ids, &opts, &mut rng)
                    .with_context(|| format!("prompt {id} ({method}, {net})"))?;
                let costs = verifier.totals()?.since(&before);
                let row = VerifyRow::new(
                    id_string(id),
                    method,
                    net,
                    args,
                    ids.len(),
                    &decoded,
                    &costs,
                    &setup,
                );
                if let Some(path) = &args.csv {
                    crate::report::append_csv(path, std::slice::from_ref(&row))?;
                }
                let text = match tokenizer {
                    Some(tok) => Some(tok.decode(&decoded.output_ids)?),
                    None => None,
                };
                if !decode.json {
                    bar.suspend(|| print_row(&row, text.as_deref(), &decoded.output_ids));
                }
                results.push(VerifyResult {
                    id: id.clone(),
                    method: method.to_string(),
                    net: net.clone(),
                    prompt_ids: ids.clone(),
                    output_ids: decoded.output_ids,
                    text,
                    costs: row.clone(),
                });
                rows.push(row);
                bar.inc(1);
            }
        }
        verifier.finish()?;
    }
    bar.finish_and_clear();
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
    let mut verifier = crate::deploy::client::connect(
        addr,
        dealer,
        &links,
        &engine,
        decode.temperature,
        public.config().vocab_size,
    )?;
    let setup = verifier.setup;
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
    let methods: Vec<(&str, usize)> = match args.method {
        Method::Standard => vec![("standard", 0)],
        Method::Post => vec![("post", decode.draft_len)],
        Method::Both => vec![("standard", 0), ("post", decode.draft_len)],
    };
    let (mut rows, mut results) = (Vec::new(), Vec::new());
    for &(method, k) in &methods {
        let opts = decode.options(k, verifier.end_of_text());
        let mut rng = ChaCha12Rng::seed_from_u64(decode.seed);
        for (id, ids) in &prepared {
            let before = verifier.totals()?;
            let start = std::time::Instant::now();
            let decoded = decode_with(&public.model, &mut verifier, ids, &opts, &mut rng)
                .with_context(|| format!("prompt {id} ({method}, over TCP)"))?;
            let mut costs = verifier.totals()?.since(&before);
            // Over a real link the measured wall time is the time.
            costs.sim_seconds = start.elapsed().as_secs_f64();
            let row = VerifyRow::new(
                id.clone(),
                method,
                "tcp",
                args,
                ids.len(),
                &decoded,
                &costs,
                &setup,
            );
            let text = match public.tokenizer.as_ref() {
                Some(tok) => Some(tok.decode(&decoded.output_ids)?),
                None => None,
            };
            if !decode.json {
                print_row(&row, text.as_deref(), &decoded.output_ids);
            }
            results.push(VerifyResult {
                id: Value::String(id.clone()),
                method: method.to_string(),
                net: "tcp".to_string(),
                prompt_ids: ids.clone(),
                output_ids: decoded.output_ids,
                text,
                costs: row.clone(),
            });
            rows.push(row);
        }
    }
    verifier.finish()?;
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

fn id_string(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_row(row: &VerifyRow, text: Option<&str>, ids: &[u32]) {
    let shown = text.map_or_else(|| format!("{ids:?}"), str::to_string);
    println!("[{} {} {}] {shown}", row.id, row.method, row.net);
    println!(
        "  tokens {} | secure forwards {} | accepted/step {:.2} | rounds {} | MB {:.2} up {:.2} down | sim {:.2} s ({:.3} s/token)",
        row.tokens,
        row.steps,
        per(row.accepted as f64, row.steps),
        row.rounds,
        row.client_mb,
        row.server_mb,
        row.sim_seconds,
        row.sim_seconds_per_token
    );
}

fn print_summary(summary: &[VerifySummary]) {
    println!(
        "\n{:<9} {:<6} {:>7} {:>7} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8}",
        "method",
        "net",
        "tokens",
        "forwards",
        "acc/step",
        "rounds/t",
        "MB/t",
        "dealer MB",
        "sim s",
        "sim s/t",
        "speedup"
    );
    for s in summary {
        println!(
            "{:<9} {:<6} {:>7} {:>7} {:>8.2} {:>9.1} {:>9.2} {:>10.1} {:>9.2} {:>9.3} {:>8}",
            s.method,
            s.net,
            s.tokens,
            s.steps,
            s.mean_accepted,
            s.rounds_per_token,
            s.mb_per_token,
            s.dealer_mb,
            s.sim_seconds,
            s.sim_seconds_per_token,
            s.speedup_vs_standard
                .map_or_else(|| "-".to_string(), |x| format!("{x:.2}x"))
        );
    }
    if let Some(s) = summary.first() {
        println!(
            "setup (once per session: sharing and preparing the weights): {} rounds, {:.1} MB, {:.2} s simulated",
            s.setup_rounds, s.setup_mb, s.setup_sim_seconds
        );
    }
}

/// GPT-2 small's shape with GPT-2's random initialisation (no download needed).
pub const RANDOM_GPT2_SMALL: &str = "random-gpt2-small";

fn forward_only(
    args: &VerifyArgs,
    registry: &Registry,
    links: &[(String, LinkModel)],
) -> Result<()> {
    let (name, model): (String, Gpt2) = match (&args.model, &args.models.pair, &args.models.private)
    {
        (Some(m), _, _) if m == RANDOM_GPT2_SMALL => {
            (m.clone(), Gpt2::random(&Config::gpt2_small(), 0)?)
        }
        (Some(m), _, _) => (m.clone(), load_model(m, registry)?.model),
        (None, Some(_), _) | (None, None, Some(_)) => {
            let pair = args.models.load(registry)?;
            (pair.private.name.clone(), pair.private.model)
        }
        _ => bail!("--forward-only needs --model MODEL, --pair NAME or --private MODEL"),
    };
    let window = model.config().n_positions;
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
            .map(|i| ((i * 7919 + 11) % model.config().vocab_size) as u32)
            .collect();
        let e = logit_error(&model, &EngineConfig::default(), &ids, len * 3 / 4)?;
        println!(
            "{name}: secure vs candle logits over {len} positions: max |error| {:.3e}, mean {:.3e} (largest |logit| {:.1})",
            e.max, e.mean, e.max_abs_logit
        );
    }
    let (rows, by_part) = forward_costs(&name, &model, links, context, &args.tokens)?;
    let labels: std::collections::BTreeMap<String, u64> =
        by_part.iter().map(|(l, c)| (l.clone(), c.rounds)).collect();
    if let Some(path) = &args.csv {
        crate::report::append_csv(path, &rows)?;
    }
    if args.decode.json {
        #[derive(Serialize)]
        struct ForwardReport<'a> {
            rows: &'a [crate::bench::secure::ForwardRow],
            rounds_per_label: &'a std::collections::BTreeMap<String, u64>,
        }
        let report = ForwardReport {
            rows: &rows,
            rounds_per_label: &labels,
        };
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{:<18} {:<6} {:>7} {:>6} {:>7} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "model",
        "net",
        "context",
        "tokens",
        "rounds",
        "client MB",
        "server MB",
        "dealer MB",
        "sim s",
        "compute s"
    );
    for r in &rows {
        println!(
            "{:<18} {:<6} {:>7} {:>6} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>9.3} {:>9.3}",
            r.model,
            r.link,
            r.context,
            r.new_tokens,
            r.rounds,
            r.client_mb,
            r.server_mb,
            r.dealer_mb,
            r.sim_seconds,
            r.compute_seconds
        );
    }
    println!(
        "\nthe first forward by part: rounds, MB sent by both parties, the busier party's compute s"
    );
    for (label, c) in by_part
        .iter()
        .filter(|(l, _)| !l.contains('/') || l.starts_with("block0/"))
    {
        println!(
            "  {label:<32} {:>5} {:>9.3} {:>9.3}",
            c.rounds,
            c.bytes_sent as f64 / 1e6,
            c.compute_time
        );
    }
    Ok(())
}
