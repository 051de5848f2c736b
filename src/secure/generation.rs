//! Secure generation over a set of prompts, as `post verify` runs it: standard decoding (one secure
//! forward per token) and POST decoding (K public drafts verified in one secure forward) through
//! one [`SecureVerifier`] and the plaintext decoding loop, on simulated links
//! ([`generate_simulated`]) or through a session with a server process ([`generate_connected`]);
//! one [`VerifyRow`] of costs per (prompt, method, net), their [`VerifySummary`] and the `--json`
//! report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::Serialize;
use serde_json::Value;

use super::{Costs, SecureVerifier};
use crate::decoding::{decode_with, DecodeOptions, Decoded};
use crate::model::{LanguageModel, Model, Tokenizer};
use crate::mpc::{EngineConfig, LinkModel};
use crate::progress::progress;

/// How every prompt is decoded.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The methods, each with its drafts per step: `("standard", 0)`, `("post", K)`.
    pub methods: Vec<(&'static str, usize)>,
    pub temperature: f64,
    pub max_new_tokens: usize,
    /// Seed of the client's sampling (drafts and the rule's uniforms), the same for every method.
    pub seed: u64,
    /// Do not stop at the private model's end-of-text token.
    pub ignore_eos: bool,
    /// Print each generation as it ends (not with `--json`).
    pub print_rows: bool,
    /// Append each row to this CSV file as it is made (simulated links only).
    pub csv: Option<PathBuf>,
}

impl Generation {
    /// Options of the decoding loop with `draft_len` drafts per step, stopping at `eos` unless
    /// told to ignore it.
    fn options(&self, draft_len: usize, eos: Option<u32>) -> DecodeOptions {
        DecodeOptions {
            draft_len,
            temperature: self.temperature,
            max_new_tokens: self.max_new_tokens,
            stop_token: if self.ignore_eos { None } else { eos },
        }
    }
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
    /// The row of one generation: `draft_len` drafts per step (0: standard), its costs `c` and its
    /// session's setup.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        method: &str,
        net: &str,
        draft_len: usize,
        temperature: f64,
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
            draft_len,
            temperature,
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

/// One summary per (method, net) of `rows`, in order of first appearance, with POST's speedup
/// over standard decoding on the same net.
pub fn summarise(rows: &[VerifyRow]) -> Vec<VerifySummary> {
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

/// Every prompt (id, token ids) by every method on each simulated link: one secure session per
/// link, whose setup shares the private model once.
pub fn generate_simulated(
    public: &Model,
    private: &Model,
    tokenizer: Option<&Tokenizer>,
    prepared: &[(Value, Vec<u32>)],
    links: &[(String, LinkModel)],
    sim_seed: Option<u64>,
    plan: &Generation,
) -> Result<(Vec<VerifyRow>, Vec<VerifyResult>)> {
    let methods = &plan.methods;
    let eos = private.end_of_text();
    let bar = progress(links.len() * methods.len() * prepared.len(), "secure");
    let (mut rows, mut results) = (Vec::new(), Vec::new());
    for (net, link) in links {
        let engine = EngineConfig {
            link: *link,
            seed: sim_seed,
            ..EngineConfig::default()
        };
        bar.set_message(format!("{net}: sharing the private model"));
        let mut verifier = SecureVerifier::start(private, &engine, plan.temperature)
            .context("cannot start the secure session")?;
        let setup = verifier.setup;
        for &(method, k) in methods {
            let opts = plan.options(k, eos);
            let mut rng = ChaCha12Rng::seed_from_u64(plan.seed);
            for (id, ids) in prepared {
                bar.set_message(format!("{net} {method} prompt {id}"));
                let before = verifier.totals()?;
                let decoded = decode_with(public, &mut verifier, ids, &opts, &mut rng)
                    .with_context(|| format!("prompt {id} ({method}, {net})"))?;
                let costs = verifier.totals()?.since(&before);
                let row = VerifyRow::new(
                    id_string(id),
                    method,
                    net,
                    k,
                    plan.temperature,
                    ids.len(),
                    &decoded,
                    &costs,
                    &setup,
                );
                if let Some(path) = &plan.csv {
                    crate::report::append_csv(path, std::slice::from_ref(&row))?;
                }
                let text = match tokenizer {
                    Some(tok) => Some(tok.decode(&decoded.output_ids)?),
                    None => None,
                };
                if plan.print_rows {
                    let shown = shown(tokenizer, ids, &decoded)?;
                    bar.suspend(|| print_row(&row, shown.as_deref(), &decoded.output_ids));
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
    Ok((rows, results))
}

/// Every prompt (id, token ids) by every method through one session with a server process; over
/// a real link the measured wall time is the time. Ends the session.
pub fn generate_connected(
    public: &Model,
    tokenizer: Option<&Tokenizer>,
    mut verifier: SecureVerifier,
    prepared: &[(String, Vec<u32>)],
    plan: &Generation,
) -> Result<(Vec<VerifyRow>, Vec<VerifyResult>)> {
    let setup = verifier.setup;
    let (mut rows, mut results) = (Vec::new(), Vec::new());
    for &(method, k) in &plan.methods {
        let opts = plan.options(k, verifier.end_of_text());
        let mut rng = ChaCha12Rng::seed_from_u64(plan.seed);
        for (id, ids) in prepared {
            let before = verifier.totals()?;
            let start = std::time::Instant::now();
            let decoded = decode_with(public, &mut verifier, ids, &opts, &mut rng)
                .with_context(|| format!("prompt {id} ({method}, over TCP)"))?;
            let mut costs = verifier.totals()?.since(&before);
            // Over a real link the measured wall time is the time.
            costs.sim_seconds = start.elapsed().as_secs_f64();
            let row = VerifyRow::new(
                id.clone(),
                method,
                "tcp",
                k,
                plan.temperature,
                ids.len(),
                &decoded,
                &costs,
                &setup,
            );
            let text = match tokenizer {
                Some(tok) => Some(tok.decode(&decoded.output_ids)?),
                None => None,
            };
            if plan.print_rows {
                print_row(
                    &row,
                    shown(tokenizer, ids, &decoded)?.as_deref(),
                    &decoded.output_ids,
                );
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
    Ok((rows, results))
}

/// A prompt id as a row names it (a string as it is, anything else as JSON).
pub fn id_string(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A generation shown after its prompt (see [`super::show`]), when there is a tokenizer.
fn shown(
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    decoded: &Decoded,
) -> Result<Option<String>> {
    tokenizer
        .map(|tok| {
            super::show::prompt_and_completion(
                tok,
                prompt,
                &decoded.output_ids,
                &decoded.from_draft,
                super::show::styled(),
            )
        })
        .transpose()
}

/// One generation, as `post verify` prints it: a header line, the prompt's end and the
/// completion, then its costs.
pub fn print_row(row: &VerifyRow, text: Option<&str>, ids: &[u32]) {
    static LEGEND: std::sync::Once = std::sync::Once::new();
    if text.is_some() && super::show::styled() {
        LEGEND.call_once(|| println!("{}\n", super::show::legend()));
    }
    let shown = text.map_or_else(|| format!("{ids:?}"), str::to_string);
    println!("[{} {} {}]", row.id, row.method, row.net);
    println!("{shown}");
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

/// The summary table, as `post verify` prints it.
pub fn print_summary(summary: &[VerifySummary]) {
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
